"""Incident ids to stack names: plain ids keep their names, every other id gets its own safe name."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from responder.playbook import stack_name_for

# Pulumi's rule for stack names.
PULUMI_STACK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def assert_valid(name: str) -> None:
    assert PULUMI_STACK_NAME.fullmatch(name), name
    assert name not in (".", "..") and "/" not in name and "\\" not in name


def test_plain_ids_keep_the_names_existing_stacks_have() -> None:
    for incident_id in ("Q1X7KD4R9PVM2T", "am-1a2b3c4d-fp01", "ev2-" + "f" * 20, "a_b", "x" * 80):
        assert stack_name_for(incident_id) == f"incident-{incident_id}"


def test_odd_ids_each_get_their_own_valid_name() -> None:
    long_a, long_b = "x" * 80 + "a" * 20, "x" * 80 + "b" * 20
    odd = [
        "..",
        ".",
        "",
        "../../x",
        "/",
        "-",
        "abc",
        "abc-",
        "-abc",
        "a.b",
        "a-b",
        "a b",
        "ü",
        "日本",
        "ключ",
        "\ud800",
        "x" * 5000,
        "x" * 5001,
        long_a,
        long_b,
        "x" * 81,
    ]
    names = [stack_name_for(i) for i in odd]
    assert len(set(names)) == len(odd), list(zip(odd, names, strict=True))
    for name in names:
        assert_valid(name)
    assert stack_name_for("a.b").startswith("incident-a-b.")  # still readable


def test_a_hashed_name_is_never_the_name_of_a_plain_id() -> None:
    hashed = stack_name_for("a.b")
    lookalike = hashed.removeprefix("incident-")  # e.g. "a-b.<hash>", passed as an id
    assert stack_name_for(lookalike) != hashed


ids = st.one_of(st.text(), st.text(alphabet="ab-_./ \\ü", max_size=120))


@settings(max_examples=2000)
@given(st.lists(ids, unique=True, min_size=2, max_size=8))
def test_distinct_ids_never_share_a_stack(incident_ids: list[str]) -> None:
    names = [stack_name_for(i) for i in incident_ids]
    assert len(set(names)) == len(names)


@settings(max_examples=2000)
@given(st.one_of(ids, st.text(min_size=90, max_size=400)))
def test_every_name_is_a_valid_pulumi_stack_name(incident_id: str) -> None:
    name = stack_name_for(incident_id)
    assert_valid(name)
    assert name == stack_name_for(incident_id)  # stable: the same incident finds its stack again
