"""`carebox import PATH`: an mbox file or a Maildir into the store, in batches.

Malformed messages are kept raw and flagged, never dropped. Importing the same file twice adds
nothing the second time (messages are recognised by their bytes)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from carebox.domain.deadlines import Policy
from carebox.mail.mailbox import MailboxItem, iter_mailbox
from carebox.mail.parse import parse_message
from carebox.services.threads import ThreadInspector, rethread
from carebox.store.store import NewMessage, Store

IMPORT_FOLDER = "Imported"
BATCH = 500


@dataclass
class ImportReport:
    read: int = 0
    added: int = 0
    duplicates: int = 0
    malformed: int = 0
    threads: int = 0

    def line(self) -> str:
        return (
            f"read {self.read} messages: {self.added} added, {self.duplicates} already in the store, "
            f"{self.malformed} malformed (kept raw and flagged); {self.threads} conversations touched"
        )


def import_items(
    store: Store,
    items: Iterable[MailboxItem],
    policy: Policy,
    *,
    folder: str = IMPORT_FOLDER,
    progress: Callable[[int], None] | None = None,
    inspectors: Iterable[ThreadInspector] = (),
) -> ImportReport:
    report = ImportReport()
    batch: list[NewMessage] = []

    def flush() -> None:
        result = store.add_messages(folder, batch, role="import")
        report.added += len(result.added)
        report.duplicates += result.duplicates
        report.malformed += result.malformed
        batch.clear()
        if progress:
            progress(report.read)

    for item in items:
        report.read += 1
        batch.append(NewMessage(raw=item.raw, parsed=parse_message(item.raw), flags=item.flags, source=item.label))
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    report.threads = len(rethread(store, policy, inspectors))
    return report


def import_path(store: Store, path: Path, policy: Policy, **kwargs: object) -> ImportReport:
    """Raises mail.mailbox.MailboxError (one line) when the path is not a readable mailbox;
    nothing is written in that case."""
    items = iter_mailbox(path)
    first = next(items, None)  # surface "not a mailbox" before anything is written
    if first is None:
        return ImportReport()

    def chained() -> Iterable[MailboxItem]:
        yield first
        yield from items

    if "inspectors" not in kwargs:  # safety checks with defaults; callers with a config pass their own
        from carebox.services.safety import safety_inspector

        kwargs["inspectors"] = [safety_inspector(store)]
    return import_items(store, chained(), policy, **kwargs)  # type: ignore[arg-type]
