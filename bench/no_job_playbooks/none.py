"""The intake benchmark's "no job" variant: a playbook no delivery of the bench matches, so that
intake is measured alone, without the job each delivery otherwise makes and runs meanwhile."""

from responder.playbook import Context, on


@on("incident.priority_updated")
async def none(ctx: Context) -> None:
    """Never runs: the bench sends only `incident.triggered`."""
