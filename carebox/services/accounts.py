"""Server settings for the mail layer, built from the config and the stored password."""

from __future__ import annotations

from typing import TYPE_CHECKING

from carebox.config import Config, ServerConfig
from carebox.mail.imap import ImapSettings
from carebox.mail.tls import TlsMode
from carebox.store.keys import get_account_password

if TYPE_CHECKING:  # light on purpose: `carebox sync` logs in while the store's modules load
    from carebox.mail.smtp import SmtpSettings
    from carebox.store.store import Store

DEFAULT_PORTS = {
    "imap": {"implicit": 993, "starttls": 143, "none": 143},
    "smtp": {"implicit": 465, "starttls": 587, "none": 25},
}


class AccountProblem(Exception):
    """The account cannot be used as configured; one line for the user."""


def _port(kind: str, server: ServerConfig) -> int:
    return server.port or DEFAULT_PORTS[kind][server.tls]


def account_password(config: Config, store: Store | None) -> str:
    account = config.account
    if account is None:
        raise AccountProblem("no [account] in the config: copy it from carebox.toml.example and fill it in")
    password = get_account_password(account.address, account.password_command)
    if password is None and store is not None:
        password = store.get_secret(f"account:{account.address}")
    if not password:
        raise AccountProblem("no password for the mail account: run `carebox login` (or set password_command)")
    return password


def imap_settings(config: Config, store: Store | None, **extra: object) -> ImapSettings:
    account = config.account
    if account is None:
        raise AccountProblem("no [account] in the config: copy it from carebox.toml.example and fill it in")
    s = account.imap
    return ImapSettings(
        host=s.host,
        port=_port("imap", s),
        username=account.username,
        password=account_password(config, store),
        tls=TlsMode(s.tls),
        ca_file=s.ca_file,
        allow_insecure=s.allow_insecure,
        **extra,  # type: ignore[arg-type]
    )


def smtp_settings(config: Config, store: Store | None, **extra: object) -> SmtpSettings:
    account = config.account
    if account is None:
        raise AccountProblem("no [account] in the config: copy it from carebox.toml.example and fill it in")
    from carebox.mail.smtp import SmtpSettings

    s = account.smtp
    try:
        return SmtpSettings(
            host=s.host,
            port=_port("smtp", s),
            username=account.username,
            password=account_password(config, store),
            tls=TlsMode(s.tls),
            ca_file=s.ca_file,
            allow_insecure=s.allow_insecure,
            **extra,  # type: ignore[arg-type]
        )
    except ValueError as exc:
        raise AccountProblem(f"[account.smtp]: {exc}") from None
