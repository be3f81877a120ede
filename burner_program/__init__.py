"""The burner program: a per-incident diagnostics stack, runnable inline or with `pulumi up`."""

from burner_program.program import pulumi_program

__all__ = ["pulumi_program"]
