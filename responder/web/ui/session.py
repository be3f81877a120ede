"""The web page's sign-in cookie: an expiry and an HMAC of it keyed by the API token, never the token."""

import hashlib
import hmac
import math

COOKIE = "responder_ui"
SESSION_SECONDS = 12 * 3600  # a sign-in lasts a working shift; the cookie then stops opening pages
_PURPOSE = b"responder-ui-session:"


def session_value(token: str, now: float) -> str:
    """A cookie value valid until `now + SESSION_SECONDS`. It is derived from the token, so it dies
    with a token rotation, and it holds nothing the token could be recovered from."""
    expires = int(now) + SESSION_SECONDS
    return f"{expires}.{_mac(token, expires)}"


def session_valid(value: str, token: str, now: float) -> bool:
    """Whether the cookie value was made with this token and has not expired. An empty token (an
    empty secret file) opens nothing."""
    expires_text, _, mac = value.partition(".")
    # A dozen digits reach past the year 30000; more would only make `int` work (or refuse: Python
    # parses at most 4300 digits) on a cookie anyone can send.
    digits = expires_text.isascii() and expires_text.isdigit() and len(expires_text) <= 12
    if not token or not digits or not mac.isascii():
        return False
    expires = int(expires_text)
    if not now < expires <= math.ceil(now) + SESSION_SECONDS:
        return False
    return hmac.compare_digest(mac.encode(), _mac(token, expires).encode())


def _mac(token: str, expires: int) -> str:
    return hmac.new(token.encode(), _PURPOSE + str(expires).encode(), hashlib.sha256).hexdigest()
