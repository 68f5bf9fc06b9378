"""Schema versions. Each migration moves the database one version up inside one transaction;
an old database is upgraded, never dropped. Version 1 is frozen text: later changes are new
entries in MIGRATIONS (ALTER TABLE ...), never edits to an earlier one."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # LATEST is read before the ORM is imported (store.peek)
    from sqlalchemy import Connection

V1 = [
    """CREATE TABLE audit (
    seq INTEGER NOT NULL,
    at DATETIME NOT NULL,
    action VARCHAR NOT NULL,
    ref VARCHAR NOT NULL,
    mac VARCHAR NOT NULL,
    PRIMARY KEY (seq)
)""",
    """CREATE TABLE folder (
    id INTEGER NOT NULL,
    name VARCHAR NOT NULL,
    role VARCHAR NOT NULL,
    uidvalidity INTEGER,
    uidnext INTEGER,
    highestmodseq INTEGER,
    last_sync DATETIME,
    PRIMARY KEY (id),
    UNIQUE (name)
)""",
    """CREATE TABLE meta (
    "key" VARCHAR NOT NULL,
    value VARCHAR NOT NULL,
    PRIMARY KEY ("key")
)""",
    """CREATE TABLE outbox (
    id VARCHAR NOT NULL,
    seq INTEGER NOT NULL,
    kind VARCHAR NOT NULL,
    state VARCHAR NOT NULL,
    thread_id VARCHAR,
    reply_to_message VARCHAR,
    created DATETIME NOT NULL,
    updated DATETIME NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt DATETIME,
    msgid_token VARCHAR NOT NULL,
    raw_enc BLOB NOT NULL,
    envelope_enc BLOB NOT NULL,
    error_enc BLOB,
    PRIMARY KEY (id)
)""",
    """CREATE INDEX ix_outbox_msgid_token ON outbox (msgid_token)""",
    """CREATE INDEX ix_outbox_seq ON outbox (seq)""",
    """CREATE INDEX ix_outbox_state ON outbox (state)""",
    """CREATE INDEX ix_outbox_thread_id ON outbox (thread_id)""",
    """CREATE TABLE patient (
    id VARCHAR NOT NULL,
    data_enc BLOB NOT NULL,
    PRIMARY KEY (id)
)""",
    """CREATE TABLE secret (
    name VARCHAR NOT NULL,
    value_enc BLOB NOT NULL,
    PRIMARY KEY (name)
)""",
    """CREATE TABLE thread (
    id VARCHAR NOT NULL,
    state VARCHAR NOT NULL,
    tag VARCHAR,
    tagged_at DATETIME,
    category VARCHAR,
    waiting_since DATETIME,
    due_at DATETIME,
    last_date DATETIME NOT NULL,
    message_count INTEGER NOT NULL,
    unread INTEGER NOT NULL,
    urgent BOOLEAN NOT NULL,
    sender_status VARCHAR NOT NULL,
    suggested_tag VARCHAR,
    counterpart_token VARCHAR NOT NULL,
    patient_name_enc BLOB NOT NULL,
    patient_addr_enc BLOB NOT NULL,
    subject_enc BLOB NOT NULL,
    PRIMARY KEY (id)
)""",
    """CREATE INDEX ix_thread_counterpart_token ON thread (counterpart_token)""",
    """CREATE INDEX ix_thread_due_at ON thread (due_at)""",
    """CREATE INDEX ix_thread_state ON thread (state)""",
    """CREATE TABLE message (
    id VARCHAR NOT NULL,
    folder_id INTEGER NOT NULL,
    uid INTEGER,
    source VARCHAR NOT NULL,
    msgid_token VARCHAR NOT NULL,
    subject_token VARCHAR NOT NULL,
    counterpart_token VARCHAR NOT NULL,
    content_token VARCHAR NOT NULL,
    reply_prefix BOOLEAN NOT NULL,
    date DATETIME NOT NULL,
    internal_date DATETIME,
    size INTEGER NOT NULL,
    flags VARCHAR NOT NULL,
    modseq INTEGER,
    outgoing BOOLEAN NOT NULL,
    malformed BOOLEAN NOT NULL,
    deleted_on_server BOOLEAN NOT NULL,
    thread_id VARCHAR,
    added DATETIME NOT NULL,
    raw_enc BLOB NOT NULL,
    message_id_enc BLOB NOT NULL,
    subject_enc BLOB NOT NULL,
    from_name_enc BLOB NOT NULL,
    from_addr_enc BLOB NOT NULL,
    body_enc BLOB NOT NULL,
    extra_enc BLOB NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(folder_id) REFERENCES folder (id)
)""",
    """CREATE INDEX ix_message_content_token ON message (content_token)""",
    """CREATE INDEX ix_message_counterpart_token ON message (counterpart_token)""",
    """CREATE INDEX ix_message_date ON message (date)""",
    """CREATE INDEX ix_message_folder_id ON message (folder_id)""",
    """CREATE INDEX ix_message_msgid_token ON message (msgid_token)""",
    """CREATE INDEX ix_message_thread_id ON message (thread_id)""",
    """CREATE INDEX ix_message_uid ON message (uid)""",
    """CREATE TABLE patient_email (
    token VARCHAR NOT NULL,
    patient_id VARCHAR NOT NULL,
    PRIMARY KEY (token),
    FOREIGN KEY(patient_id) REFERENCES patient (id)
)""",
    """CREATE INDEX ix_patient_email_patient_id ON patient_email (patient_id)""",
    """CREATE TABLE attachment (
    id VARCHAR NOT NULL,
    message_id VARCHAR NOT NULL,
    position INTEGER NOT NULL,
    size INTEGER NOT NULL,
    info_enc BLOB NOT NULL,
    data_enc BLOB NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(message_id) REFERENCES message (id)
)""",
    """CREATE INDEX ix_attachment_message_id ON attachment (message_id)""",
    """CREATE TABLE flag_change (
    id INTEGER NOT NULL,
    message_id VARCHAR NOT NULL,
    add_flags VARCHAR NOT NULL,
    remove_flags VARCHAR NOT NULL,
    created DATETIME NOT NULL,
    done BOOLEAN NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(message_id) REFERENCES message (id)
)""",
    """CREATE INDEX ix_flag_change_done ON flag_change (done)""",
    """CREATE INDEX ix_flag_change_message_id ON flag_change (message_id)""",
    """CREATE TABLE message_parent (
    message_id VARCHAR NOT NULL,
    position INTEGER NOT NULL,
    token VARCHAR NOT NULL,
    PRIMARY KEY (message_id, position),
    FOREIGN KEY(message_id) REFERENCES message (id)
)""",
    """CREATE INDEX ix_message_parent_token ON message_parent (token)""",
    """CREATE UNIQUE INDEX ux_message_folder_uid ON message (folder_id, uid) WHERE uid IS NOT NULL""",
]

# MIGRATIONS[i] brings the schema from version i to i + 1.
MIGRATIONS: list[list[str]] = [V1]

LATEST = len(MIGRATIONS)


class SchemaTooNew(Exception):
    pass


def current_version(conn: Connection) -> int:
    from sqlalchemy import text

    has_meta = conn.execute(text("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'")).first()
    if not has_meta:
        return 0
    row = conn.execute(text("SELECT value FROM meta WHERE key='schema_version'")).first()
    return int(row[0]) if row else 0


def migrate(conn: Connection) -> tuple[int, int]:
    """Upgrade to LATEST. Returns (from_version, to_version). The caller commits."""
    from sqlalchemy import text

    start = current_version(conn)
    if start > LATEST:
        raise SchemaTooNew(
            f"this store was written by a newer carebox (schema {start}, this one knows {LATEST}): upgrade carebox"
        )
    for version in range(start, LATEST):
        for statement in MIGRATIONS[version]:
            conn.execute(text(statement))
        conn.execute(
            text(
                "INSERT INTO meta (key, value) VALUES ('schema_version', :v) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
            ),
            {"v": str(version + 1)},
        )
    return start, LATEST
