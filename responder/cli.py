"""The `responder` command: serve, check, playbooks, replay."""

import argparse
import asyncio
import gc
import json
import signal
import sys
import tempfile
from pathlib import Path

import uvloop
from aiohttp import web

from responder.config import ConfigError, Settings
from responder.daemon import create_app, refuse_reserved_names
from responder.logs import Redactor, configure_logging, get_logger
from responder.playbook import Playbook
from responder.playbook_loader import PlaybookLoadError, load_playbooks
from responder.store import StoreUnavailable

log = get_logger("responder.cli")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="responder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the daemon")
    # Set by the supervisor on its children (several processes): the supervisor's pid.
    serve.add_argument("--supervised-by", type=int, metavar="PID", help=argparse.SUPPRESS)
    commands.add_parser("check", help="validate the configuration and playbooks without serving")
    commands.add_parser("playbooks", help="list playbooks with their triggers and docstrings")
    replay = commands.add_parser(
        "replay", help="run a saved payload through matching, preview only"
    )
    replay.add_argument("file", type=Path, help="a saved PagerDuty V3 webhook body (JSON)")
    args = parser.parse_args(argv)

    redactor = Redactor()
    try:
        settings = Settings.load()
        # The daemon logs to stdout; the other commands keep stdout for their own output.
        stream = sys.stdout if args.command == "serve" else sys.stderr
        configure_logging(redactor, level=settings.log_level, stream=stream)
        playbooks = load_playbooks(settings.playbooks_dir)
        refuse_reserved_names(playbooks)  # what `serve` would refuse, `check` refuses too
    except (ConfigError, PlaybookLoadError) as e:
        print(f"responder: {e}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(
            f"ok: configuration valid, {len(playbooks)} playbooks loaded from {settings.playbooks_dir}"
        )
        return 0
    if args.command == "playbooks":
        for playbook in playbooks:
            print(f"{playbook.name}  ({playbook.file})")
            for trigger in playbook.triggers:
                print(f"  on {trigger.describe()}")
            if playbook.manual:
                print("  manual (run by hand only)")
            for line in playbook.doc.splitlines():
                print(f"    {line}")
        return 0
    if args.command == "replay":
        try:
            body = args.file.read_bytes()
        except OSError as e:
            print(f"responder: cannot read {args.file}: {e}", file=sys.stderr)
            return 2
        return asyncio.run(_replay(body, settings, playbooks, redactor))
    return _serve(settings, redactor, playbooks, args.supervised_by)


def _serve(
    settings: Settings,
    redactor: Redactor,
    playbooks: list[Playbook],
    supervisor: int | None = None,
) -> int:
    """The daemon; or, for several processes, their supervisor; or, under one, one of them."""
    from responder import supervisor as supervision
    from responder.web.app import server_options

    if supervisor is None and settings.process_count > 1:
        try:
            return supervision.supervise(settings, redactor)
        except ConfigError as e:
            print(f"responder: {e}", file=sys.stderr)
            return 2
        except Exception:
            log.exception("supervisor.crashed")
            return 1
    if supervisor is not None and not supervision.follow_supervisor(supervisor):
        print("responder: the supervisor is gone; not starting", file=sys.stderr)
        return 1
    log.info("daemon.starting", settings=settings.public())
    started = False

    async def mark_started(_app: web.Application) -> None:
        nonlocal started
        started = True  # the last start-up step: every context before it is up

    async def stop_on_hangup(_app: web.Application) -> None:
        """SIGHUP (a closed terminal, `kill -HUP`; there is nothing to reload) stops the daemon
        as SIGTERM does, draining its jobs; by default it ended the process on the spot."""

        def hang_up() -> None:
            log.warning("daemon.stopping", signal="SIGHUP")
            raise web.GracefulExit()

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hang_up)

    try:
        # The playbooks loaded above: importing them again would run their modules' code twice.
        app = create_app(settings, redactor=redactor, playbooks=playbooks)
        app.on_startup.append(stop_on_hangup)
        app.on_startup.append(mark_started)
        _freeze_what_was_loaded()
        web.run_app(
            app,
            loop=uvloop.new_event_loop(),  # measured: intake throughput, see bench/RESULTS.md
            host=settings.host,
            port=settings.port,
            print=None,
            shutdown_timeout=settings.shutdown_grace,
            # Under a supervisor, its children share the port: the kernel spreads connections.
            reuse_port=supervisor is not None or None,
            **server_options(settings),
        )
    except (ConfigError, PlaybookLoadError) as e:  # found while starting: a secret file, a name
        print(f"responder: {e}", file=sys.stderr)
        return 2
    except StoreUnavailable as e:
        if started:  # while stopping: a crash like any other
            log.exception("daemon.crashed")
        else:  # e.g. no database listening: nothing could be accepted
            log.error("daemon.start_failed", error=str(e))
        return 1
    except Exception:
        # One JSON line, as every other: an uncaught exception's traceback is written piece by
        # piece, and the processes sharing this output (a supervisor, its other children) would
        # write their lines into the middle of its lines.
        log.exception("daemon.crashed")
        return 1
    return 0


def _freeze_what_was_loaded() -> None:
    """What is loaded by now (modules, playbooks, the app) lives as long as the daemon: frozen out
    of the cyclic garbage collector, it is no longer walked by each full collection (30-42 ms each,
    no request answered meanwhile; none came in 20 s of load once frozen: bench/RESULTS.md).

    Before start-up, so that nothing short-lived is frozen (a spare worker's pipes, a recovered
    job): cycles among frozen objects are never collected. Not in `create_app`, for the same
    reason: tests build many apps in one process."""
    gc.collect()  # the loading's own garbage, before what is left is frozen for good
    gc.freeze()


async def _replay(
    body: bytes, settings: Settings, playbooks: list[Playbook], redactor: Redactor
) -> int:
    """Match the payload and run each matched playbook against a throwaway backend, preview only."""
    from responder.replay import replay

    with tempfile.TemporaryDirectory(prefix="responder-replay-") as scratch:
        params = {"target_url": settings.probe_url} if settings.probe_url else {}
        results = await replay(body, playbooks, Path(scratch), redactor, params)
    print(json.dumps(results, indent=2))
    return 0 if all(r["outcome"] in ("previewed", "no playbook matched") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
