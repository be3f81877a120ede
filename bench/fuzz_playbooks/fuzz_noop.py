"""Playbooks for fuzzing: broad triggers so generated events reach the matcher, the store and the
runner, but every job finishes at once without a single Pulumi operation."""

from responder.playbook import Context, on, playbook


@on("incident.triggered", "incident.reopened", "incident.escalated")
@on("incident.*", source="alertmanager", labels={"service": "check*"})
@on("incident.triggered", severity="crit*", title=r"5xx|error", service="checkout*")
async def fuzz_noop(ctx: Context) -> None:
    """Finish at once."""


@playbook(delay=3600, cancel_on=("incident.reopened", "incident.triggered"))
@on("incident.resolved")
async def fuzz_delayed(ctx: Context) -> None:
    """Wait `scheduled` for an hour, so later triggers exercise the store's cancel path."""


@playbook(coalesce=True)
@on("incident.acknowledged", "incident.priority_updated", "incident.annotated")
async def fuzz_coalesced(ctx: Context) -> None:
    """Queued runs collapse into the newest one."""
