"""The notes settings: checked at start, secrets never shown, and registered with the redactor."""

import pytest

from responder.config import ConfigError, Settings
from responder.notes.service import secrets_of

WEBHOOK = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"


def test_the_token_needs_a_from_user_and_the_other_way_round() -> None:
    with pytest.raises(ConfigError, match="RESPONDER_PAGERDUTY_FROM go together"):
        Settings.load({"RESPONDER_PAGERDUTY_API_TOKEN": "y_NbAkKc66ryYTWUXYEu"})
    with pytest.raises(ConfigError, match="go together"):
        Settings.load({"RESPONDER_PAGERDUTY_FROM": "bot@example.com"})


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("RESPONDER_PAGERDUTY_FROM", "not an email", "'not an email'"),
        ("RESPONDER_PAGERDUTY_API_URL", "ftp://api.pagerduty.com", "'ftp://api.pagerduty.com'"),
        ("RESPONDER_PUBLIC_URL", "responder.example.com", "'responder.example.com'"),
        ("RESPONDER_SLACK_WEBHOOK_URL", "hooks.slack.com/services/T0/B0/secretpart", "[secret]"),
        # Their requests carry the token or the webhook's credential: never in the clear.
        ("RESPONDER_PAGERDUTY_API_URL", "http://api.pagerduty.com", "'http://api.pagerduty.com'"),
        ("RESPONDER_SLACK_WEBHOOK_URL", "http://chat.example/hooks/secretpart", "[secret]"),
        ("RESPONDER_NOTE_GIVE_UP", "0", "'0'"),
    ],
)
def test_bad_values_stop_start_up_naming_the_variable(name: str, value: str, shown: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.load({name: value})
    assert str(raised.value).startswith(f"{name}: ") and f"got {shown}," in str(raised.value)
    if shown == "[secret]":
        assert "secretpart" not in str(raised.value)


def test_the_webhook_url_and_the_token_are_secrets() -> None:
    settings = Settings.load(
        {
            "RESPONDER_PAGERDUTY_API_TOKEN": "y_NbAkKc66ryYTWUXYEu",
            "RESPONDER_PAGERDUTY_FROM": "bot@example.com",
            "RESPONDER_SLACK_WEBHOOK_URL": WEBHOOK,
        }
    )
    assert set(secrets_of(settings)) == {
        "y_NbAkKc66ryYTWUXYEu",
        WEBHOOK,
        "XXXXXXXXXXXXXXXXXXXXXXXX",
    }
    zulip = "https://Chat.Example.com/api/v1/external/slack_incoming?api_key=abcdefghijklmnopqrstuvwxyz123456&stream=ops"
    found = secrets_of(Settings.load({"RESPONDER_SLACK_WEBHOOK_URL": zulip}))
    assert "abcdefghijklmnopqrstuvwxyz123456" in found  # a credential in the query, alone
    assert (
        "https://chat.example.com/api/v1/external/slack_incoming?api_key=abcdefghijklmnopqrstuvwxyz123456&stream=ops"
        in found
    )  # as aiohttp quotes it
    public = settings.public()
    assert public["pagerduty_api_token"] == "[secret]"
    assert public["slack_webhook_url"] == "[secret]"
    assert public["pagerduty_api_url"] == "https://api.pagerduty.com"


def test_a_credential_may_go_over_http_to_a_loopback_address_only() -> None:
    """A local proxy (or a test's server) listens on loopback: nothing crosses a network there."""
    for url in ("http://127.0.0.1:8443", "http://localhost:8443", "http://[::1]:8443"):
        settings = Settings.load(
            {"RESPONDER_PAGERDUTY_API_URL": url, "RESPONDER_SLACK_WEBHOOK_URL": f"{url}/hook"}
        )
        assert settings.pagerduty_api_url == url
