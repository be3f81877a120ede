"""The dynamic-provider plugin the CLI starts: Pulumi's `pulumi.dynamic`, ended at once by a SIGINT.

`pulumi.dynamic` waits for a KeyboardInterrupt in `Event().wait()`. Python runs signal handlers in
the main thread only, between bytecodes: a SIGINT the kernel hands to one of gRPC's threads never
wakes that wait, and one that comes while the provider is still starting can be raised inside an
import callback, printed as "Exception ignored" and lost. Either way the provider outlives the CLI's
5 s grace until its SIGKILL, and the operation that closes it waits those 5 s.

Here SIGINT has its default action instead: the provider ends at once. The CLI sends it when it
closes the provider: after the operation's steps (a graceful cancel, as the worker's SIGTERM asks,
also waits for them), when nothing is lost. Only a CLI that is itself terminated (interrupted
twice, by hand) closes it while a step may still run: that step's result is lost either way (the
CLI stops serving it), and the step now stops where it is instead of finishing unrecorded.

Started by `pulumi-resource-pulumi-python`, which scripts/ensure-pulumi writes.
"""

import runpy
import signal

signal.signal(signal.SIGINT, signal.SIG_DFL)
runpy.run_module("pulumi.dynamic", run_name="__main__", alter_sys=True)
