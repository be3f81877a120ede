"""Built-in playbooks: the incident's diagnostics stack follows the incident's lifecycle."""

from responder.playbook import Context, StackNotFoundError, on, playbook

RESOLVE_GRACE = 300.0  # destroy 5 minutes after resolve, unless the incident is reopened first
REOPENED = ("incident.reopened", "incident.triggered")


@playbook(idle_ttl=6 * 3600, max_age=24 * 3600)  # silent 6 h: forgotten; no stack outlives a day
@on("incident.triggered", "incident.reopened")
async def provision_diagnostics(ctx: Context) -> None:
    """Provision the incident's diagnostics stack: a scratch directory and an HTTP probe."""
    await ctx.stack.set_config(ctx.incident_config())
    result = await ctx.stack.up()
    ctx.log.info("diagnostics.provisioned", outputs=result.masked_outputs())


@playbook(coalesce=True)
@on("incident.acknowledged", "incident.escalated", "incident.priority_updated")
@on("incident.annotated")
async def refresh_diagnostics(ctx: Context) -> None:
    """Probe again and bring the stack's incident context up to date (provisions it if missing)."""
    if ctx.incident and not ctx.incident.partial:  # a note only names it: keep the stack's context
        await ctx.stack.set_config(ctx.incident_config())
    try:
        await ctx.stack.refresh()
    except StackNotFoundError:
        ctx.log.info("diagnostics.missing", action="provisioning instead of refreshing")
        await ctx.stack.set_config(ctx.incident_config())
    result = await ctx.stack.up()
    ctx.log.info("diagnostics.refreshed", outputs=result.masked_outputs())


@playbook(allow_destroy=True, delay=RESOLVE_GRACE, cancel_on=REOPENED)
@on("incident.resolved")
async def destroy_diagnostics(ctx: Context) -> None:
    """Destroy the incident's stack after the resolve grace (a reopen cancels it); it owns the stack."""
    result = await ctx.stack.destroy(remove=True, missing_ok=True)
    if result.details.get("already_gone"):
        ctx.log.info("diagnostics.already_gone")
