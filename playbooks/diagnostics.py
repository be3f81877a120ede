"""The original tutorial's self-service diagnostics: a throwaway stack reporting on the host."""

from responder.playbook import Context, manual, playbook

REQUESTS = ("timezone", "location")  # what the burner program's HostDiagnostics can report


@playbook(allow_destroy=True, params=("request",))
@manual
async def host_diagnostics(ctx: Context) -> None:
    """Report the host's clock (`request=timezone`) or identity (`request=location`), then clean up.

    Run it by hand: POST /playbooks/host_diagnostics/run?wait=60 with {"params": {"request": "timezone"}}.
    """
    request = ctx.params.get("request", "timezone")
    if request not in REQUESTS:
        raise ValueError(f"request must be one of {list(REQUESTS)}, not {request!r}")
    await ctx.stack.set_config({"request": request})
    result = await ctx.stack.up()
    ctx.log.info("diagnostics.reported", request=request, data=result.outputs[request].value)
    await ctx.stack.destroy(remove=True)
