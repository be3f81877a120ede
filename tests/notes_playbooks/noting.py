"""A playbook that only writes a note (no stack operation): the notes crash test's."""

from responder.playbook import Context, on


@on("incident.triggered")
async def note_only(ctx: Context) -> None:
    """Notes the incident; touches no stack."""
    await ctx.note("Looked at it.", fields={"finding": "nothing to see"})
