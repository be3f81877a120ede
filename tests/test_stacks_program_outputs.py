"""Outputs taken from what the inline program registered with the engine: values as the CLI prints
them, secret when a secret is marked anywhere inside, and left to the CLI when not readable."""

from typing import Any

from google.protobuf import json_format, struct_pb2

from responder import logs
from responder.stacks import results
from responder.stacks.sdk import SECRET_SIGNATURE, SECRET_VALUE, UNKNOWN, ProgramOutputs


def secret(value: Any) -> dict[str, Any]:
    return {SECRET_SIGNATURE: SECRET_VALUE, "value": value}


def registered(outputs: dict[str, Any]) -> ProgramOutputs:
    program = ProgramOutputs(lambda: None)
    program.registered = json_format.ParseDict(outputs, struct_pb2.Struct())
    return program


def test_secrets_anywhere_inside_are_marked_and_unwrapped() -> None:
    program = registered(
        {
            "plain": "visible",
            "port": 5432,
            "ratio": 0.5,
            "nested": {"password": secret("hunter22"), "port": 5432},
            "listed": [1, secret(["a", "b"])],
            "top": secret("s3cret-value"),
        }
    )
    outputs = program.take()
    assert outputs is not None
    shown = {name: (o.value, o.secret) for name, o in outputs.items()}
    assert shown == {
        "plain": ("visible", False),
        "port": (5432, False),
        "ratio": (0.5, False),
        "nested": ({"password": "hunter22", "port": 5432}, True),
        "listed": ([1, ["a", "b"]], True),
        "top": ("s3cret-value", True),
    }
    assert isinstance(outputs["port"].value, int)
    assert program.take() is None  # taken once: a later step's run is not this one's


def test_values_the_cli_would_show_otherwise_are_left_to_it() -> None:
    asset = {SECRET_SIGNATURE: "c44067f5952c0a294b673a41bacd8c17", "path": "/x"}
    for value in (UNKNOWN, {"a": [UNKNOWN]}, asset, secret(UNKNOWN)):
        assert registered({"out": value}).take() is None, value
    assert ProgramOutputs(lambda: None).take() is None  # the program registered nothing


def test_a_secret_output_is_masked_as_the_logs_mask_secrets() -> None:
    assert results.MASK == logs.MASK
