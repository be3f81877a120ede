"""Declare the burner stack's resources from stack config.

Config keys (all optional except where noted):
  incident_id      the incident the stack belongs to (recorded in the scratch directory's context)
  incident         JSON object with the incident context written into the scratch directory
  scratch_root     where scratch directories live (default: $TMPDIR/responder-scratch); each stack's
                   is `<scratch_root>/<project>/<stack>`, refused if it resolves outside the root
  target_url       URL to probe; no probe resource when unset
  request          "timezone" or "location": the original tutorial's host diagnostics

To deploy real cloud resources instead, replace this function; the daemon only needs a callable
that declares resources and exports outputs.
"""

import json
import os
import tempfile

import pulumi

from burner_program.providers import HostDiagnostics, HttpProbe, ScratchDirectory, scratch_path


def pulumi_program() -> None:
    """Declare the incident's scratch directory, probe and diagnostics."""
    config = pulumi.Config()
    incident_id = config.get("incident_id") or pulumi.get_stack()
    incident = json.loads(config.get("incident") or "{}")
    scratch_root = os.path.realpath(
        config.get("scratch_root") or os.path.join(tempfile.gettempdir(), "responder-scratch")
    )

    # Named by project and stack, which together name one stack only (incident ids may not be safe).
    scratch = ScratchDirectory(
        "scratch",
        path=scratch_path(scratch_root, pulumi.get_project(), pulumi.get_stack()),
        root=scratch_root,
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
