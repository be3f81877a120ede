"""Declare the burner stack's resources from stack config.

Config keys (all optional):
  incident_id      the incident the stack belongs to (recorded in the scratch directory's context)
  incident         JSON object with the incident context written into the scratch directory
  target_url       URL to probe; no probe resource when unset
  request          "timezone" or "location": the original tutorial's host diagnostics
  access_token     a secret, exported as a secret output

Each stack's scratch directory is `<root>/<project>/<stack>`, refused if it resolves outside the root.
The root is never a config key (stack config outlives whoever set it): it is `$BURNER_SCRATCH_ROOT`,
which the daemon sets to `<data dir>/scratch`, else `$TMPDIR/responder-scratch` when run by hand.

To deploy real cloud resources instead, replace this function; the daemon only needs a callable
that declares resources and exports outputs.
"""

import json

import pulumi

from burner_program.providers import (
    HostDiagnostics,
    HttpProbe,
    ScratchDirectory,
    scratch_path,
    scratch_root,
)


def pulumi_program() -> None:
    """Declare the incident's scratch directory, probe and diagnostics."""
    config = pulumi.Config()
    incident_id = config.get("incident_id") or pulumi.get_stack()
    incident = json.loads(config.get("incident") or "{}")

    # Named by project and stack, which together name one stack only (incident ids may not be safe).
    scratch = ScratchDirectory(
        "scratch",
        path=scratch_path(scratch_root(), pulumi.get_project(), pulumi.get_stack()),
        context={"incident_id": incident_id, **incident},
    )
    pulumi.export("scratch_dir", scratch.path)
    pulumi.export("scratch_access_key", scratch.access_key)

    target_url = config.get("target_url")
    if target_url:
        probe = HttpProbe("probe", url=target_url)
        pulumi.export("probe_url", probe.url)
        pulumi.export("probe_status", probe.status_code)
        pulumi.export("probe_latency_ms", probe.latency_ms)
        pulumi.export("probe_error", probe.error)

    request = config.get("request")
    if request:
        diagnostics = HostDiagnostics("diagnostics", request=request)
        pulumi.export(request, diagnostics.data)

    # A secret output: consumers see it masked unless they ask for secrets explicitly.
    token = config.get_secret("access_token")
    if token is not None:
        pulumi.export("access_token", token)
