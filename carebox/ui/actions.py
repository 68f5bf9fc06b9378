"""Every key of the UI in one table. Each binding has an id: the footer, the help screen, the
command palette and the config's ``ui.keys`` overrides all read this table, so a key that is
remapped in the config is remapped everywhere it is shown."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from textual.binding import Binding
from textual.keys import _character_to_key

# Where a binding is active. "triage" actions are available on the inbox and on a thread.
APP = "app"
INBOX = "inbox"
THREAD = "thread"
COMPOSE = "compose"
PREVIEW = "preview"
DIALOG = "dialog"
PATIENTS = "patients"
PATIENT_FORM = "patient_form"
SCOPE_TITLES = {
    APP: "Everywhere",
    INBOX: "Inbox",
    THREAD: "Thread",
    COMPOSE: "Reply composer",
    PREVIEW: "Bulk preview",
    PATIENTS: "Patient directory",
    PATIENT_FORM: "Patient form",
    DIALOG: "Dialogs",
}
_TRIAGE = (INBOX, THREAD)


@dataclass(frozen=True, slots=True)
class Act:
    """One bindable action: ``id`` is what ``ui.keys`` names, ``key`` its default key(s)."""

    id: str
    key: str
    action: str
    label: str  # short, for the footer
    help: str  # one line, for the help screen and the palette
    scopes: tuple[str, ...]
    show: bool = True
    priority: bool = False
    palette: bool = True


ACTIONS: tuple[Act, ...] = (
    # everywhere
    Act("quit", "ctrl+q", "app.quit", "Quit", "Quit carebox", (APP,), show=False, priority=True),
    Act("help", "question_mark", "app.help", "Keys", "Show every key", (APP,)),
    Act(
        "command_palette",
        "ctrl+p",
        "app.command_palette",
        "Commands",
        "Open the command palette",
        (APP,),
        show=False,
        priority=True,
        palette=False,
    ),
    Act("lock", "ctrl+l", "app.lock", "Lock", "Lock now: hide all patient data and drop the key", (APP,), show=False),
    # inbox navigation and views
    Act("open_thread", "enter", "open_thread", "Open", "Open the conversation under the cursor", (INBOX,)),
    Act("cursor_down", "j", "cursor_down", "Down", "Next conversation", (INBOX,), show=False, palette=False),
    Act("cursor_up", "k", "cursor_up", "Up", "Previous conversation", (INBOX,), show=False, palette=False),
    Act(
        "view_due",
        "1",
        "view('due')",
        "Due",
        "View: due (waiting for a reply, most urgent first)",
        (INBOX,),
        show=False,
    ),
    Act("view_all", "2", "view('all')", "All", "View: all conversations", (INBOX,), show=False),
    Act(
        "view_out_of_scope",
        "3",
        "view('out_of_scope')",
        "Out of scope",
        "View: tagged out of scope",
        (INBOX,),
        show=False,
    ),
    Act("view_answered", "4", "view('answered')", "Answered", "View: answered or redirected", (INBOX,), show=False),
    Act(
        "view_outbox",
        "5",
        "view('outbox')",
        "Outbox",
        "View: the outbox (waiting, uncertain, failed)",
        (INBOX,),
        show=False,
    ),
    Act("filter", "slash", "filter", "Filter", "Filter the view by text (name, address, subject, tag)", (INBOX,)),
    Act("clear", "escape", "clear", "Clear", "Clear the filter, then the selection", (INBOX,), show=False),
    Act("select", "space", "select", "Select", "Select or unselect the conversation for a bulk action", (INBOX,)),
    Act(
        "select_all",
        "asterisk",
        "select_all",
        "All",
        "Select every conversation in the current filter",
        (INBOX,),
        show=False,
    ),
    Act("outbox_retry", "R", "outbox_retry", "Retry", "Outbox: send the entry again", (INBOX,), show=False),
    Act(
        "outbox_discard",
        "x",
        "outbox_discard",
        "Discard",
        "Outbox: discard the entry (asks first)",
        (INBOX,),
        show=False,
    ),
    # triage: on the inbox (cursor or selection) and on an open thread
    Act("reply", "r", "reply", "Reply", "Reply (to every selected conversation: one template, previewed)", _TRIAGE),
    Act(
        "redirect_phone",
        "p",
        "redirect('phone')",
        "Phone",
        "Redirect to a phone call: the template goes into the composer",
        _TRIAGE,
    ),
    Act(
        "redirect_visit",
        "v",
        "redirect('visit')",
        "Visit",
        "Redirect to a visit in the office: the template goes into the composer",
        _TRIAGE,
    ),
    Act(
        "send_phone",
        "P",
        "send_redirect('phone')",
        "Phone now",
        "Send the phone redirect at once (undo for a few seconds)",
        _TRIAGE,
        show=False,
    ),
    Act(
        "send_visit",
        "V",
        "send_redirect('visit')",
        "Visit now",
        "Send the visit redirect at once (undo for a few seconds)",
        _TRIAGE,
        show=False,
    ),
    Act(
        "out_of_scope",
        "o",
        "out_of_scope",
        "Out of scope",
        "Tag out of scope: pick a category, optional reply",
        _TRIAGE,
    ),
    Act(
        "accept_suggestion",
        "t",
        "accept_suggestion",
        "Accept tag",
        "Accept the suggested out-of-scope tag",
        _TRIAGE,
        show=False,
    ),
    Act(
        "patients",
        "D",
        "app.patients",
        "Patients",
        "Patient directory: add, edit or delete patients (name, addresses, consent, visits)",
        (INBOX,),
    ),
    Act("undo", "u", "app.undo", "Undo", "Undo the last action (a queued reply is taken back)", _TRIAGE),
    Act("sync", "s", "app.sync", "Sync", "Sync now", _TRIAGE, show=False),
    # thread
    Act("back", "escape", "back", "Back", "Back to the inbox", (THREAD,)),
    Act(
        "save_attachment", "a", "save_attachment", "Save attachment", "Save an attachment to a file you pick", (THREAD,)
    ),
    Act(
        "export",
        "e",
        "export",
        "Export",
        "Export the conversation for the record (PDF, text, FHIR)",
        (THREAD,),
        show=False,
    ),
    # composer
    Act("send", "ctrl+s", "send", "Send", "Send: the reply goes to the outbox", (COMPOSE,), priority=True),
    Act(
        "save_draft",
        "f2",
        "save_draft",
        "Save draft",
        "Save the text as a draft (encrypted) and close",
        (COMPOSE,),
        priority=True,
    ),
    Act(
        "external_editor", "ctrl+o", "external_editor", "$EDITOR", "Edit the text in $EDITOR", (COMPOSE,), priority=True
    ),
    Act("cancel", "escape", "cancel", "Cancel", "Cancel (asks first when text was written)", (COMPOSE,), priority=True),
    # bulk preview
    Act("confirm", "y", "confirm", "Confirm", "Confirm and queue every reply shown", (PREVIEW,), priority=True),
    Act("preview_back", "escape", "back", "Back", "Back without sending", (PREVIEW,), priority=True),
    # patient directory
    Act("patient_add", "a", "add", "Add", "Add a patient", (PATIENTS,)),
    Act("patient_edit", "e", "edit", "Edit", "Edit the patient under the cursor (enter does too)", (PATIENTS,)),
    Act("patient_delete", "d", "delete", "Delete", "Delete the patient under the cursor (asks first)", (PATIENTS,)),
    Act("patient_filter", "slash", "filter", "Filter", "Filter the directory by name, address or phone", (PATIENTS,)),
    Act("patient_close", "escape", "close", "Close", "Clear the filter, then back to the inbox", (PATIENTS,)),
    # patient form
    Act(
        "patient_save",
        "ctrl+s",
        "save",
        "Save",
        "Save the patient (enter in a field does too)",
        (PATIENT_FORM,),
        priority=True,
    ),
    Act(
        "patient_cancel",
        "escape",
        "cancel",
        "Cancel",
        "Close the form (asks first when something was changed)",
        (PATIENT_FORM,),
        priority=True,
    ),
    # dialogs
    Act("dialog_yes", "y", "yes", "Yes", "Answer yes", (DIALOG,), palette=False),
    Act("dialog_no", "n,escape", "no", "No", "Answer no / close", (DIALOG,), palette=False),
)

BY_ID: dict[str, Act] = {a.id: a for a in ACTIONS}
assert len(BY_ID) == len(ACTIONS), "binding ids must be unique"


def normalize_key(key: str) -> str:
    """Textual's name for a key as written in a config ("?" -> "question_mark")."""
    key = key.strip()
    return _character_to_key(key) if len(key) == 1 else key


