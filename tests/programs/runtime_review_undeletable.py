"""A program whose one resource refuses to be deleted: every destroy of its stack fails."""

from typing import Any

from pulumi.dynamic import CreateResult, Resource, ResourceProvider


class _UndeletableProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_="undeletable", outs=props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        raise RuntimeError("this resource refuses to be deleted")


class Undeletable(Resource, module="tests", name="Undeletable"):
    def __init__(self, name: str) -> None:
        super().__init__(_UndeletableProvider(), name, {})


def pulumi_program() -> None:
    Undeletable("undeletable")
