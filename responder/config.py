"""Settings from RESPONDER_* environment variables (optionally a TOML file), validated at start."""

import ipaddress
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from responder.project_program import is_module_function
from responder.stacks.interface import DEFAULT_PROGRAM

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "RESPONDER_"
# The shortest webhook secret or bearer token accepted, configured or read from a secret file.
MIN_SECRET_LENGTH = 16


class ConfigError(ValueError):
    """A setting is invalid; the message names the variable and the bad value (never a secret's)."""


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    parse.__doc__ = f"an integer from {low} to {high}"
    return parse


def _positive_float(raw: str) -> float:
    """a positive number of seconds"""
    value = float(raw)
    if not 0 < value < math.inf:  # also refuses NaN
        raise ValueError("must be positive and finite")
    return value


def _bool(raw: str) -> bool:
    """true/false (also 1/0, yes/no, on/off)"""
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _csv(raw: str) -> tuple[str, ...]:
    """a comma-separated list"""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


# A name a Host header can carry: DNS labels or an IPv4 address (IPv6 addresses are read apart).
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_.])?")


def _host_names(raw: str) -> tuple[str, ...]:
    """comma-separated host names or addresses, without a port (`*`: any)"""
    names = []
    for entry in _csv(raw):
        if entry.startswith("*."):
            raise ValueError(f"{entry[:100]!r}: wildcards are not supported, list each name")
        name = host_key(entry)
        if not name.isascii():  # an internationalised name: browsers send its ASCII form
            try:
                name = name.encode("idna").decode()
            except UnicodeError:
                raise ValueError(f"{entry[:100]!r} is not a host name") from None
        if "%" in name:
            raise ValueError(f"{entry[:100]!r}: an IPv6 zone id is not supported")
        if name != "*" and not _HOST_NAME.fullmatch(name) and not _is_ipv6(name):
            # A port, a scheme or a path never equals a request's name: refused, not ignored.
            raise ValueError(f"{entry[:100]!r} is not a host name (no scheme, port or path)")
        names.append(name)
    return tuple(names)


def host_key(name: str) -> str:
    """A host name as the Host check compares it: in lower case, and an IPv6 address without its
    brackets in its shortest form (`[2001:DB8:0::1]` is `2001:db8::1`)."""
    name = name.strip().lower()
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        return ipaddress.IPv6Address(bare).compressed
    except ValueError:
        return bare


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _secrets(raw: str) -> tuple[str, ...]:
    """comma-separated secrets of at least 16 characters each"""
    values = _csv(raw)  # none (an empty value) means not configured: one is generated
    if any(len(v) < MIN_SECRET_LENGTH for v in values):
        raise ValueError(f"each secret must be at least {MIN_SECRET_LENGTH} characters")
    return values


def _routing_keys(raw: str) -> tuple[str, ...]:
    """comma-separated 32-character alphanumeric integration keys"""
    keys = _csv(raw)  # none (an empty value) means not configured: a key is generated
    if any(len(k) != 32 or not k.isalnum() or not k.isascii() for k in keys):
        raise ValueError("each key must be 32 letters or digits")
    return keys


def _programs(raw: str) -> tuple[str, ...]:
    """comma-separated programs, each `module:function`"""
    programs = _csv(raw)
    if not all(is_module_function(p) for p in programs):
        raise ValueError("each program must be `module:function`")
    return programs


def _token(raw: str) -> str:
    """a bearer token of at least 16 characters (empty: one is generated)"""
    token = raw.strip()
    if token and len(token) < MIN_SECRET_LENGTH:
        raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters")
    return token


def _level(raw: str) -> str:
    """one of DEBUG, INFO, WARNING, ERROR"""
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("unknown level")
    return level


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError("unknown value")
        return raw

    parse.__doc__ = " or ".join(choices)
    return parse


def _database_url(raw: str) -> str:
    """a postgresql:// URL (empty: SQLite in the data dir)"""
    url = raw.strip()
    if url and urllib.parse.urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise ValueError("must be a postgresql:// URL")
    return url


def _http_url(raw: str) -> str:
    """an http:// or https:// URL with a host (empty: not set)"""
    url = raw.strip()
    if url:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
    return url


def _base_url(raw: str) -> str:
    """an http:// or https:// URL with a host, without credentials, query or fragment (empty: not set)"""
    url = _http_url(raw)
    parts = urllib.parse.urlsplit(url)
    # A password here would be logged with the settings; a query or fragment would break the paths
    # appended to it.
    if parts.username is not None or parts.query or parts.fragment:
        raise ValueError("must be a plain base URL (no user, query or fragment)")
    return url


def _credential_url(raw: str) -> str:
    """an https:// URL (http:// only to a loopback address), with a host (empty: not set)"""
    url = _http_url(raw)
    parts = urllib.parse.urlsplit(url)
    # Its requests carry a credential (the API token, or the webhook's path): never in the clear
    # over a network. A loopback address is a local proxy's, or a test's.
    if url and parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        raise ValueError("must be https:// (http:// only to a loopback address)")
    return url


