"""The SQLite schema, as an append-only list of migrations (PRAGMA user_version counts them).

Never edit a migration that has shipped: add a new one.
"""

from __future__ import annotations

# Flow control's columns and indexes on runs (SPEC 12), in SQL both stores take alike
# (pg_migrations.py uses them too): each run's concurrency, throttle and debounce group (the
# key's value as JSON, NULL where the trigger has no such control), and the indexes the claim's
# throttle window, a debounce's supersede and a budget's spend read by.
FLOW_CONTROL_RUNS = [
    "ALTER TABLE runs ADD COLUMN concurrency_key TEXT",
    "ALTER TABLE runs ADD COLUMN throttle_key TEXT",
    "ALTER TABLE runs ADD COLUMN debounce_key TEXT",
    "CREATE INDEX runs_debounce ON runs (trigger_id, debounce_key) "
    "WHERE status = 'pending' AND debounce_key IS NOT NULL",
    "CREATE INDEX runs_concurrency ON runs (trigger_id, concurrency_key) "
    "WHERE status IN ('pending', 'running') AND concurrency_key IS NOT NULL",
    "CREATE INDEX runs_started ON runs (trigger_id, started_at) WHERE started_at IS NOT NULL",
    "CREATE INDEX runs_trigger_created ON runs (trigger_id, created_at)",
    "CREATE INDEX runs_agent_created ON runs (agent_id, created_at)",
]

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            trigger_id TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT,
            input TEXT NOT NULL,
            output TEXT,
            error TEXT,
            usage TEXT,
            source TEXT NOT NULL,
            nominal_time TEXT,
            idempotency_key TEXT,
            replay_of TEXT,
            chain_depth INTEGER NOT NULL DEFAULT 0,
            dead_letter INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT
        )""",
        "CREATE INDEX runs_by_trigger ON runs (trigger_id, id)",
        "CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('pending', 'running', 'cancelled')",
        "CREATE INDEX runs_dead_letters ON runs (id) WHERE dead_letter = 1",
        "CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL",
        """CREATE TABLE attempts (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,
            error TEXT,
            PRIMARY KEY (run_id, number)
        ) WITHOUT ROWID""",
        """CREATE TABLE dedupe (
            trigger_id TEXT NOT NULL,
            key TEXT NOT NULL,
            run_id TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            PRIMARY KEY (trigger_id, key)
        ) WITHOUT ROWID""",
    ],
    [
        # One row per schedule slot ever fired or recorded missed: (trigger, nominal instant) is
        # unique, so a restart, a reload or a clock step can never run a slot twice (SPEC 3.1).
        """CREATE TABLE schedule_slots (
            trigger_id TEXT NOT NULL,
            nominal TEXT NOT NULL,
            run_id TEXT NOT NULL,
            PRIMARY KEY (trigger_id, nominal)
        ) WITHOUT ROWID""",
    ],
    [
        # Counting windows of event triggers (SPEC 3.4): the events counted so far per group,
        # kept with the definition's fingerprint so that a changed trigger starts afresh.
        """CREATE TABLE event_windows (
            trigger_id TEXT NOT NULL,
            group_key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            events TEXT NOT NULL,
            PRIMARY KEY (trigger_id, group_key)
        ) WITHOUT ROWID""",
    ],
    [
        # One row that /readyz rewrites after a failed commit, to learn whether writes work again.
        "CREATE TABLE probe (id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT NOT NULL)",
    ],
    [
        # A command attempt's process group, its leader's start time and the boot id (SPEC 5.2):
        # a daemon restarted after a crash ends the group if it still runs, before the retry.
        "ALTER TABLE attempts ADD COLUMN pgid INTEGER",
        "ALTER TABLE attempts ADD COLUMN pgid_start_ticks INTEGER",
        "ALTER TABLE attempts ADD COLUMN boot_id TEXT",
    ],
    [
        # Broker sources (SPEC 5.4): the event ids each source delivered, until their dedupe
        # window ends (a redelivery fires nothing); poison messages; the position of a source
        # whose broker keeps none (SSE's Last-Event-ID).
        """CREATE TABLE source_events (
            source_id TEXT NOT NULL,
            event_id TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            PRIMARY KEY (source_id, event_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE dead_messages (
            id TEXT PRIMARY KEY,
            source_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            payload BLOB NOT NULL,
            headers TEXT,
            broker_id TEXT NOT NULL,
            received_at TEXT NOT NULL
        )""",
        "CREATE INDEX dead_messages_by_time ON dead_messages (received_at)",
        """CREATE TABLE source_cursors (
            source_id TEXT PRIMARY KEY,
            cursor TEXT NOT NULL,
            saved_at TEXT NOT NULL
        )""",
    ],
    [
        # Claims and leases (SPEC 10): the daemon running a run and until when its lease holds; a
        # cancel asked by another daemon. A running run left from before has no lease: the first
        # claim takes it over, as a restart resumed it before.
        "ALTER TABLE runs ADD COLUMN claimed_by TEXT",
        "ALTER TABLE runs ADD COLUMN lease_until TEXT",
        "ALTER TABLE runs ADD COLUMN cancel_requested TEXT",
        "CREATE INDEX runs_queue ON runs (id) WHERE status = 'pending'",
        "CREATE INDEX runs_running ON runs (trigger_id, agent_id, id) WHERE status = 'running'",
        "CREATE INDEX runs_backoff ON runs (next_attempt_at) WHERE status = 'pending' AND next_attempt_at IS NOT NULL",
        # Each trigger's runs in flight, kept by triggers on runs, so that overlap admission reads
        # one row per firing instead of counting a queue that may hold millions.
        """CREATE TABLE trigger_load (
            trigger_id TEXT PRIMARY KEY,
            running INTEGER NOT NULL,
            pending INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "INSERT INTO trigger_load (trigger_id, running, pending) SELECT trigger_id, sum(status = 'running'), "
        "sum(status = 'pending') FROM runs WHERE status IN ('pending', 'running') GROUP BY trigger_id",
        """CREATE TRIGGER runs_load_insert AFTER INSERT ON runs WHEN NEW.status IN ('pending', 'running')
        BEGIN
            INSERT INTO trigger_load (trigger_id, running, pending)
            VALUES (NEW.trigger_id, NEW.status = 'running', NEW.status = 'pending')
            ON CONFLICT (trigger_id) DO UPDATE
            SET running = running + excluded.running, pending = pending + excluded.pending;
        END""",
        """CREATE TRIGGER runs_load_update AFTER UPDATE OF status ON runs
        WHEN OLD.status IS NOT NEW.status
            AND (OLD.status IN ('pending', 'running') OR NEW.status IN ('pending', 'running'))
        BEGIN
            INSERT INTO trigger_load (trigger_id, running, pending)
            VALUES (
                NEW.trigger_id,
                (NEW.status = 'running') - (OLD.status = 'running'),
                (NEW.status = 'pending') - (OLD.status = 'pending')
            )
            ON CONFLICT (trigger_id) DO UPDATE
            SET running = running + excluded.running, pending = pending + excluded.pending;
        END""",
        """CREATE TRIGGER runs_load_delete AFTER DELETE ON runs WHEN OLD.status IN ('pending', 'running')
        BEGIN
            UPDATE trigger_load SET running = running - (OLD.status = 'running'),
                pending = pending - (OLD.status = 'pending')
            WHERE trigger_id = OLD.trigger_id;
        END""",
        """CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            started_at TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            pid INTEGER,
            pid_start_ticks INTEGER,
            boot_id TEXT
        ) WITHOUT ROWID""",
    ],
    [
        # The counting windows' outbox (SPEC 9, 10): a window's crossings, committed with the count
        # that made them, until their runs are made (store/abc.py count_event, clear_crossing).
        "ALTER TABLE event_windows ADD COLUMN fired TEXT",
    ],
    [
        # An anthropic agent's tool calls, per attempt (SPEC 5.1): a JSON list of steps.
        "ALTER TABLE attempts ADD COLUMN steps TEXT",
    ],
    [
        # Flow control (SPEC 12): the groups and indexes above, and paused triggers.
        *FLOW_CONTROL_RUNS,
        """CREATE TABLE paused_triggers (
            trigger_id TEXT PRIMARY KEY,
            paused_at TEXT NOT NULL
        ) WITHOUT ROWID""",
    ],
]
