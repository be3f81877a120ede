"""Each stack's settings file, kept in the shared store too, so that any node can run the stack."""

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from responder.logs import get_logger
from responder.stacks.errors import SettingsUnavailable
from responder.stacks.interface import StackSettingsStore, StackTarget
from responder.store import StoreUnavailable

T = TypeVar("T")

log = get_logger("responder.stacks")

ATTEMPT_DELAYS = (0.2, 1.0, 3.0)  # seconds between the tries of a read or save


class SettingsFiles:
    """`Pulumi.<stack>.yaml` holds the stack's config (secrets encrypted) and its passphrase salt:
    without it, another node would run the stack without its config and could not decrypt its
    secrets (pulumi/pulumi#8408). Before each operation the stored copy is written into the
    workspace; after it, a changed file is stored (or the stored copy deleted with the stack).

    Either failing fails the operation (retryably): one run with a stale copy, or a change kept
    only here, would lose config for every node."""

    def __init__(self, store: StackSettingsStore | None) -> None:
        self.store = store

    async def restore(self, work_dir: Path, target: StackTarget) -> str | None:
        """Put the stored file in the workspace; returns it (None when none is stored, e.g. a
        stack from before the store kept them: the workspace's own file, if any, stays)."""
        if self.store is None:
            return None
        text = await self._call(
            "read", target, lambda store: store.stack_settings(target.project, target.name)
        )
        path = _path(work_dir, target)
        if text is not None and _read(path) != text:
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(text)
            os.replace(tmp, path)  # a CLI never reads it half-written
        return text

    async def save(
        self,
        work_dir: Path,
        target: StackTarget,
        stored: str | None,
        held: tuple[int, int] | None = None,
    ) -> None:
        """Store the workspace's file if the operation changed it (`stored`: what `restore` saw);
        `held`: only while that (job id, fence) holds the job (`LeaseLost` otherwise)."""
        if self.store is None:
            return
        text = _read(_path(work_dir, target))
        if text == stored:
            return
        await self._call(
            "save",
            target,
            lambda store: store.save_stack_settings(target.project, target.name, text, held=held),
        )

    async def _call(
        self,
        what: str,
        target: StackTarget,
        fn: Callable[[StackSettingsStore], Awaitable[T]],
    ) -> T:
        """`fn`, tried a few times over a few seconds (a store that blinks), then a retryable error."""
        assert self.store is not None
        for delay in (*ATTEMPT_DELAYS, None):
            try:
                return await fn(self.store)
            except StoreUnavailable as e:
                if delay is None:
                    raise SettingsUnavailable(
                        f"cannot {what} the stack's settings in the store: {e}", stack=target.name
                    ) from e
                log.warning("stack.settings_retrying", stack=target.name, action=what, error=str(e))
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")


def _path(work_dir: Path, target: StackTarget) -> Path:
    return work_dir / f"Pulumi.{target.name}.yaml"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
