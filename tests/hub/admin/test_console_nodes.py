"""The console across nodes sharing a Redis: a sign-in on one node is good on the other (signed cookie),
a logout on one is honoured by the other (revocation in Redis), the audit log is one log, a user's
connections on another node are listed and acted on, and a node that leaves is shown as gone."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import TIMEOUT, http_client, token

ADMIN = "admin-password-for-tests"


async def test_two_nodes_one_console(
    make_hub: Any, redis_server: Any, raw_client: Any, tmp_path: Any
) -> None:
    common = {"redis_urls": [redis_server.url], "node_info_interval": 0.2, "admin_password": ADMIN}
    a = await make_hub(node_name="a", data_dir=str(tmp_path / "a"), **common)
    b = await make_hub(node_name="b", data_dir=str(tmp_path / "b"), **common)
    async with http_client(timeout=TIMEOUT) as http:
        r = await http.post(f"{a.http}/admin/api/login", json={"password": ADMIN})
        csrf = r.json()["csrf"]

        async def nodes(hub: Any) -> dict[str, Any]:
            answer = await http.get(f"{hub.http}/admin/api/nodes")
            assert answer.status_code == 200, answer.text  # the cookie from a's sign-in works on b too
            return answer.json()  # type: ignore[no-any-return]

        async with asyncio.timeout(TIMEOUT):
            await a.sb.node.control.wait_until(lambda: a.sb.node.control.peers() == ["b"])
        assert [n["name"] for n in (await nodes(a))["nodes"]] == ["a", "b"]
        assert [n["name"] for n in (await nodes(b))["nodes"]] == ["a", "b"]
        assert all(
            n["redis"] == [{"name": n["redis"][0]["name"], "connected": True}]
            for n in (await nodes(a))["nodes"]
        )

        erin = await raw_client(b, connect={"token": token("erin")})
        user = (await http.get(f"{a.http}/admin/api/user", params={"user": "erin"})).json()
        assert [(c["node"], c["user"]) for c in user["connections"]] == [("b", "erin")]
        body = {"action": "disconnect", "user": "erin", "disconnect": {"code": 4502, "reason": "from a"}}
        r = await http.post(f"{a.http}/admin/api/action", json=body, headers={"x-csrf-token": csrf})
        assert r.status_code == 200, r.text
        assert await erin.closed() == (4502, "from a")

        audit = (await http.get(f"{b.http}/admin/api/audit")).json()["entries"]  # one log, in Redis
        assert [(e["action"], e["result"]) for e in audit] == [("disconnect", "ok"), ("login", "ok")]

        b.server.should_exit = True  # b leaves: a shows it as gone
        async with asyncio.timeout(TIMEOUT):
            await a.sb.node.control.wait_until(lambda: not a.sb.node.control.peers())
        listed = await nodes(a)
        assert [n["name"] for n in listed["nodes"]] == ["a"] and listed["gone"][0]["info"]["name"] == "b"

        c = await make_hub(node_name="c", data_dir=str(tmp_path / "c"), **common)
        assert (
            await http.post(f"{a.http}/admin/api/logout", headers={"x-csrf-token": csrf})
        ).status_code == 200
        http.cookies.clear()
        # A copy of the cookie kept elsewhere is refused by every node, not only the one that signed out.
        async with http_client(cookies={"sb_admin": r.request.headers["cookie"].split("=", 1)[1]}) as thief:
            assert (await thief.get(f"{c.http}/admin/api/nodes")).status_code == 401
