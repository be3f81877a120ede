"""The ownership tags set beside a new stack's first operation: a tag the CLI refused meanwhile is
set again once the operation has ended; only a second refusal fails the request."""

from typing import cast

from pulumi import automation as auto

from responder.stacks.steps import Tagging

TAGS = {"responder:incident": "Q1", "responder:playbook": "p", "responder:delivery": "d"}


class Stack:
    """Records the tags set; refuses the first `refusals` calls, as a CLI busy beside an `up` may."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.tags: dict[str, str] = {}

    def set_tag(self, key: str, value: str) -> None:
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError("error: could not read the stack")
        self.tags[key] = value


def tagging(stack: Stack) -> Tagging:
    tags = Tagging(dict(TAGS))
    tags.stack = cast(auto.Stack, stack)
    tags.start()
    return tags


def test_a_tag_refused_beside_the_operation_is_set_again_after_it() -> None:
    stack = Stack(refusals=1)
    assert tagging(stack).wait() is None
    assert stack.tags == TAGS


def test_a_tag_refused_again_fails_the_request() -> None:
    stack = Stack(refusals=2)
    error = tagging(stack).wait()
    assert isinstance(error, RuntimeError)
    assert stack.tags != TAGS


def test_tags_of_a_stack_that_existed_are_left_alone() -> None:
    tags = Tagging(dict(TAGS))  # no stack: the request did not create one
    assert tags.wait() is None
