"""Settings: defaults, environment, TOML file, and errors that name the variable and the value."""

from pathlib import Path

import pytest

from responder.config import ConfigError, Settings


def test_defaults() -> None:
    settings = Settings.load({})
    assert (settings.host, settings.port, settings.max_body_bytes) == (
        "127.0.0.1",
        8080,
        512 * 1024,
    )
    assert settings.verify_signatures is True and settings.pagerduty_secrets == ()


def test_environment_values_are_parsed() -> None:
    settings = Settings.load(
        {
            "RESPONDER_PORT": "9000",
            "RESPONDER_PAGERDUTY_SECRETS": "a-secret-0123456789, b-secret-0123456789",
            "RESPONDER_VERIFY_SIGNATURES": "false",
            "RESPONDER_DATA_DIR": "/tmp/x",
        }
    )
    assert settings.port == 9000
    assert settings.pagerduty_secrets == ("a-secret-0123456789", "b-secret-0123456789")
    assert settings.verify_signatures is False
    assert settings.data_dir == Path("/tmp/x")


def test_allowed_hosts_take_names_and_addresses_as_a_browser_sends_them() -> None:
    listed = "Responder.Example, 10.0.0.7, [2001:DB8::1], 2001:db8:0:0:0:0:0:2, *, in_ternal, bücher.example"
    settings = Settings.load({"RESPONDER_ALLOWED_HOSTS": listed})
    assert settings.allowed_hosts == (
        "responder.example", "10.0.0.7", "2001:db8::1", "2001:db8::2", "*", "in_ternal",
        "xn--bcher-kva.example",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RESPONDER_PORT": "http"}, "RESPONDER_PORT: .*got 'http'"),
        ({"RESPONDER_PORT": "70000"}, "RESPONDER_PORT: must be between 0 and 65535; got '70000'"),
        ({"RESPONDER_WORKERS": "0"}, "RESPONDER_WORKERS"),
        ({"RESPONDER_OPERATIONS_PER_WORKER": "0"}, "RESPONDER_OPERATIONS_PER_WORKER: must be"),
        ({"RESPONDER_STATELESS_PROGRAMS": "a:b, /srv/programs/dns"}, "each program must be"),
        (
            {"RESPONDER_VERIFY_SIGNATURES": "maybe"},
            "RESPONDER_VERIFY_SIGNATURES: must be true or false",
        ),
        ({"RESPONDER_JOB_TIMEOUT": "-1"}, "RESPONDER_JOB_TIMEOUT: must be positive"),
        ({"RESPONDER_LOG_LEVEL": "loud"}, "RESPONDER_LOG_LEVEL"),
        ({"RESPONDER_PROT": "1"}, "RESPONDER_PROT: unknown setting"),
        ({"RESPONDER_ALLOWED_HOSTS": "a.example, b.example:8443"}, "'b.example:8443' is not a"),
        ({"RESPONDER_ALLOWED_HOSTS": "[::1]:8080"}, "'\\[::1\\]:8080' is not a host name"),
        ({"RESPONDER_ALLOWED_HOSTS": "https://a.example"}, "no scheme, port or path"),
        ({"RESPONDER_ALLOWED_HOSTS": "a.example/ui"}, "no scheme, port or path"),
        ({"RESPONDER_ALLOWED_HOSTS": "*.example.com"}, "wildcards are not supported"),
        ({"RESPONDER_ALLOWED_HOSTS": "fe80::1%eth0"}, "zone id is not supported"),
    ],
)
def test_errors_name_the_variable_and_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(env)


def test_secret_values_are_not_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as error:
        Settings.load({"RESPONDER_MAX_BODY_BYTES": "lots"})
    assert "lots" in str(error.value)
    settings = Settings.load({"RESPONDER_API_TOKEN": "tok-very-secret-0123"})
    assert "tok-very-secret-0123" not in str(settings.public())


def test_toml_file_with_environment_winning(tmp_path: Path) -> None:
    config = tmp_path / "responder.toml"
    config.write_text(
        "[responder]\nport = 9100\nworkers = 3\n"
        'pagerduty_secrets = ["s-one-0123456789", "s-two-0123456789"]\n'
    )
    settings = Settings.load({"RESPONDER_CONFIG": str(config), "RESPONDER_WORKERS": "5"})
    assert (settings.port, settings.workers, settings.pagerduty_secrets) == (
        9100,
        5,
        ("s-one-0123456789", "s-two-0123456789"),
    )
    config.write_text("port = [\n")
    with pytest.raises(ConfigError, match="RESPONDER_CONFIG: cannot read"):
        Settings.load({"RESPONDER_CONFIG": str(config)})
    config.write_text("port = 'x'\n")
    with pytest.raises(ConfigError, match=r"responder\.toml: port"):
        Settings.load({"RESPONDER_CONFIG": str(config)})
