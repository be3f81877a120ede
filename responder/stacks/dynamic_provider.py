"""The dynamic-provider plugin the CLI starts: Pulumi's `pulumi.dynamic`, ended at once by a SIGINT.

`pulumi.dynamic` waits for a KeyboardInterrupt in `Event().wait()`. Python runs signal handlers in
the main thread only, between bytecodes: a SIGINT the kernel hands to one of gRPC's threads never
wakes that wait, and one that comes while the provider is still starting can be raised inside an
import callback, printed as "Exception ignored" and lost. Either way the provider outlives the CLI's
5 s grace until its SIGKILL, and the operation that closes it waits those 5 s. The CLI sends the
SIGINT only once it is done with the provider (after its Cancel call, and it would SIGKILL it
anyway), so the default action, ending at once, loses nothing.

Started by `pulumi-resource-pulumi-python`, which scripts/ensure-pulumi writes.
"""

import runpy
import signal

signal.signal(signal.SIGINT, signal.SIG_DFL)
runpy.run_module("pulumi.dynamic", run_name="__main__", alter_sys=True)
