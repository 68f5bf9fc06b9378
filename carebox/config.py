"""Typed configuration: loaded from TOML, validated, one clear line on any mistake.

Where it comes from, first match wins: ``--config PATH``, ``$CAREBOX_CONFIG``, then
``carebox.toml`` in the user's config folder. The config never holds a password.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date, time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from carebox.paths import APP_NAME, default_config_path, default_store_dir, find_config  # noqa: F401 - re-exported

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ConfigError(Exception):
    """A config problem, worded as one line for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    ca_file: Path | None = None
    allow_insecure: bool = False

    @model_validator(mode="after")
    def _plaintext_needs_consent(self) -> ServerConfig:
        if self.tls == "none" and not self.allow_insecure:
            raise ValueError('tls = "none" sends the password in clear; set allow_insecure = true to allow it')
        return self


class FoldersConfig(_Strict):
    inbox: str = "INBOX"
    sent: str = "Sent"
    extra: tuple[str, ...] = ()


class AccountConfig(_Strict):
    address: str
    username: str
    imap: ServerConfig
    smtp: ServerConfig
    folders: FoldersConfig = FoldersConfig()
    password_command: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", value):
            raise ValueError("expected an email address like doctor@practice.example")
        return value.lower()


class IdentityConfig(_Strict):
    physician_name: str = ""
    practice_name: str = ""
    phone: str = ""
    booking: str = ""  # booking instructions or a link
    personal_addresses: tuple[str, ...] = ()  # the physician's private addresses (never used to reply)
    practice_domains: tuple[str, ...] = ()  # the practice's own domains (lookalike checks)


class PolicyConfig(_Strict):
    response_hours: float = Field(default=48, gt=0, le=24 * 30)
    business_hours: str | None = None  # "08:00-18:00"
    working_days: tuple[str, ...] = DAY_NAMES  # every day counts unless configured
    holidays: tuple[date, ...] = ()
    timezone: str = "UTC"
    category_hours: dict[str, float] = {}
    visit_window_days: int = Field(default=365, ge=1)  # no visit within this many days: free advice

    @field_validator("business_hours")
    @classmethod
    def _hours(cls, value: str | None) -> str | None:
        if value is None:
            return None
        m = re.fullmatch(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})", value.strip())
        if not m or not (0 <= int(m[1]) < 24 and int(m[2]) < 60 and 0 <= int(m[3]) <= 24 and int(m[4]) < 60):
            raise ValueError('expected a span like "08:00-18:00"')
        if (int(m[1]), int(m[2])) >= (int(m[3]), int(m[4])):
            raise ValueError("business hours must end after they start")
        return value.strip()

    @field_validator("working_days")
    @classmethod
    def _days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        days = tuple(d.lower()[:3] for d in value)
        bad = [d for d in days if d not in DAY_NAMES]
        if bad:
            raise ValueError(f"unknown day {bad[0]!r}; use mon, tue, wed, thu, fri, sat, sun")
        if not days:
            raise ValueError("at least one working day is needed")
        return days

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use a name like Europe/Berlin") from None
        return value

    def business_span(self) -> tuple[time, time] | None:
        if self.business_hours is None:
            return None
        start, end = (part.strip() for part in self.business_hours.split("-"))
        h1, m1 = map(int, start.split(":"))
        h2, m2 = map(int, end.split(":"))
        return time(h1, m1), (time(h2, m2) if h2 < 24 else time(23, 59, 59, 999999))


class StoreConfig(_Strict):
    path: Path | None = None  # default: the user data folder


class UiConfig(_Strict):
    theme: str = "carebox-dark"
    auto_lock_minutes: float = Field(default=10, ge=0)  # 0 turns auto-lock off
    keys: dict[str, str] = {}  # binding id -> key, e.g. reply = "r"


DEFAULT_TEMPLATES = {
    "phone": (
        "Dear {patient_first_name},\n\n"
        "Thank you for your message. This is best discussed by phone. Please call the practice at "
        "{practice_phone} so we can talk it through.\n"
        "If your symptoms are severe or getting worse, call emergency services now.\n\n"
        "Kind regards,\n{physician_name}\n{practice_name}"
    ),
    "consent": (
        "Dear {patient_first_name},\n\n"
        "Thank you for your message. Before we can answer medical questions by email we need your "
        "written consent to email communication. Please ask for the consent form at your next visit "
        "or call {practice_phone}.\n\nKind regards,\n{physician_name}\n{practice_name}"
    ),
    "professional_address": (
        "Dear {patient_first_name},\n\n"
        "Please write only to this practice address about your care; messages to other accounts may "
        "not be read in time. For anything urgent call {practice_phone}.\n\n"
        "Kind regards,\n{physician_name}\n{practice_name}"
    ),
    "visit": (
        "Dear {patient_first_name},\n\n"
        "Thank you for your message. This needs an examination in person. Please book a visit: "
        "{booking}\n\nKind regards,\n{physician_name}\n{practice_name}"
    ),
}

DEFAULT_CATEGORIES = {
    "appointment": "Appointment request",
    "billing": "Billing",
    "refill": "Prescription refill",
    "free_advice": "Free advice outside a visit",
    "personal_account": "Sent to a personal account",
    "other": "Other",
}


class TriageConfig(_Strict):
    categories: dict[str, str] = DEFAULT_CATEGORIES  # id -> label
    red_flags: tuple[str, ...] = ()  # extra phrases on top of the built-in list ("re:" prefix: a regex)

    @field_validator("red_flags")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from carebox.domain.safety import compile_phrase

        for phrase in value:
            compile_phrase(phrase)  # ValueError with one line naming the phrase
        return value


class Config(_Strict):
    account: AccountConfig | None = None
    identity: IdentityConfig = IdentityConfig()
    policy: PolicyConfig = PolicyConfig()
    store: StoreConfig = StoreConfig()
    ui: UiConfig = UiConfig()
    templates: dict[str, str] = DEFAULT_TEMPLATES
    triage: TriageConfig = TriageConfig()

    source: Path | None = Field(default=None, exclude=True)

    @field_validator("templates")
    @classmethod
    def _merge_templates(cls, value: dict[str, str]) -> dict[str, str]:
        return {**DEFAULT_TEMPLATES, **value}

    def store_dir(self) -> Path:
        return self.store.path.expanduser() if self.store.path else default_store_dir()

    @property
    def professional_address(self) -> str:
        return self.account.address if self.account else ""


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
    key = ".".join(str(p) for p in loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{key}' (check the spelling against carebox.toml.example)"
    if kind == "missing":
        return f"missing required key '{key}'"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    given = err.get("input")
    shown = ""
    if isinstance(given, (str, int, float, bool)) and kind != "value_error":
        shown = f" (got {given!r})"
    return f"'{key}': {msg[0].lower() + msg[1:]}{shown}"


def parse_config(text: str, source: Path | None = None) -> Config:
    where = str(source) if source else "config"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc.errors()[0])}") from None
    return cfg.model_copy(update={"source": source})


def load_config(cli_path: str | os.PathLike[str] | None = None) -> Config:
    path = find_config(cli_path)
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist: create it from carebox.toml.example or fix the path"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.__class__.__name__}") from None
    return parse_config(text, path)
