"""Playbooks for the multi-node tests: provision, refresh then update, destroy; and one that logs."""

from responder.playbook import Context, Secret, on, playbook

PROJECT = "multinode"
PROGRAM = "tests.programs.multinode:pulumi_program"
TOKEN = "multinode-token-0123456789"


@playbook(project=PROJECT, program=PROGRAM)
@on("incident.triggered")
async def provision(ctx: Context) -> None:
    """Create the incident's stack; its resource takes as many seconds as the title's last word."""
    seconds = ctx.incident.title.split()[-1] if ctx.incident else "0"
    await ctx.stack.set_config({"sleep_seconds": seconds, "token": Secret(TOKEN)})
    await ctx.stack.up()


@playbook(project=PROJECT, program=PROGRAM)
@on("incident.acknowledged")
async def refresh_and_update(ctx: Context) -> None:
    """Refresh (decrypts the state: needs the salt), then update (runs the program: needs config)."""
    await ctx.stack.refresh()
    await ctx.stack.up()


@playbook(project=PROJECT, program=PROGRAM, allow_destroy=True)
@on("incident.resolved")
async def teardown(ctx: Context) -> None:
    """Destroy and remove the stack."""
    await ctx.stack.destroy(remove=True)


@on("incident.annotated")
async def noted(ctx: Context) -> None:
    """Touches no stack: the flood of the database-outage test."""
    ctx.log.info("multinode.noted")
