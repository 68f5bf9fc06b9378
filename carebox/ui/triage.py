"""What the triage keys do, for one conversation or a selection: reply, redirect to phone or
visit (into the composer, or sent at once with an undo window), out of scope with a category,
accepting a suggested tag, and the bulk path (preview, confirm, progress, summary).

Every change pushes an undo entry; ``u`` takes the last one back (a queued reply is withdrawn
from the outbox while it has not been sent)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text

from carebox.domain.sanitize import clean_line
from carebox.services import inbox
from carebox.ui import drafts, ops
from carebox.ui.render import quote, safe_line
from carebox.ui.screens.bulk import BulkOutcome, BulkPreviewScreen, ProgressScreen
from carebox.ui.screens.compose import ComposeScreen, ComposeSpec
from carebox.ui.screens.dialogs import CategoryScreen, ConfirmScreen, SummaryScreen

if TYPE_CHECKING:
    from carebox.ui.app import CareboxApp

KIND_LABEL = {
    "reply": "Reply",
    "redirect_phone": "Phone redirect",
    "redirect_visit": "Visit redirect",
    "out_of_scope": "Out-of-scope reply",
}


@dataclass
class UndoEntry:
    label: str  # no patient data: "reply to 1 conversation"
    run: Callable[[], str]  # does the undo, returns a line for the user


class Triage:
    def __init__(self, app: CareboxApp) -> None:
        self.app = app

    @property
    def session(self) -> Any:
        return self.app.session

    def _fail(self, exc: BaseException) -> None:
        self.app.notify(ops.message(exc), severity="error", markup=False, timeout=8)

    def _row(self, thread_id: str) -> Any:
        rows = ops.thread_rows(self.session, [thread_id])
        return rows[0] if rows else None

    # --- reply --------------------------------------------------------------------------------

    def reply(self, ids: Sequence[str]) -> None:
        if len(ids) > 1:
            self.app.push_screen(ComposeScreen(ComposeSpec(list(ids), "reply")))
            return
        tid = ids[0]
        row = self._row(tid)
        if row is None:
            return
        draft = drafts.load(self.session, tid)
        consent = ops.template_text(self.session, "consent")
        if draft is not None:
            initial, note = draft, "Draft restored."
        elif row.sender_status == "no_consent" and consent:
            try:
                initial = ops.render_template(self.session, "consent", tid)
            except Exception as exc:
                self._fail(exc)
                return
            note = "No email consent on file for this patient: the consent template is offered instead of an answer."
        else:
            messages = inbox.thread(self.session.store, tid)
            last = next((m for m in reversed(messages) if not m.outgoing), None)
            initial = "\n\n" + quote(last.body, last.sender.name or last.sender.addr, last.date) if last else ""
            note = ""
        self.app.push_screen(ComposeScreen(self._single_spec(row, "reply", initial, note=note)))

    def _single_spec(self, row: Any, kind: str, initial: str, *, tag: str | None = None, note: str = "") -> ComposeSpec:
        to = safe_line(row.patient_name or row.patient_addr, 60)
        if row.patient_name and row.patient_addr:
            to.append(" <")
            to.append_text(safe_line(row.patient_addr, 80))
            to.append(">")
        return ComposeSpec([row.id], kind, initial, to=to, subject=safe_line(row.subject, 120), tag=tag, note=note)

    def address_question(self, thread_id: str) -> str | None:
        """The confirmation to ask before replying when the address is not a verified one (or
        the sender asks for replies elsewhere); None when the reply goes to a verified address."""
        try:
            safety = ops.thread_safety(self.session, thread_id, self.app.clock())
        except Exception:
            return None
        reply = getattr(safety, "reply", None)
        if reply is None:
            return None
        chosen = ops.recipient(self.session, thread_id, self.app.clock()) or reply.address
        return reply.confirmation(chosen)

    def send_single(
        self, spec: ComposeSpec, body: str, *, composer: ComposeScreen | None = None, confirmed: bool = False
    ) -> bool:
        """Queue one reply. On failure the composer stays open with the text (nothing lost).
        A reply to an address that is not verified asks first, naming the address."""
        tid = spec.thread_ids[0]
        if not confirmed:
            question = self.address_question(tid)
            if question:

                def answered(yes: bool | None) -> None:
                    if yes:
                        self.send_single(spec, body, composer=composer, confirmed=True)

                self.app.push_screen(ConfirmScreen(clean_line(question), "n goes back without sending."), answered)
                return False
        now = self.app.clock()
        try:
            if spec.kind == "out_of_scope":
                prev = self._tags([tid])
                entry = ops.mark_out_of_scope(self.session, tid, spec.tag or "", now=now, body=body)
            else:
                prev = {}
                entry = ops.queue_reply(self.session, tid, body, kind=spec.kind, now=now)
        except Exception as exc:
            self._fail(exc)
            return False
        drafts.clear(self.session, tid)
        label = KIND_LABEL.get(spec.kind, "Reply")
        self.push_undo(self._undo_replies(label, {tid: entry}, prev))
        self.app.notify(f"{label} queued; it goes out in {self.app.undo_seconds:g} s. u undoes it.", markup=False)
        self.app.schedule_flush()
        self.app.after_change(close_to_inbox=True)
        return True

    # --- redirects ----------------------------------------------------------------------------

    def redirect(self, kind: str, ids: Sequence[str]) -> None:
        """Fill the phone/visit template into the composer for a last look."""
        kind_id = f"redirect_{kind}"
        if len(ids) > 1:
            template = ops.template_text(self.session, kind)
            if template is None:
                self.app.notify(f"no template named {kind!r} in [templates]", severity="error", markup=False)
                return
            self.app.push_screen(ComposeScreen(ComposeSpec(list(ids), kind_id, template)))
            return
        row = self._row(ids[0])
        if row is None:
            return
        try:
            body = ops.render_template(self.session, kind, row.id)
        except Exception as exc:
            self._fail(exc)
            return
        self.app.push_screen(ComposeScreen(self._single_spec(row, kind_id, body)))

    def send_redirect(self, kind: str, ids: Sequence[str]) -> None:
        """Send the redirect at once (one conversation: undo window; several: preview first)."""
        kind_id = f"redirect_{kind}"
        if len(ids) > 1:
            template = ops.template_text(self.session, kind)
            if template is None:
                self.app.notify(f"no template named {kind!r} in [templates]", severity="error", markup=False)
                return
            self.bulk_preview(ComposeSpec(list(ids), kind_id, template), template)
            return
        tid = ids[0]
        try:
            body = ops.render_template(self.session, kind, tid)
        except Exception as exc:
            self._fail(exc)
            return
        row = self._row(tid)
        if row is None:
            return
        self.send_single(self._single_spec(row, kind_id, body), body)

    # --- out of scope -------------------------------------------------------------------------

    def _tags(self, ids: Sequence[str]) -> dict[str, str | None]:
        return {r.id: r.tag for r in ops.thread_rows(self.session, ids)}

    def out_of_scope(self, ids: Sequence[str]) -> None:
        config = self.session.config
        suggested = None
        if len(ids) == 1:
            row = self._row(ids[0])
            suggested = row.suggested_tag if row is not None else None
        screen = CategoryScreen(config.triage.categories, config.templates, suggested, len(ids))
        self.app.push_screen(screen, lambda choice: self._out_of_scope_chosen(list(ids), choice))

    def _out_of_scope_chosen(self, ids: list[str], choice: tuple[str, bool] | None) -> None:
        if choice is None:
            return
        category, with_reply = choice
        if with_reply:
            template = ops.template_text(self.session, category) or ""
            if len(ids) > 1:
                self.app.push_screen(ComposeScreen(ComposeSpec(ids, "out_of_scope", template, tag=category)))
                return
            row = self._row(ids[0])
            if row is None:
                return
            try:
                body = ops.render_template(self.session, category, row.id)
            except Exception as exc:
                self._fail(exc)
                return
            self.app.push_screen(ComposeScreen(self._single_spec(row, "out_of_scope", body, tag=category)))
            return
        self.tag(ids, category)

    def tag(self, ids: list[str], category: str) -> None:
        label = self.session.config.triage.categories.get(category, category)
        if len(ids) == 1:
            prev = self._tags(ids)
            try:
                ops.mark_out_of_scope(self.session, ids[0], category, now=self.app.clock(), body=None)
            except Exception as exc:
                self._fail(exc)
                return
            self.push_undo(self._undo_tags(f"tag {label}", prev))
            self.app.notify(f"Tagged {label}; it left the Due queue. u undoes it.", markup=False)
            self.app.after_change(close_to_inbox=True)
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._run_tags(ids, category, label)

        self.app.push_screen(
            ConfirmScreen(f"Tag {len(ids)} conversations as {label}?", "No reply is sent. u undoes it afterwards."),
            confirmed,
        )

    def _run_tags(self, ids: list[str], category: str, label: str) -> None:
        prev = self._tags(ids)
        session = self.session

        def step(chunk: list[str]) -> BulkOutcome:
            out = BulkOutcome()
            now = self.app.clock()
            for tid in chunk:
                try:
                    ops.mark_out_of_scope(session, tid, category, now=now, body=None)
                    out.done[tid] = None
                except Exception as exc:
                    out.failed[tid] = ops.message(exc)
            return out

        self.app.push_screen(
            ProgressScreen(f"Tagging {len(ids)} conversations as {label}…", ids, step),
            lambda outcome: self._bulk_done(outcome, f"tag {label}", "tagged", prev),
        )

    def accept_suggestion(self, ids: Sequence[str]) -> None:
        rows = [r for r in ops.thread_rows(self.session, ids) if r.suggested_tag]
        if not rows:
            self.app.notify("No suggested tag here", markup=False)
            return
        redirects = [r for r in rows if r.suggested_tag.startswith("redirect:")]
        tags = [r for r in rows if not r.suggested_tag.startswith("redirect:")]
        if len(ids) == 1 and redirects:
            self.redirect(redirects[0].suggested_tag.split(":", 1)[1], [redirects[0].id])
            return
        if redirects:
            self.app.notify(f"{len(redirects)} suggest a redirect: open them to confirm (p)", markup=False)
        by_cat: dict[str, list[str]] = {}
        for r in tags:
            by_cat.setdefault(r.suggested_tag, []).append(r.id)
        for category, group in by_cat.items():
            self.tag(group, category)

    # --- bulk ---------------------------------------------------------------------------------

    def bulk_preview(self, spec: ComposeSpec, template: str, *, composer: ComposeScreen | None = None) -> None:
        def confirmed(yes: bool | None) -> None:
            if yes:
                self._run_bulk(spec, template, composer)

        self.app.push_screen(BulkPreviewScreen(spec, template), confirmed)

    def _run_bulk(self, spec: ComposeSpec, template: str, composer: ComposeScreen | None) -> None:
        session = self.session
        prev = self._tags(spec.thread_ids) if spec.kind == "out_of_scope" else {}

        def step(chunk: list[str]) -> BulkOutcome:
            result = ops.queue_bulk(session, chunk, template, kind=spec.kind, now=self.app.clock(), tag=spec.tag)
            return BulkOutcome(done=dict(result.queued), failed=dict(result.failed))

        label = KIND_LABEL.get(spec.kind, "Reply").lower()

        def done(outcome: BulkOutcome | None) -> None:
            if composer is not None and composer.is_attached:
                composer.dismiss(None)
            self._bulk_done(outcome, label, "queued", prev)
            self.app.schedule_flush()

        self.app.push_screen(ProgressScreen(f"Queueing {len(spec.thread_ids)} replies…", spec.thread_ids, step), done)

    def _bulk_done(self, outcome: BulkOutcome | None, label: str, verb: str, prev: dict[str, str | None]) -> None:
        if outcome is None:
            return
        total = len(outcome.done) + len(outcome.failed)
        entries = {t: e for t, e in outcome.done.items() if e}
        if entries:
            self.push_undo(self._undo_replies(label, entries, {t: prev.get(t) for t in entries}))
        elif outcome.done:
            self.push_undo(self._undo_tags(label, {t: prev.get(t) for t in outcome.done}))
        self.app.after_change(close_to_inbox=True, select=list(outcome.failed))
        lines = [Text(f"{len(outcome.done)} of {total} {verb}.")]
        if outcome.done:
            lines.append(Text("u undoes them while they have not been sent." if entries else "u undoes it."))
        if outcome.failed:
            lines.append(Text(f"{len(outcome.failed)} failed and stay selected, so you can retry:", style="bold"))
            rows = {r.id: r for r in ops.thread_rows(self.session, list(outcome.failed))}
            for tid, reason in outcome.failed.items():
                row = rows.get(tid)
                line = safe_line(row.patient_name or row.patient_addr, 40) if row else Text(tid)
                line.append(": " + clean_line(reason, 160))
                lines.append(line)
        title = "Done" if not outcome.failed else "Done, with failures"
        self.app.push_screen(SummaryScreen(title, lines))

    # --- undo ---------------------------------------------------------------------------------

    def push_undo(self, entry: UndoEntry) -> None:
        self.app.undo_stack.append(entry)
        del self.app.undo_stack[:-50]

    def _undo_replies(self, label: str, entries: dict[str, str | None], prev_tags: dict[str, str | None]) -> UndoEntry:
        session = self.session
        n = len(entries)

        def run() -> str:
            ok, problems = 0, []
            now = self.app.clock()
            for tid, entry in entries.items():
                try:
                    if entry:
                        ops.undo_entry(session, entry, now=now)
                    if tid in prev_tags and entry is None:
                        ops.set_tag(session, tid, prev_tags[tid], now=now)
                    ok += 1
                except Exception as exc:
                    problems.append(ops.message(exc))
            if problems and not ok:
                return f"Cannot undo: {problems[0]}"
            if problems:
                return f"Undone for {ok} of {n}; {len(problems)} could not be: {problems[0]}"
            return f"Undone: {label} ({ok} conversation{'s' if ok != 1 else ''})"

        return UndoEntry(f"{label} to {n} conversation{'s' if n != 1 else ''}", run)

    def _undo_tags(self, label: str, prev: dict[str, str | None]) -> UndoEntry:
        session = self.session

        def run() -> str:
            now = self.app.clock()
            for tid, tag in prev.items():
                ops.set_tag(session, tid, tag, now=now)
            return f"Undone: {label} ({len(prev)} conversation{'s' if len(prev) != 1 else ''})"

        return UndoEntry(label, run)

    # --- outbox -------------------------------------------------------------------------------

    def outbox_retry(self, entry_id: str) -> None:
        try:
            ops.retry(self.session, entry_id, now=self.app.clock())
        except Exception as exc:
            self._fail(exc)
            return
        self.app.notify("Queued again; it goes out with the next send", markup=False)
        self.app.schedule_flush()
        self.app.after_change()

    def outbox_discard(self, entry_id: str, state: str) -> None:
        detail = (
            "It may already have reached the patient; the copy in the conversation stays."
            if state == "uncertain"
            else "It is never sent; the conversation is due again."
        )

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            try:
                ops.discard(self.session, entry_id, now=self.app.clock())
            except Exception as exc:
                self._fail(exc)
                return
            self.app.notify("Discarded", markup=False)
            self.app.after_change()

        self.app.push_screen(ConfirmScreen("Discard this outbox entry?", detail), confirmed)
