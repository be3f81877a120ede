"""The daemon answers only to the Host names it serves: on loopback (the default), loopback names,
so that another site's page cannot read the API or the web page through DNS rebinding."""

from collections.abc import Awaitable, Callable

import pytest

from responder.config import is_loopback
from responder.web.hosts import host_name
from tests.helpers import API_TOKEN, Client, LogCapture, pd_event

MakeClient = Callable[..., Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
LOOPBACK = ["127.0.0.1:8080", "localhost", "LOCALHOST:80", "[::1]:8080", "127.1.2.3", "a.localhost"]


async def status(client: Client, method: str, path: str, host: str) -> int:
    response = await client.http.request(method, path, headers={"Host": host, **AUTH})
    return response.status


async def test_on_loopback_another_host_is_refused_everywhere(
    make_client: MakeClient, logs: LogCapture
) -> None:
    client = await make_client([])
    for method, path in [("GET", "/jobs"), ("GET", "/ui/"), ("GET", "/metrics"), ("GET", "/")]:
        response = await client.http.request(method, path, headers={"Host": "rebound.example"})
        assert response.status == 421, (path, await response.text())
        assert "RESPONDER_ALLOWED_HOSTS" in (await response.json())["error"]
    delivery = await client.deliver(
        pd_event("incident.triggered"), "h-1", headers={"Host": "x.test"}
    )
    assert delivery.status == 421 and await client.store.delivery_ids() == set()
    refused = logs.events("http.host_refused")
    assert len(refused) == 5 and refused[0]["host"] == "rebound.example"
    for host in LOOPBACK:
        assert await status(client, "GET", "/jobs", host) == 200, host


async def test_the_hosts_allowed_are_answered_with_the_loopback_names(
    make_client: MakeClient,
) -> None:
    client = await make_client([], allowed_hosts=("Responder.Example", "[2001:DB8:0::1]"))
    for host in ["responder.example", "RESPONDER.example:443", "[2001:db8::1]:8080", *LOOPBACK]:
        assert await status(client, "GET", "/jobs", host) == 200, host
    for host in ["evil.example", "responder.example.evil", "2001:db8::2"]:
        assert await status(client, "GET", "/jobs", host) == 421, host


@pytest.mark.parametrize(
    ("bind", "allowed", "answered"),
    [
        ("0.0.0.0", (), True),  # beyond loopback: a load balancer's or a pager's names
        ("127.0.0.1", ("*",), True),
        ("0.0.0.0", ("responder.example",), False),
        ("::1", (), False),
        ("localhost", (), False),
    ],
)
async def test_which_hosts_are_answered_depends_on_the_bind_address_and_the_setting(
    make_client: MakeClient, bind: str, allowed: tuple[str, ...], answered: bool
) -> None:
    client = await make_client([], host=bind, allowed_hosts=allowed)
    assert await status(client, "GET", "/healthz", "some.name.example") == (
        200 if answered else 421
    )


def test_the_name_of_a_host_header() -> None:
    assert host_name("Example.COM:8080") == "example.com"
    assert host_name("[::1]:80") == "::1" and host_name("[::1]") == "::1"
    assert host_name("[2001:DB8:0::1]:8443") == "2001:db8::1"
    assert host_name("[::ffff:10.0.0.7]") == host_name("[::ffff:a00:7]") == "::ffff:a00:7"
    assert (
        host_name("example.com") == "example.com" and host_name("example.com:x") == "example.com:x"
    )
    assert is_loopback("127.255.0.1") and is_loopback("::1") and is_loopback("x.localhost")
    assert not is_loopback("localhost.example") and not is_loopback("10.0.0.1")
