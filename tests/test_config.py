from pathlib import Path

import pytest

from carebox.cli import main
from carebox.config import ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[1] / "carebox.toml.example"


def test_the_example_config_is_valid() -> None:
    cfg = parse_config(EXAMPLE.read_text(), EXAMPLE)
    assert cfg.account is not None
    assert cfg.account.address == "dr.lindqvist@riverside-practice.example"
    assert cfg.policy.response_hours == 48
    assert len(cfg.policy.working_days) == 7  # plain clock hours unless configured
    assert cfg.ui.theme == "carebox-dark"
    assert "phone" in cfg.templates and "visit" in cfg.templates


GOOD_ACCOUNT = """
[account]
address = "doc@practice.example"
username = "doc"
[account.imap]
host = "imap.practice.example"
[account.smtp]
host = "smtp.practice.example"
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[policy]\nrespons_hours = 24\n", "unknown key 'policy.respons_hours'"),
        ("[policy]\nresponse_hours = 'soon'\n", "'policy.response_hours'"),
        ("[account]\naddress = 'doc@practice.example'\n", "missing required key 'account.username'"),
        ("[policy]\nbusiness_hours = '18:00-08:00'\n", "end after they start"),
        ("[policy]\nworking_days = ['mon', 'funday']\n", "unknown day"),
        ("[policy]\ntimezone = 'Mars/Olympus'\n", "unknown time zone"),
        ("[account\n", "not valid TOML"),
        (GOOD_ACCOUNT.replace('host = "imap.practice.example"', 'host = "i"\ntls = "none"'), "allow_insecure"),
        (GOOD_ACCOUNT + "password = 'hunter2'\n", "unknown key 'account.smtp.password'"),
    ],
)
def test_bad_config_gives_one_line_naming_the_key(tmp_path: Path, text: str, expected: str, capsys) -> None:
    path = tmp_path / "carebox.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)
    # Through the command: one line on stderr, exit 2, no traceback.
    assert main(["--config", str(path), "status"]) == 2
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and expected in out.err
    assert "Traceback" not in out.err


def test_config_search_order(tmp_path: Path, monkeypatch) -> None:
    env_cfg = tmp_path / "env.toml"
    env_cfg.write_text("[policy]\nresponse_hours = 24\n")
    cli_cfg = tmp_path / "cli.toml"
    cli_cfg.write_text("[policy]\nresponse_hours = 12\n")
    assert load_config().policy.response_hours == 48  # nothing anywhere: defaults
    monkeypatch.setenv("CAREBOX_CONFIG", str(env_cfg))
    assert load_config().policy.response_hours == 24
    assert load_config(cli_cfg).policy.response_hours == 12


def test_missing_config_file_named_on_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_a_bad_red_flag_pattern_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[triage]\nred_flags = ['re:(unclosed']\n")
    with pytest.raises(ConfigError, match=r"triage\.red_flags.*not a valid regular expression"):
        load_config(path)


def test_new_safety_keys_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[identity]\npersonal_addresses = ['maya@home.example']\npractice_domains = ['riverside-practice.example']\n"
        "[policy]\nvisit_window_days = 180\n"
    )
    cfg = load_config(path)
    assert cfg.policy.visit_window_days == 180
    assert cfg.identity.personal_addresses == ("maya@home.example",)
    assert {"phone", "visit", "consent", "professional_address"} <= set(cfg.templates)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[store]\npath = "{d}/a"\n', "{d}/a"),
        ('[ui]\ntheme = "carebox-dark"\n', "default"),
        ("", "default"),
        ('[store]\npath = "~/carebox-store"\n', "~/carebox-store"),
        ("[store\nbroken", None),  # not TOML: no hint, the validated config says what is wrong
        ("store = 3\n", "default"),
        ("[store]\npath = 3\n", None),
    ],
)
def test_the_store_folder_hint_matches_the_validated_config(
    tmp_path: Path, monkeypatch, text: str, expected: str | None
) -> None:
    """`carebox open` starts unlocking from this hint before the config is validated; where the
    two agree the thread's key is used, elsewhere it is started again (cli._open_for_ui)."""
    from carebox.paths import default_store_dir, store_dir_hint

    path = tmp_path / "carebox.toml"
    path.write_text(text.format(d=tmp_path))
    hint = store_dir_hint(path)
    if expected is None:
        assert hint is None
        return
    want = default_store_dir() if expected == "default" else Path(expected.format(d=tmp_path)).expanduser()
    assert hint == want
    try:
        config = load_config(path)
    except ConfigError:
        return  # an invalid config: the hint is never used
    assert config.store_dir().expanduser() == hint
