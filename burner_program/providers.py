"""Dynamic providers that do real, local, observable work for the burner program.

Pulumi pickles provider instances by reference, so these classes live in an installed module:
the provider process (`python -m pulumi.dynamic`) imports them again on refresh and destroy.

The scratch root comes only from `BURNER_SCRATCH_ROOT`, which the daemon sets for every worker and
which reaches the provider process through the CLI; never from stack config or state, which whoever
wrote them (or an older version) controls.
"""

import datetime
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

PROBE_TIMEOUT_SECONDS = 5.0
# Set by the daemon (responder.stacks.environment) for the worker and everything the worker starts.
SCRATCH_ROOT_VARIABLE = "BURNER_SCRATCH_ROOT"


class UnsafeScratchPathError(ValueError):
    """A scratch directory that would not be strictly inside its scratch root: never made or removed."""


# Pulumi's own rule for project and stack names; `.` and `..` pass it, so they are refused apart.
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def scratch_root() -> str:
    """The trusted scratch root, resolved: the daemon's, else `$TMPDIR/responder-scratch` (by hand)."""
    root = os.environ.get(SCRATCH_ROOT_VARIABLE) or os.path.join(
        tempfile.gettempdir(), "responder-scratch"
    )
    return os.path.realpath(root)


def scratch_path(root: str, project: str, stack: str) -> str:
    """`<root>/<project>/<stack>`: one directory per stack, refused unless it stays inside the root."""
    for name in (project, stack):
        if not _NAME.fullmatch(name) or name in (".", ".."):
            raise UnsafeScratchPathError(f"{name!r} cannot name a scratch directory")
    path = os.path.join(root, project, stack)
    check_inside(path, root)
    return path


def check_inside(path: str, root: str) -> None:
    """Raise unless `path`, with every symlink resolved, is strictly inside `root` and not a symlink."""
    real_root = os.path.realpath(root)
    real_path = os.path.realpath(path)
    inside = real_path != real_root and os.path.commonpath([real_path, real_root]) == real_root
    if not inside or os.path.islink(path):
        raise UnsafeScratchPathError(
            f"refusing scratch directory {path!r}: it is not strictly inside its root {root!r}"
        )


