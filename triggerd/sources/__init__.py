"""What produces firings: schedules, webhooks and events."""
