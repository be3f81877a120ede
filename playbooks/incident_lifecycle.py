"""Built-in playbooks: the incident's diagnostics stack follows its lifecycle, noted on the incident."""

from responder.playbook import Context, StackNotFoundError, on, playbook

RESOLVE_GRACE = 300.0  # destroy 5 minutes after resolve, unless the incident is reopened first
REOPENED = ("incident.reopened", "incident.triggered")
PROBE_RESULT = ("probe_status", "probe_error")  # what makes a refresh worth a note (not latency)


@playbook(idle_ttl=6 * 3600, max_age=24 * 3600)  # silent 6 h: forgotten; no stack outlives a day
@on("incident.triggered", "incident.reopened")
async def provision_diagnostics(ctx: Context) -> None:
    """Provision the incident's diagnostics stack: a scratch directory and an HTTP probe."""
    async with ctx.failure_noted("Provisioning the diagnostics stack"):
        await ctx.stack.set_config(ctx.incident_config())
        result = await ctx.stack.up()
    await ctx.note(f"Diagnostics stack {ctx.stack.name} is up.", fields=result.masked_outputs())


@playbook(coalesce=True)
@on("incident.acknowledged", "incident.escalated", "incident.priority_updated")
@on("incident.annotated")
async def refresh_diagnostics(ctx: Context) -> None:
    """Probe again, update the incident context (provision if missing); note a new probe result."""
    async with ctx.failure_noted("Refreshing the diagnostics stack"):
        if ctx.incident and not ctx.incident.partial:  # a note only names it: keep its context
            await ctx.stack.set_config(ctx.incident_config())
        try:
            await ctx.stack.refresh()
        except StackNotFoundError:
            await ctx.stack.set_config(ctx.incident_config())
        found = (await ctx.stack.up()).masked_outputs()
    before = await ctx.stack.recorded_outputs() or {}
    if any(before.get(name) != found.get(name) for name in PROBE_RESULT):
        await ctx.note(f"Diagnostics stack {ctx.stack.name} changed.", fields=found)


@playbook(allow_destroy=True, delay=RESOLVE_GRACE, cancel_on=REOPENED)
@on("incident.resolved")
async def destroy_diagnostics(ctx: Context) -> None:
    """Destroy the incident's stack after the resolve grace (a reopen cancels it); it owns the stack."""
    async with ctx.failure_noted("Destroying the diagnostics stack"):  # the reaper retries it
        await ctx.stack.destroy(remove=True, missing_ok=True)
    await ctx.note(f"Diagnostics stack {ctx.stack.name} destroyed.")
