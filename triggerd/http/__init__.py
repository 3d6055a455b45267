"""HTTP: the server lifecycle, health endpoints, the admin API (and webhook routes)."""
