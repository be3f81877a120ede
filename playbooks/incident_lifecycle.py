"""Built-in playbooks: the incident's diagnostics stack follows the incident's lifecycle."""

import json

from responder.playbook import Context, on
from responder.stacks import StackNotFoundError

HOUR = 3600.0
RESOLVE_GRACE = 300.0  # destroy 5 minutes after resolve, unless the incident is reopened first
IDLE_TTL = 6 * HOUR  # an incident silent this long has been forgotten: reclaim its stack
MAX_AGE = 24 * HOUR  # no burner stack lives longer than a day, whatever the activity


@on("incident.triggered", "incident.reopened", idle_ttl=IDLE_TTL, max_age=MAX_AGE)
async def provision_diagnostics(ctx: Context) -> None:
    """Provision the incident's diagnostics stack: a scratch directory and an HTTP probe."""
    await ctx.stack.set_config(stack_config(ctx))
    result = await ctx.stack.up()
    ctx.log.info("diagnostics.provisioned", outputs=result.masked_outputs())


@on(
    "incident.acknowledged",
    "incident.escalated",
    "incident.priority_updated",
    "incident.annotated",
    coalesce=True,
)
async def refresh_diagnostics(ctx: Context) -> None:
    """Probe again and bring the stack's incident context up to date (provisions it if missing)."""
    if ctx.event.data.get("type") == "incident":  # a note carries only a reference to the incident
        await ctx.stack.set_config(stack_config(ctx))
    try:
        await ctx.stack.refresh()
    except StackNotFoundError:
        ctx.log.info("diagnostics.missing", action="provisioning instead of refreshing")
        await ctx.stack.set_config(stack_config(ctx))
    result = await ctx.stack.up()
    ctx.log.info("diagnostics.refreshed", outputs=result.masked_outputs())


@on(
    "incident.resolved",
    allow_destroy=True,
    delay=RESOLVE_GRACE,
    cancel_on=("incident.reopened", "incident.triggered"),
)
async def destroy_diagnostics(ctx: Context) -> None:
    """Destroy and remove the incident's stack after the resolve grace period (a reopen cancels it).

    Destroying is allowed because the stack is ephemeral and owned by the incident.
    """
    try:
        await ctx.stack.destroy(remove=True)
    except StackNotFoundError:
        ctx.log.info("diagnostics.already_gone")


def stack_config(ctx: Context) -> dict[str, object]:
    """The burner program's config for this incident, probing the operator's `target_url`.

    None of these playbooks declares run params, so `ctx.params` holds only the operator's defaults.
    The scratch root is not config: the program takes it from the daemon's environment.
    """
    incident = ctx.incident
    context: dict[str, object] = {}
    if incident is not None:
        context = {
            "title": incident.title,
            "status": incident.status,
            "urgency": incident.urgency,
            "number": incident.number,
            "priority": incident.priority.summary if incident.priority else None,
            "service": incident.service.summary if incident.service else None,
            "incident_key": incident.incident_key,
            "html_url": incident.html_url,
            "event_type": ctx.event.type,
        }
    config: dict[str, object] = {
        "incident_id": ctx.event.incident_id or ctx.event.id,
        "incident": json.dumps({k: v for k, v in context.items() if v not in (None, "")}),
    }
    if ctx.params.get("target_url"):
        config["target_url"] = ctx.params["target_url"]
    return config
