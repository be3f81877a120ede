"""A program that fails, quoting its secret config value `token` in the error, when `fail` is set."""

import pulumi


def pulumi_program() -> None:
    config = pulumi.Config()
    token = config.require_secret("token")
    if config.get_bool("fail"):
        # The plaintext, as a careless program or provider puts it in an error message.
        raise RuntimeError(f"cannot reach the service with token {config.require('token')}")
    pulumi.export("token", token)