def normalize_keys(keys: str) -> str:
    return ",".join(normalize_key(k) for k in keys.split(",") if k.strip())


def bindings(scope: str) -> list[Binding]:
    return [
        Binding(a.key, a.action, a.label, show=a.show, priority=a.priority, id=a.id, tooltip=a.help)
        for a in ACTIONS
        if scope in a.scopes
    ]


def acts(scope: str) -> list[Act]:
    return [a for a in ACTIONS if scope in a.scopes]


@dataclass
class Keymap:
    """The effective key of every binding id, and what was wrong with the config's overrides."""

    overrides: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def keys_of(self, binding_id: str) -> str:
        return self.overrides.get(binding_id) or BY_ID[binding_id].key


def check_keymap(keys: Mapping[str, str], scopes: Iterable[str] = tuple(SCOPE_TITLES)) -> Keymap:
    """Validate ``ui.keys``: unknown ids and empty keys are dropped with a problem line each;
    two actions on one key in the same place are reported (the later one wins in Textual)."""
    out = Keymap()
    for binding_id, value in keys.items():
        if binding_id not in BY_ID:
            out.problems.append(
                f"ui.keys: unknown binding id {binding_id!r} (ignored); press ? to see the ids you can remap"
            )
            continue
        normal = normalize_keys(str(value))
        if not normal:
            out.problems.append(f'ui.keys: {binding_id} has no key (ignored); write a key like "r" or "ctrl+r"')
            continue
        out.overrides[binding_id] = normal
    for scope in scopes:
        seen: dict[str, str] = {}
        active = [a for a in ACTIONS if scope in a.scopes or (scope != APP and APP in a.scopes)]
        for a in active:
            for k in out.keys_of(a.id).split(","):
                other = seen.get(k)
                if other is not None and other != a.id and (a.id in out.overrides or other in out.overrides):
                    out.problems.append(
                        f"ui.keys: {k!r} is bound to both {other} and {a.id} ({SCOPE_TITLES[scope]}); change one"
                    )
                seen.setdefault(k, a.id)
    out.problems = list(dict.fromkeys(out.problems))
    return out
