"""A program that raises: every `up` of its stack fails as a program error."""


def pulumi_program() -> None:
    raise RuntimeError("the program's own bug")
