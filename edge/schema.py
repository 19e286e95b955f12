"""The state database's schema as an append-only list of migrations (plain SQL).

Each entry runs once, in order, inside a transaction; `PRAGMA user_version` records how many have run.
Never edit an entry that has shipped: append a new one.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the spine
    """
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- publish order
        id TEXT NOT NULL,                        -- CloudEvents id (UUIDv7), stable across retries
        source TEXT NOT NULL,
        sequence INTEGER NOT NULL,               -- per-source sequence
        type TEXT NOT NULL,
        class TEXT NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,                   -- the CloudEvents JSON object
        size INTEGER NOT NULL,
        created REAL NOT NULL
    );
    CREATE INDEX outbox_class ON outbox(class, seq);
    CREATE TABLE sequences (source TEXT PRIMARY KEY, last INTEGER NOT NULL);
    CREATE TABLE journal (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        source TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        time TEXT NOT NULL,
        created REAL NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE INDEX journal_created ON journal(created);
    CREATE TABLE retained (
        topic TEXT PRIMARY KEY,
        payload BLOB NOT NULL,
        version INTEGER NOT NULL,
        published INTEGER NOT NULL DEFAULT 0     -- version last acknowledged by the hub
    );
    CREATE TABLE stock (
        shelf TEXT NOT NULL,
        sku TEXT NOT NULL,
        count INTEGER NOT NULL,
        version INTEGER NOT NULL,
        origin TEXT NOT NULL,
        updated TEXT,
        PRIMARY KEY (shelf, sku)
    );
    CREATE TABLE devices (
        device TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        state TEXT NOT NULL,
        last_seen TEXT,
        error TEXT,
        changed TEXT NOT NULL
    );
    CREATE TABLE drops (class TEXT PRIMARY KEY, count INTEGER NOT NULL, bytes INTEGER NOT NULL);
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: rules (issue 6): staff alerts and durable webhook deliveries
    """
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,                     -- open | acknowledged | resolved | expired
        shelf TEXT,
        sku TEXT,
        device TEXT,
        message TEXT NOT NULL DEFAULT '',
        count INTEGER,
        threshold INTEGER,
        restock_qty INTEGER,
        days_of_cover REAL,
        escalate_after_s REAL,
        escalation_level INTEGER NOT NULL DEFAULT 0,
        opened_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        escalated_at TEXT,
        acknowledged_at TEXT,
        acknowledged_by TEXT,
        closed_at TEXT,
        close_reason TEXT
    );
    CREATE INDEX alerts_state ON alerts(state, opened_at);
    CREATE TABLE webhook_deliveries (
        id TEXT PRIMARY KEY,
        webhook TEXT NOT NULL,
        alert_id TEXT NOT NULL,
        transition TEXT NOT NULL,
        body TEXT NOT NULL,                      -- the exact JSON that is signed and POSTed
        state TEXT NOT NULL,                     -- pending | delivered | failed
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,                   -- UNIX seconds of the next attempt
        created TEXT NOT NULL,
        last_status INTEGER,
        last_error TEXT
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_at);
    """,
    # 3: the journal is the outbox's acknowledged tail. A row the hub acknowledged gets `acked` (its time)
    # instead of being copied to a second table; telemetry is deleted at once, ledger/alert/control rows
    # stay for the retention period. One insert per event instead of two.
    """
    ALTER TABLE outbox ADD COLUMN acked REAL;
    CREATE INDEX outbox_pending ON outbox(seq) WHERE acked IS NULL;
    CREATE INDEX outbox_acked ON outbox(acked) WHERE acked IS NOT NULL;
    DROP TABLE journal;
    """,
    # 4: acknowledgement by watermark. The uplink sends rows in `seq` order, so "acknowledged" is a prefix:
    # every row with seq <= kv['outbox.acked_through'] has been acknowledged (the journal), every row above
    # it is pending. One small write per commit instead of rewriting each acknowledged row and keeping two
    # partial indexes in step; rows acknowledged out of order above the watermark are re-sent after a crash
    # (a duplicate within the in-flight window, deduplicated by id). Telemetry keeps an index of its own for
    # the disk-budget trim.
    """
    INSERT INTO kv(key, value) VALUES ('outbox.acked_through', CAST(coalesce(
        (SELECT min(seq) - 1 FROM outbox WHERE acked IS NULL), (SELECT max(seq) FROM outbox), 0) AS TEXT))
        ON CONFLICT(key) DO UPDATE SET value = excluded.value;
    DROP INDEX outbox_pending;
    DROP INDEX outbox_acked;
    DROP INDEX outbox_class;
    ALTER TABLE outbox DROP COLUMN acked;
    CREATE INDEX outbox_telemetry ON outbox(seq) WHERE class = 'telemetry';
    CREATE VIEW outbox_pending AS SELECT * FROM outbox
        WHERE seq > (SELECT CAST(value AS INTEGER) FROM kv WHERE key = 'outbox.acked_through');
    """,
    # 5: weight shelves' tracked tares (zero tracking on empty lanes), so a restart does not lose them (issue 14)
    """
    CREATE TABLE shelf_tares (
        device TEXT NOT NULL,
        shelf TEXT NOT NULL,
        lane TEXT NOT NULL,
        tare_g REAL NOT NULL,                    -- the tracked tare
        config_tare_g REAL NOT NULL,             -- the manifest's tare it was tracked from
        updated TEXT NOT NULL,
        PRIMARY KEY (device, shelf, lane)
    );
    """,
    # 6: EPCIS capture outbox (issue 19, sinks/epcis_capture.py): one row per ObjectEvent, written with the event
    """
    CREATE TABLE epcis_capture (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- capture number (gap events name skipped ranges)
        event_id TEXT NOT NULL,                  -- the EPCIS eventID (CBV 2.0 event hash)
        body TEXT NOT NULL,                      -- the ObjectEvent JSON as it goes into eventList
        size INTEGER NOT NULL,
        state TEXT NOT NULL,                     -- pending | failed (captured rows are deleted)
        created REAL NOT NULL,                   -- UNIX seconds when queued
        last_error TEXT
    );
    CREATE INDEX epcis_capture_state ON epcis_capture(state, seq);
    """,
    # 7: tablet sign-in (issue 17 item 6, edge/api/pairing.py): tokens handed out by a device pairing, stored
    # as their SHA-256 (never the token itself); a revoked token keeps its row (`revoked` set) for the list
    """
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,                     -- public id (list, revoke)
        name TEXT NOT NULL,                      -- e.g. "tablet-front"
        roles TEXT NOT NULL,                     -- JSON list
        token_hash TEXT NOT NULL UNIQUE,         -- hex SHA-256 of the token
        created TEXT NOT NULL,
        created_by TEXT NOT NULL,                -- the admin token's name that made the pairing
        expires TEXT NOT NULL,
        revoked TEXT                             -- when revoked, else NULL
    );
    """,
    # 8: snoozed alerts (issue 17 item 3, rules/alerts.py): until when, by whom, and when the last snooze ended
    """
    ALTER TABLE alerts ADD COLUMN snoozed_until TEXT;
    ALTER TABLE alerts ADD COLUMN snoozed_by TEXT;
    ALTER TABLE alerts ADD COLUMN unsnoozed_at TEXT;
    """,
]
