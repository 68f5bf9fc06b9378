"""The store's tables. Columns named ``*_enc`` hold sealed values (AES-GCM, see crypto.py);
everything else is clear and limited to ids, UIDs, flags, timestamps, deadlines, tag names and
keyed tokens. The schema itself is created and upgraded by migrations.py, never by create_all."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class Meta(SQLModel, table=True):
    __tablename__ = "meta"
    key: str = Field(primary_key=True)
    value: str


class Folder(SQLModel, table=True):
    __tablename__ = "folder"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    role: str = "other"  # inbox, sent, import, other
    uidvalidity: int | None = None
    uidnext: int | None = None
    highestmodseq: int | None = None
    last_sync: datetime | None = None


class Message(SQLModel, table=True):
    __tablename__ = "message"
    id: str = Field(primary_key=True)
    folder_id: int = Field(foreign_key="folder.id", index=True)
    uid: int | None = Field(default=None, index=True)
    source: str = ""  # opaque import label (mbox:17, maildir:cur/NAME)
    msgid_token: str = Field(default="", index=True)
    subject_token: str = ""
    counterpart_token: str = Field(default="", index=True)
    content_token: str = Field(default="", index=True)
    reply_prefix: bool = False
    date: datetime = Field(index=True)
    internal_date: datetime | None = None
    size: int = 0
    flags: str = ""  # space separated IMAP flags
    modseq: int | None = None
    outgoing: bool = False
    malformed: bool = False
    deleted_on_server: bool = False
    thread_id: str | None = Field(default=None, index=True)
    added: datetime
    raw_enc: bytes
    message_id_enc: bytes
    subject_enc: bytes
    from_name_enc: bytes
    from_addr_enc: bytes
    body_enc: bytes
    extra_enc: bytes  # JSON: to, cc, reply_to, auth_results, problem, references


class MessageParent(SQLModel, table=True):
    __tablename__ = "message_parent"
    message_id: str = Field(foreign_key="message.id", primary_key=True)
    position: int = Field(primary_key=True)
    token: str = Field(index=True)


class Attachment(SQLModel, table=True):
    __tablename__ = "attachment"
    id: str = Field(primary_key=True)
    message_id: str = Field(foreign_key="message.id", index=True)
    position: int = 0
    size: int = 0
    info_enc: bytes  # JSON: filename, content_type
    data_enc: bytes


class Thread(SQLModel, table=True):
    __tablename__ = "thread"
    id: str = Field(primary_key=True)
    state: str = Field(default="waiting", index=True)
    tag: str | None = None  # out-of-scope category or redirect:phone / redirect:visit
    tagged_at: datetime | None = None  # patient mail after this reopens the thread
    category: str | None = None  # for per-category response windows
    waiting_since: datetime | None = None
    due_at: datetime | None = Field(default=None, index=True)
    last_date: datetime
    message_count: int = 0
    unread: int = 0
    urgent: bool = False
    sender_status: str = ""  # verified, unknown, no_consent, warning (clinical safety)
    suggested_tag: str | None = None
    counterpart_token: str = Field(default="", index=True)
    patient_name_enc: bytes
    patient_addr_enc: bytes
    subject_enc: bytes


class Outbox(SQLModel, table=True):
    __tablename__ = "outbox"
    id: str = Field(primary_key=True)
    seq: int = Field(index=True)  # send order
    kind: str = "reply"  # reply, redirect_phone, redirect_visit, out_of_scope, new
    state: str = Field(default="queued", index=True)  # queued sending sent filed failed uncertain discarded
    thread_id: str | None = Field(default=None, index=True)
    reply_to_message: str | None = None  # message.id answered (gets \Answered)
    created: datetime
    updated: datetime
    attempts: int = 0
    next_attempt: datetime | None = None
    msgid_token: str = Field(default="", index=True)
    raw_enc: bytes
    envelope_enc: bytes  # JSON: mail_from, rcpt_to, message_id
    error_enc: bytes | None = None


class FlagChange(SQLModel, table=True):
    """A journal of flag changes made locally, pushed to the server on the next sync."""

    __tablename__ = "flag_change"
    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(foreign_key="message.id", index=True)
    add_flags: str = ""
    remove_flags: str = ""
    created: datetime
    done: bool = Field(default=False, index=True)


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit"
    seq: int = Field(primary_key=True)
    at: datetime
    action: str
    ref: str = ""  # opaque ids only
    mac: str


class Secret(SQLModel, table=True):
    __tablename__ = "secret"
    name: str = Field(primary_key=True)
    value_enc: bytes


class Patient(SQLModel, table=True):
    __tablename__ = "patient"
    id: str = Field(primary_key=True)
    data_enc: bytes  # JSON: name, emails, phone, consent_date, last_visit, next_visit


class PatientEmail(SQLModel, table=True):
    __tablename__ = "patient_email"
    token: str = Field(primary_key=True)  # keyed token of the address
    patient_id: str = Field(foreign_key="patient.id", index=True)
