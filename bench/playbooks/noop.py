"""The intake benchmark's playbook: every trigger makes a job that touches no stack."""

from responder.playbook import Context, on


@on("incident.triggered")
async def noop(ctx: Context) -> None:
    """Run and finish at once, so intake is measured, not Pulumi."""