def _api_base_url(raw: str) -> str:
    """an https:// URL (http:// only to a loopback address), without credentials, query or fragment"""
    return _credential_url(_base_url(raw))


def is_loopback(name: str) -> bool:
    """`localhost` (and its subdomains, which resolve to loopback, RFC 6761) or a loopback address."""
    name = name.strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _header_token(raw: str) -> str:
    """an API token: printable ASCII without spaces (empty: not set)"""
    token = raw.strip()  # it goes into a request header: no line breaks, no spaces, nothing else
    if not all("!" <= c <= "~" for c in token):
        raise ValueError("must be printable ASCII without spaces")
    return token


def _email(raw: str) -> str:
    """an email address (empty: not set)"""
    address = raw.strip()
    # It goes into the From header: a control character there would end or split the header.
    if address and not (
        address.isprintable() and re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address)
    ):
        raise ValueError("must be an email address")
    return address


def database_secrets(url: str) -> tuple[str, ...]:
    """The passwords a database URL holds (in its authority or as `?password=`), as written and
    percent-decoded, for the Redactor."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query).get("password", [])
    found = {p for p in (parts.password, *query) if p}
    return tuple(sorted(found | {urllib.parse.unquote(p) for p in found}))


def masked_url(url: str) -> str:
    """The URL with each password it holds replaced by [secret]: what logs may show of it."""
    head, mark, query = url.partition("?")
    netloc = urllib.parse.urlsplit(head).netloc
    if "@" in netloc and ":" in netloc.rpartition("@")[0]:
        user, _, host = netloc.rpartition("@")
        head = head.replace(netloc, f"{user.split(':', 1)[0]}:[secret]@{host}", 1)
    return head + mark + re.sub(r"(^|&)password=[^&]*", r"\1password=[secret]", query)


def _setting(
    default: Any,
    parse: Callable[[str], Any] = str,
    secret: bool = False,
    public: Callable[[Any], str] | None = None,
) -> Any:
    """A setting; `public` shows a secret one in part (its password masked) instead of not at all."""
    return field(default=default, metadata={"parse": parse, "secret": secret, "public": public})


@dataclass(frozen=True)
class Settings:
    """Everything the daemon can be told. Each field is RESPONDER_<FIELD NAME IN CAPITALS>."""

    host: str = _setting("127.0.0.1")
    port: int = _setting(8080, _int_range(0, 65535))
    # Host names answered besides loopback ones (`*`: any); unset, any unless `host` is loopback.
    allowed_hosts: tuple[str, ...] = _setting((), _host_names)
    data_dir: Path = _setting(Path("data"), Path)
    playbooks_dir: Path = _setting(PACKAGE_ROOT / "playbooks", Path)
    log_level: str = _setting("INFO", _level)
    # The job store: a PostgreSQL database shared by every node; unset, SQLite in the data dir.
    database_url: str = _setting("", _database_url, secret=True, public=masked_url)
    # PagerDuty V3 webhooks
    pagerduty_secrets: tuple[str, ...] = _setting((), _secrets, secret=True)
    verify_signatures: bool = _setting(True, _bool)
    max_body_bytes: int = _setting(512 * 1024, _int_range(1024, 64 * 1024 * 1024))
    # Events API v2 integration keys (32 letters/digits each) and the Alertmanager bearer token
    events_v2_routing_keys: tuple[str, ...] = _setting((), _routing_keys, secret=True)
    alertmanager_token: str = _setting("", _token, secret=True)
    # HTTP API
    api_token: str = _setting("", _token, secret=True)
    # Reads (the JSON API's GET routes, the web page, /metrics) need the API token too.
    read_auth: bool = _setting(False, _bool)
    # Seconds a client may take to send a request's headers (also how long an idle keep-alive
    # connection stays open), and to send its body once the headers are in.
    header_timeout: float = _setting(15.0, _positive_float)
    body_timeout: float = _setting(30.0, _positive_float)
    # Server processes on this machine, sharing the port (SO_REUSEPORT) under one supervisor.
    # 0: one with SQLite (a single process's store), one per CPU with PostgreSQL.
    processes: int = _setting(0, _int_range(0, 256))
    # Jobs
    workers: int = _setting(os.cpu_count() or 2, _int_range(1, 256))
    # A running job is leased to its node; this long after the node stops renewing it (it died, or
    # lost the database), another node takes the job over.
    lease_seconds: float = _setting(30.0, _positive_float)
    job_timeout: float = _setting(900.0, _positive_float)
    # Pulumi operations one stack worker process runs before it is replaced (1: each its own).
    operations_per_worker: int = _setting(50, _int_range(1, 10_000))
    # Programs that keep nothing from one run to the next (no module-level cache or client, no
    # change to the process): only these run again, for any stack, in a worker that ran them.
    stateless_programs: tuple[str, ...] = _setting((DEFAULT_PROGRAM,), _programs)
    job_max_attempts: int = _setting(3, _int_range(1, 100))
    retry_backoff: float = _setting(2.0, _positive_float)
    shutdown_grace: float = _setting(30.0, _positive_float)
    # The built-in playbooks probe this URL; empty means the daemon's own /healthz.
    probe_url: str = _setting("")
    # Blast-radius caps (0 = unlimited)
    max_live_stacks: int = _setting(50, _int_range(0, 100_000))
    max_stacks_per_service: int = _setting(10, _int_range(0, 100_000))
    max_stacks_per_playbook: int = _setting(25, _int_range(0, 100_000))
    max_operations_per_minute: int = _setting(120, _int_range(0, 1_000_000))
    # Lifecycle
    approval_timeout: float = _setting(3600.0, _positive_float)
    reaper_interval: float = _setting(30.0, _positive_float)
    orphan_sweep_interval: float = _setting(600.0, _positive_float)
    orphans: str = _setting("destroy", _choice("destroy", "report"))
    orphan_age: float = _setting(86400.0, _positive_float)
    # Finished deliveries, jobs and their steps older than this many seconds are deleted.
    retention: float = _setting(30 * 86400.0, _positive_float)

    # Notes written back to the incident (PagerDuty REST API) and to chat (a Slack-compatible
    # incoming webhook); nothing is sent to a destination whose settings are absent.
    pagerduty_api_token: str = _setting("", _header_token, secret=True)
    pagerduty_from: str = _setting("", _email)  # the PagerDuty user's email the notes are from
    # The REST API's base URL (EU accounts: https://api.eu.pagerduty.com).
    pagerduty_api_url: str = _setting("https://api.pagerduty.com", _api_base_url, public=masked_url)
    slack_webhook_url: str = _setting("", _credential_url, secret=True)  # its path is a credential
    # Where operators reach this daemon (e.g. https://responder.example.com): chat messages link
    # to the job's page under it. Empty: no link.
    public_url: str = _setting("", _base_url, public=masked_url)
    # A note not delivered this many seconds after its job ended is given up (marked failed).
    note_give_up: float = _setting(600.0, _positive_float)

    def __post_init__(self) -> None:
        if bool(self.pagerduty_api_token) != bool(self.pagerduty_from):
            raise ConfigError(
                f"{PREFIX}PAGERDUTY_API_TOKEN and {PREFIX}PAGERDUTY_FROM go together: PagerDuty"
                " requires the From header naming a user for every note"
            )
        if self.processes > 1 and not self.database_url:
            raise ConfigError(
                f"{PREFIX}PROCESSES={self.processes} needs {PREFIX}DATABASE_URL: the SQLite store "
                "belongs to one process; run one, or share a PostgreSQL database"
            )

    @property
    def process_count(self) -> int:
        """How many server processes to run (`processes`, or its default for the store)."""
        if self.processes:
            return self.processes
        return (os.cpu_count() or 1) if self.database_url else 1

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, config_file: Path | None = None
    ) -> "Settings":
        """Read RESPONDER_CONFIG (TOML, optional) then RESPONDER_* variables, which win."""
        environ = os.environ if environ is None else environ
        raw: dict[str, tuple[str, str]] = {}  # field -> (where it came from, raw text)
        config_file = config_file or (
            Path(environ[f"{PREFIX}CONFIG"]) if f"{PREFIX}CONFIG" in environ else None
        )
        if config_file is not None:
            raw.update(_read_toml(config_file))
        known = {f.name for f in fields(cls)}
        for name, value in environ.items():
            if name.startswith(PREFIX) and name != f"{PREFIX}CONFIG":
                key = name[len(PREFIX) :].lower()
                if key not in known:
                    raise ConfigError(
                        f"{name}: unknown setting (known: {', '.join(sorted(known))})"
                    )
                raw[key] = (name, value)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            where, text = raw[f.name]
            try:
                values[f.name] = f.metadata["parse"](text)
            except ValueError as e:
                public = f.metadata["public"] or str  # a URL's password masked even here
                shown = "[secret]" if f.metadata["secret"] else repr(public(text))
                expected = f.metadata["parse"].__doc__ or "a string"
                raise ConfigError(f"{where}: {e}; got {shown}, expected {expected}") from None
        return cls(**values)

    def public(self) -> dict[str, Any]:
        """The settings for a start-up log line, secrets masked."""
        return {f.name: _public(f.metadata, getattr(self, f.name)) for f in fields(self)}


def _public(metadata: Mapping[str, Any], value: Any) -> str:
    if metadata["public"] is not None and value:
        return str(metadata["public"](value))
    if metadata["secret"]:
        return "[secret]" if value else ""
    return str(value)


def _read_toml(path: Path) -> dict[str, tuple[str, str]]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{PREFIX}CONFIG: cannot read {path}: {e}") from None
    table = data.get("responder", data)
    out: dict[str, tuple[str, str]] = {}
    for key, value in table.items():
        text = (
            ",".join(map(str, value))
            if isinstance(value, list)
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
        out[key] = (f"{path}: {key}", text)
    return out
