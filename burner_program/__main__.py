"""Entry point for `pulumi up` run by hand in this directory (the daemon runs the program inline)."""

from burner_program.program import pulumi_program

pulumi_program()
