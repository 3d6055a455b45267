"""The PostgreSQL schema, as an append-only list of migrations (the row of triggerd_schema counts them).

Never edit a migration that has shipped: add a new one. The columns are those of the SQLite
schema (store/migrations.py), so that store/rows.py reads both: timestamps are RFC 3339 text
in the "C" collation, where text order is time order, and JSON is text, which keeps an
object's key order as the run wrote it.
"""

from __future__ import annotations

from triggerd.store.migrations import FLOW_CONTROL_RUNS

# pg_advisory_lock key under which daemons sharing a database migrate one at a time ("trgd").
ADVISORY_LOCK = 0x74726764

# The upsert of the counting triggers: add the deltas (trigger_id, r, p) of `{}` to this connection's rows.
_ADD_LOAD = (
    "INSERT INTO trigger_load (trigger_id, backend, running, pending) "
    "SELECT trigger_id, pg_backend_pid(), sum(r), sum(p) FROM ({}) AS delta GROUP BY trigger_id "
    "HAVING sum(r) <> 0 OR sum(p) <> 0 "
    "ON CONFLICT (trigger_id, backend) DO UPDATE "
    "SET running = trigger_load.running + EXCLUDED.running, pending = trigger_load.pending + EXCLUDED.pending"
)

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE runs (
            id TEXT COLLATE "C" PRIMARY KEY,
            trigger_id TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT,
            input TEXT NOT NULL,
            output TEXT,
            error TEXT,
            usage TEXT,
            source TEXT NOT NULL,
            nominal_time TEXT COLLATE "C",
            idempotency_key TEXT,
            replay_of TEXT COLLATE "C",
            chain_depth INTEGER NOT NULL DEFAULT 0,
            dead_letter BOOLEAN NOT NULL DEFAULT false,
            next_attempt_at TEXT COLLATE "C",
            created_at TEXT COLLATE "C" NOT NULL,
            started_at TEXT COLLATE "C",
            finished_at TEXT COLLATE "C"
        )""",
        "CREATE INDEX runs_by_trigger ON runs (trigger_id, id)",
        "CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('pending', 'running', 'cancelled')",
        "CREATE INDEX runs_dead_letters ON runs (id) WHERE dead_letter",
        "CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL",
        """CREATE TABLE attempts (
            run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            started_at TEXT COLLATE "C" NOT NULL,
            finished_at TEXT COLLATE "C",
            status TEXT NOT NULL,
            error TEXT,
            pgid INTEGER,
            pgid_start_ticks BIGINT,
            boot_id TEXT,
            PRIMARY KEY (run_id, number)
        )""",
        # An idempotency key names its run until expires_at. The primary key is what makes two
        # daemons receiving the same delivery create one run: the second insert waits for the
        # first's commit, then finds the key taken (SPEC 10).
        """CREATE TABLE dedupe (
            trigger_id TEXT NOT NULL,
            key TEXT NOT NULL,
            run_id TEXT COLLATE "C" NOT NULL,
            noted_at TEXT COLLATE "C" NOT NULL,
            expires_at TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (trigger_id, key)
        )""",
        "CREATE INDEX dedupe_expiry ON dedupe (expires_at)",
        # One row per schedule slot ever fired or recorded missed: the primary key makes a slot
        # fire once across restarts, reloads, clock steps and daemons (SPEC 3.1, 10).
        """CREATE TABLE schedule_slots (
            trigger_id TEXT NOT NULL,
            nominal TEXT COLLATE "C" NOT NULL,
            run_id TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (trigger_id, nominal)
        )""",
        """CREATE TABLE event_windows (
            trigger_id TEXT NOT NULL,
            group_key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            events TEXT NOT NULL,
            PRIMARY KEY (trigger_id, group_key)
        )""",
        "CREATE TABLE probe (id INTEGER PRIMARY KEY CHECK (id = 1), at TIMESTAMPTZ NOT NULL)",
    ],
    [
        # Broker sources (SPEC 5.4): the event ids each source delivered, until their dedupe
        # window ends (a redelivery fires nothing, whichever daemon receives it); poison
        # messages; the position of a source whose broker keeps none (SSE's Last-Event-ID).
        """CREATE TABLE source_events (
            source_id TEXT NOT NULL,
            event_id TEXT NOT NULL,
            expires_at TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (source_id, event_id)
        )""",
        "CREATE INDEX source_events_expiry ON source_events (expires_at)",
        """CREATE TABLE dead_messages (
            id TEXT PRIMARY KEY,
            source_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            payload BYTEA NOT NULL,
            headers TEXT,
            broker_id TEXT NOT NULL,
            received_at TEXT COLLATE "C" NOT NULL
        )""",
        "CREATE INDEX dead_messages_by_time ON dead_messages (received_at)",
        """CREATE TABLE source_cursors (
            source_id TEXT PRIMARY KEY,
            cursor TEXT NOT NULL,
            saved_at TEXT COLLATE "C" NOT NULL
        )""",
    ],
    [
        # Claims and leases (SPEC 10), as SQLite's migration 7: the daemon running a run and until
        # when its lease holds; a cancel asked by another daemon. A running run left from before
        # has no lease: the first claim takes it over.
        'ALTER TABLE runs ADD COLUMN claimed_by TEXT, ADD COLUMN lease_until TEXT COLLATE "C", '
        "ADD COLUMN cancel_requested TEXT",
        "CREATE INDEX runs_queue ON runs (id) WHERE status = 'pending'",
        "CREATE INDEX runs_running ON runs (trigger_id, agent_id, id) WHERE status = 'running'",
        "CREATE INDEX runs_backoff ON runs (next_attempt_at) WHERE status = 'pending' AND next_attempt_at IS NOT NULL",
        # Each trigger's runs in flight, kept by triggers on runs so that admission and the poll's
        # queue depth read a few rows instead of counting a queue. One row per trigger *and writer
        # connection* (backend pid), summed when read: each daemon's writer adds its deltas to rows
        # no other daemon writes, so the counts are never a row lock that the daemons' batches
        # contend for or deadlock on (store/postgres_claims.py). Rows of connections that are gone
        # are folded into the pruner's own (prune).
        """CREATE TABLE trigger_load (
            trigger_id TEXT NOT NULL,
            backend INTEGER NOT NULL,
            running BIGINT NOT NULL,
            pending BIGINT NOT NULL,
            PRIMARY KEY (trigger_id, backend)
        )""",
        # Statement-level triggers with transition tables: one upsert per trigger id a statement
        # touches (a batch of 500 new runs of one trigger costs one), not one per row.
        f"""CREATE FUNCTION triggerd_load_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            {
            _ADD_LOAD.format(
                "SELECT trigger_id, (status = 'running')::int AS r, (status = 'pending')::int AS p FROM new_rows"
            )
        };
            RETURN NULL;
        END
        $$""",
        f"""CREATE FUNCTION triggerd_load_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            {
            _ADD_LOAD.format(
                "SELECT trigger_id, -(status = 'running')::int AS r, -(status = 'pending')::int AS p FROM old_rows"
            )
        };
            RETURN NULL;
        END
        $$""",
        f"""CREATE FUNCTION triggerd_load_updated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            {
            _ADD_LOAD.format(
                "SELECT n.trigger_id, (n.status = 'running')::int - (o.status = 'running')::int AS r, "
                "(n.status = 'pending')::int - (o.status = 'pending')::int AS p "
                "FROM old_rows o JOIN new_rows n ON n.id = o.id WHERE n.status IS DISTINCT FROM o.status"
            )
        };
            RETURN NULL;
        END
        $$""",
        "CREATE TRIGGER runs_load_inserted AFTER INSERT ON runs REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION triggerd_load_inserted()",
        "CREATE TRIGGER runs_load_deleted AFTER DELETE ON runs REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION triggerd_load_deleted()",
        "CREATE TRIGGER runs_load_updated AFTER UPDATE ON runs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION triggerd_load_updated()",
        "INSERT INTO trigger_load (trigger_id, backend, running, pending) SELECT trigger_id, 0, "
        "count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'pending') "
        "FROM runs WHERE status IN ('pending', 'running') GROUP BY trigger_id",
        """CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            started_at TEXT COLLATE "C" NOT NULL,
            fingerprint TEXT NOT NULL,
            last_seen TEXT COLLATE "C" NOT NULL,
            pid INTEGER,
            pid_start_ticks BIGINT,
            boot_id TEXT
        )""",
    ],
    [
        # The counting windows' outbox (SPEC 9, 10), as in store/migrations.py.
        "ALTER TABLE event_windows ADD COLUMN fired TEXT",
    ],
    [
        # An anthropic agent's tool calls, per attempt (SPEC 5.1), as in store/migrations.py.
        "ALTER TABLE attempts ADD COLUMN steps TEXT",
    ],
    [
        # Flow control (SPEC 12), as in store/migrations.py.
        *FLOW_CONTROL_RUNS,
        """CREATE TABLE paused_triggers (
            trigger_id TEXT PRIMARY KEY,
            paused_at TEXT COLLATE "C" NOT NULL
        )""",
    ],
]
