"""A program without resources that exports its secret config values `token` and `other`."""

import pulumi


def pulumi_program() -> None:
    config = pulumi.Config()
    pulumi.export("token", config.require_secret("token"))
    pulumi.export("other", config.require_secret("other"))
    pulumi.export("plain", config.require("plain"))
