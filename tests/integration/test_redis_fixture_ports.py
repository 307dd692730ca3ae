"""The tests' own ``redis-server`` fixture never mistakes another server for its own.

A server killed to be restarted on its port (a crash, in the fault and failover tests) leaves
that port free for a moment; on a shared machine another test's server can take it. The
restarted server then fails to bind, and a start that only waited for a ``PING`` on the port
was answered by the other server: the test went on against a stranger's Redis (a Sentinel set
reconfigured it as its own node). A start succeeds only once the server's own log says it
listens.
"""

from __future__ import annotations

import pytest
import redis

from tests.support.redis_server import RedisServer


def test_a_server_whose_port_another_server_holds_fails_to_start_instead_of_answering_for_it() -> None:
    holder = RedisServer().start()
    late = RedisServer(port=holder.port)
    try:
        with pytest.raises(RuntimeError, match="exited with"):
            late.start()
    finally:
        late.cleanup()
        holder.cleanup()


def test_a_server_restarted_on_its_port_is_the_one_answering() -> None:
    server = RedisServer().start()
    try:
        assert server.proc is not None
        first = server.proc.pid
        server.restart()
        assert server.proc is not None and server.proc.pid != first
        with redis.Redis(port=server.port) as c:
            assert c.info("server")["process_id"] == server.proc.pid
    finally:
        server.cleanup()