class _ScratchDirectoryProvider(ResourceProvider):
    """A directory holding `context.json`; deleting the resource removes the directory.

    Every operation checks its path against the trusted root: a path recorded in state (possibly by an
    older version, which named `<root>/<incident id>` and recorded no root) is never trusted alone.
    """

    def create(self, props: dict[str, Any]) -> CreateResult:
        path = props["path"]
        check_inside(path, scratch_root())
        _write_context(path, props["context"])
        # A burner credential for whoever works in the directory; exported as a secret output.
        access_key = secrets.token_hex(16)
        outs = {"path": path, "context": props["context"], "access_key": access_key}
        return CreateResult(id_=path, outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("path", "context") if olds.get(k) != news[k]]
        return DiffResult(
            changes=bool(changed),
            replaces=["path"] if "path" in changed else [],
            delete_before_replace=False,
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        path = news["path"]
        check_inside(path, scratch_root())
        _write_context(path, news["context"])
        outs = {"path": path, "context": news["context"], "access_key": olds.get("access_key")}
        return UpdateResult(outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        check_inside(id_, scratch_root())
        context_file = os.path.join(id_, "context.json")
        if not os.path.exists(context_file):
            return ReadResult()  # gone: refresh drops it from state
        with open(context_file, encoding="utf-8") as f:
            outs = {"path": id_, "context": json.load(f), "access_key": props.get("access_key")}
        return ReadResult(id_=id_, outs=outs)

    def delete(self, id_: str, _props: dict[str, Any]) -> None:
        check_inside(id_, scratch_root())
        shutil.rmtree(id_, ignore_errors=True)


def _write_context(path: str, context: Any) -> None:
    # Private: the context holds incident details; the directory may hold the responder's work.
    os.makedirs(path, mode=0o700, exist_ok=True)
    tmp = os.path.join(path, ".context.json.tmp")
    with open(
        os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8"
    ) as f:
        json.dump(context, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(path, "context.json"))


class _HttpProbeProvider(ResourceProvider):
    """Probes a URL; `read` probes again, so `pulumi refresh` shows current health."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=props["url"], outs=probe(props["url"]))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=olds.get("url") != news["url"])

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=probe(news["url"]))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        url = props.get("url") or id_
        return ReadResult(id_=id_, outs=probe(url))


def probe(url: str) -> dict[str, Any]:
    """GET the URL once; never raises, so a dead target is recorded rather than failing the stack."""
    started = time.monotonic()
    status, error = 0, ""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (OSError, ValueError) as e:
        error = f"{type(e).__name__}: {e}"
    return {
        "url": url,
        "status_code": status,
        "latency_ms": round((time.monotonic() - started) * 1000, 2),
        "error": error,
        "probed_at": datetime.datetime.now(datetime.UTC).isoformat(),
    }


class _HostDiagnosticsProvider(ResourceProvider):
    """The original tutorial's diagnostics: the host's clock (`timezone`) or identity (`location`)."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> Any:
        from pulumi.dynamic import CheckFailure, CheckResult

        failures = []
        if news.get("request") not in DIAGNOSTICS:
            failures.append(
                CheckFailure(
                    "request", f"must be one of {sorted(DIAGNOSTICS)}, not {news.get('request')!r}"
                )
            )
        return CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        request = props["request"]
        return CreateResult(id_=request, outs={"request": request, "data": DIAGNOSTICS[request]()})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=olds.get("request") != news["request"], replaces=["request"])

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs={"request": id_, "data": DIAGNOSTICS[id_]()})


def timezone_data() -> dict[str, Any]:
    now = datetime.datetime.now().astimezone()
    offset = now.utcoffset() or datetime.timedelta()
    return {
        "timezone": now.tzname(),
        "utc_offset_seconds": int(offset.total_seconds()),
        "local_time": now.isoformat(),
        "utc_time": datetime.datetime.now(datetime.UTC).isoformat(),
        "epoch_seconds": time.time(),
    }


def location_data() -> dict[str, Any]:
    hostname = socket.gethostname()
    try:
        addresses = sorted({info[4][0] for info in socket.getaddrinfo(hostname, None)})
    except OSError:
        addresses = []
    return {"hostname": hostname, "fqdn": socket.getfqdn(), "addresses": addresses}


DIAGNOSTICS = {"timezone": timezone_data, "location": location_data}


class ScratchDirectory(Resource, module="responder", name="ScratchDirectory"):
    path: pulumi.Output[str]
    context: pulumi.Output[Any]
    access_key: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        path: str,
        context: Any,
        opts: pulumi.ResourceOptions | None = None,
    ):
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["access_key"])
        )
        props = {"path": path, "context": context, "access_key": None}
        super().__init__(_ScratchDirectoryProvider(), name, props, opts)


class HttpProbe(Resource, module="responder", name="HttpProbe"):
    url: pulumi.Output[str]
    status_code: pulumi.Output[int]
    latency_ms: pulumi.Output[float]
    error: pulumi.Output[str]
    probed_at: pulumi.Output[str]

    def __init__(self, name: str, url: str, opts: pulumi.ResourceOptions | None = None):
        props = {
            "url": url,
            "status_code": None,
            "latency_ms": None,
            "error": None,
            "probed_at": None,
        }
        super().__init__(_HttpProbeProvider(), name, props, opts)


class HostDiagnostics(Resource, module="responder", name="HostDiagnostics"):
    request: pulumi.Output[str]
    data: pulumi.Output[Any]

    def __init__(self, name: str, request: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_HostDiagnosticsProvider(), name, {"request": request, "data": None}, opts)
