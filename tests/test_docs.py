"""The README's settings and routes tables stay true: every setting and every route is documented."""

import re
from dataclasses import fields
from pathlib import Path

import pytest

from responder.config import PREFIX, Settings
from responder.daemon import create_app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def documented_routes() -> set[str]:
    """`METHOD /path` for every route of the app, choices in a path spelled out one by one."""
    app = create_app(Settings(data_dir=Path("unused")))
    routes: set[str] = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue  # aiohttp adds HEAD beside every GET; "*" only answers other methods with 405
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info["formatter"]
        pattern = info.get("pattern")
        choices = {
            name: alternatives.split("|")
            for name, alternatives in re.findall(
                r"\(\?P<(\w+)>([\w|]+)\)", pattern.pattern if pattern else ""
            )
        }
        expanded = [path]
        for name, options in choices.items():
            expanded = [p.replace(f"{{{name}}}", option) for p in expanded for option in options]
        routes |= {f"{route.method} {p}" for p in expanded}
    return routes


def test_every_setting_is_in_the_readme() -> None:
    missing = [
        f"{PREFIX}{f.name.upper()}"
        for f in fields(Settings)
        if f"{PREFIX}{f.name.upper()}" not in README
    ]
    assert not missing, f"settings missing from README.md: {missing}"


@pytest.mark.parametrize("route", sorted(documented_routes()))
def test_every_route_is_in_the_readme(route: str) -> None:
    assert f"`{route}" in README, f"{route} is not documented in README.md"


def test_the_route_list_is_not_empty() -> None:
    # Guards the test above against a router that lists nothing (it would then check nothing).
    assert {"POST /webhooks/pagerduty", "GET /jobs/{id}", "POST /jobs/{id}/reject"} <= set(
        documented_routes()
    )
