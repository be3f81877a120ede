"""Try playbooks on a saved payload without changing anything: preview only, on a throwaway backend."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from responder.logs import Redactor, get_logger
from responder.playbook import Context, Playbook, match
from responder.sources import InvalidDelivery, pagerduty
from responder.stacks import PulumiEnvironment, StackError, StackOperations, StackTarget, StepResult
from responder.stacks.operations import config_values

log = get_logger("responder.replay")


class PreviewStack:
    """A `StackHandle` that previews instead of changing: up and refresh preview, destroy is reported."""

    def __init__(self, ops: StackOperations, target: StackTarget) -> None:
        self.ops = ops
        self.target = target
        self.name = target.name
        self.plans: list[dict[str, Any]] = []

    async def set_config(self, config: Mapping[str, object]) -> StepResult:
        # Only the throwaway workspace is touched.
        return await self._run(
            {"op": "set_config", "create": True, "config": config_values(config)}, "set_config"
        )

    async def up(self) -> StepResult:
        return await self._preview("up")

    async def refresh(self) -> StepResult:
        return await self._preview("refresh")

    async def preview(self) -> StepResult:
        return await self._preview("preview")

    async def outputs(self) -> StepResult:
        return StepResult("outputs", self.name, 0.0)

    async def destroy(self, *, remove: bool = True) -> StepResult:
        self.plans.append(
            {
                "instead_of": "destroy",
                "would": "destroy every resource" + (" and remove the stack" if remove else ""),
            }
        )
        return StepResult("destroy", self.name, 0.0)

    async def _preview(self, instead_of: str) -> StepResult:
        result = await self._run({"op": "preview", "create": True}, instead_of)
        self.plans.append({"instead_of": instead_of, "changes": result.changes})
        return result

    async def _run(self, step: Any, label: str) -> StepResult:
        log.info("replay.step", step=step["op"], instead_of=label)
        return (await self.ops.run(self.target, [step]))[-1]


async def replay(
    body: bytes,
    playbooks: list[Playbook],
    scratch: Path,
    redactor: Redactor,
    params: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    try:
        event = pagerduty.parse(body)
    except InvalidDelivery as e:
        return [{"playbook": None, "outcome": "invalid payload", "error": str(e)}]
    matched = match(playbooks, event)
    log.info("replay.matched", event_type=event.type, playbooks=[p.name for p in matched])
    ops = StackOperations(
        PulumiEnvironment.create(scratch / "data"), redactor=redactor, warm_workers=0
    )
    await ops.start()
    results: list[dict[str, Any]] = []
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
