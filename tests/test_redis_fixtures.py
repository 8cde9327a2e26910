"""The Redis fixtures themselves: servers answer, restart empty on the same port, the cluster is whole."""

from __future__ import annotations

from tests.redis_servers import RedisCluster, RedisServer


def test_server_restarts_empty_on_same_port(redis_server: RedisServer) -> None:
    assert redis_server.port != 6379
    assert redis_server.command("SET", "k", "v").startswith(b"+OK")
    port = redis_server.port
    redis_server.kill()
    assert not redis_server.running
    redis_server.start()
    assert redis_server.port == port
    assert redis_server.command("GET", "k").startswith(b"$-1")


def test_two_servers_are_distinct(redis_two: list[RedisServer]) -> None:
    a, b = redis_two
    assert a.port != b.port
    a.command("SET", "k", "a")
    assert b.command("GET", "k").startswith(b"$-1")


def test_cluster_is_ok_and_flushed(redis_cluster: RedisCluster) -> None:
    assert len(redis_cluster.urls) == 3
    for s in redis_cluster.servers:
        assert b"cluster_state:ok" in s.command("CLUSTER", "INFO")
        assert s.command("DBSIZE").startswith(b":0")
