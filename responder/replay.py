"""Try playbooks on a saved payload without changing anything: preview only, on a throwaway backend."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from responder.logs import Redactor, get_logger
from responder.playbook import Context, Playbook, match
from responder.sources import InvalidDelivery, pagerduty
from responder.stacks import (
    PulumiEnvironment,
    PulumiOperations,
    StackError,
    StackOperations,
    StackTarget,
    StepResult,
)

log = get_logger("responder.replay")


class PreviewStack:
    """A `StackHandle` that previews instead of changing: up and refresh preview, destroy is reported.

    Only the throwaway backend is touched: config is set there, and each preview runs against it.
    """

    def __init__(self, ops: StackOperations, target: StackTarget) -> None:
        self.ops = ops
        self.target = target
        self.name = target.name
        self.plans: list[dict[str, object]] = []

    async def set_config(self, config: Mapping[str, object]) -> StepResult:
        log.info("replay.step", step="set_config", instead_of="set_config")
        return await self.ops.set_config(self.target, config)

    async def up(self) -> StepResult:
        return await self._preview("up")

    async def refresh(self) -> StepResult:
        return await self._preview("refresh")

    async def preview(self) -> StepResult:
        return await self._preview("preview")

    async def outputs(self) -> StepResult:
        return StepResult("outputs", self.name, 0.0)

    async def recorded_outputs(self) -> dict[str, Any] | None:
        return None  # a replay knows no store: every stack is new to it

    async def destroy(self, *, remove: bool = True, missing_ok: bool = False) -> StepResult:
        """Reported, never run. Whether the real backend has the stack is unknown here (the throwaway
        one starts empty), so `missing_ok` changes nothing: no StackNotFoundError is raised."""
        self.plans.append(
            {
                "instead_of": "destroy",
                "would": "destroy every resource" + (" and remove the stack" if remove else ""),
            }
        )
        return StepResult("destroy", self.name, 0.0)

    async def _preview(self, instead_of: str) -> StepResult:
        log.info("replay.step", step="preview", instead_of=instead_of)
        result = await self.ops.preview(self.target)
        self.plans.append({"instead_of": instead_of, "changes": result.changes})
        return result


async def replay(
    body: bytes,
    playbooks: list[Playbook],
    scratch: Path,
    redactor: Redactor,
    params: Mapping[str, str] | None = None,
) -> list[dict[str, object]]:
    try:
        event = pagerduty.parse(body)
    except InvalidDelivery as e:
        return [{"playbook": None, "outcome": "invalid payload", "error": str(e)}]
    matched = match(playbooks, event)
    log.info("replay.matched", event_type=event.type, playbooks=[p.name for p in matched])
    ops = PulumiOperations(
        PulumiEnvironment.create(scratch / "data"), redactor=redactor, warm_workers=0
    )
    await ops.start()
    results: list[dict[str, object]] = []
    try:
        for playbook in matched:
            stack = PreviewStack(
                ops, StackTarget(playbook.stack_name(event), playbook.project, playbook.program)
            )
            ctx = Context(
                event=event,
                incident=event.incident,
                log=get_logger(f"playbooks.{playbook.name}"),
                stack=stack,
                playbook=playbook.name,
                params={"scratch_root": str(scratch / "scratch"), **(params or {})},
            )
            try:
                await playbook(ctx)
            except StackError as e:
                results.append(
                    {
                        "playbook": playbook.name,
                        "outcome": "failed",
                        "error": str(e),
                        "plans": stack.plans,
                    }
                )
                continue
            results.append(
                {
                    "playbook": playbook.name,
                    "outcome": "previewed",
                    "stack": stack.name,
                    "plans": stack.plans,
                }
            )
    finally:
        await ops.close()
    if not matched:
        results.append(
            {"playbook": None, "outcome": "no playbook matched", "event_type": event.type}
        )
    return results
