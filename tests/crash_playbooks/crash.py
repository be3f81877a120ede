"""Playbooks for the crash test: one slow stack update, one instant job per acknowledgement."""

from responder.playbook import Context, on, playbook


@playbook(project="crashtest", program="tests.programs.slow:pulumi_program")
@on("incident.triggered")
async def slow_up(ctx: Context) -> None:
    """Update a stack whose only resource takes as many seconds to create as the title says."""
    seconds = ctx.incident.title.split()[-1] if ctx.incident else "0"
    await ctx.stack.set_config({"sleep_seconds": seconds})
    await ctx.stack.up()


@on("incident.acknowledged")
async def note(ctx: Context) -> None:
    """Log the acknowledgement; touches no stack."""
    ctx.log.info("crash.noted")
