"""What the Python Consul client scripts share (tests/consul_client.py with
py-consul, tests/consul_client2.py with python-consul2): the helpers, and
the checks both libraries run alike. Both libraries are imported as
`consul` and read the same way; the scripts pass their own client."""

import base64
import threading
import time


def client_of(consul):
    """A function making a client of the `consul` module for `host:port`."""

    def client(addr):
        host, port = addr.rsplit(":", 1)
        return consul.Consul(host=host, port=int(port))

    return client


def eventually(what, f):
    deadline = time.time() + 30
    while time.time() < deadline:
        if f():
            return
        time.sleep(0.05)
    raise AssertionError("never happened: " + what)


def raises(exc, f, *args, **kwargs):
    """The message of the `exc` that f(*args, **kwargs) raises."""
    try:
        r = f(*args, **kwargs)
    except exc as e:
        return str(e)
    raise AssertionError(f"{f.__qualname__}{args}{kwargs} returned {r!r}, expected {exc.__name__}")


def b64(s):
    return base64.b64encode(s.encode()).decode()


def blocking_query_ignores_other_keys(a, other_writer, prefix):
    """A blocking query on a key is not woken by writes to other keys (on
    the same node, from `other_writer`): it returns at the deadline with the
    index it was given and the old value."""
    K = prefix + "block/k"
    assert a.kv.put(K, "old") is True
    idx, e = a.kv.get(K)
    assert e["Value"] == b"old" and int(idx) == e["ModifyIndex"], (idx, e)
    others = []
    written, failures = [], []

    def write_others():
        try:
            for i in range(5):
                time.sleep(0.25)
                for other in (f"{K}{i}", f"{K}/child{i}", f"{prefix}block/other{i}"):
                    assert other_writer.kv.put(other, str(i)) is True
                    others.append(other)
                written.append(time.time())
        except Exception as ex:  # noqa: BLE001 -- reported below
            failures.append(repr(ex))

    t = threading.Thread(target=write_others)
    start = time.time()
    t.start()
    idx2, e2 = a.kv.get(K, index=idx, wait="2s")
    returned = time.time()
    t.join()
    assert not failures, failures
    assert idx2 == idx, f"the index moved from {idx} to {idx2} on writes to other keys"
    assert e2 == e, (e, e2)
    assert 1.8 <= returned - start < 6, f"returned after {returned - start:.2f} s, not at the 2 s deadline"
    assert sum(1 for w in written if w < returned) >= 2, "the other keys were not written during the wait"
    _, keys = a.kv.get(prefix + "block/", keys=True)
    assert keys == sorted(others + [K]), keys


def probes_and_sessions(a, b, consul_exception):
    """The agent, status and catalog probes of two regions, each its own
    datacenter; and sessions refused with a 501 that the client raises
    (rather than reading "absent"). Returns the two datacenters."""
    dc_a = a.agent.self()["Config"]["Datacenter"]
    dc_b = b.agent.self()["Config"]["Datacenter"]
    assert isinstance(dc_a, str) and dc_a, dc_a
    assert isinstance(dc_b, str) and dc_b and dc_b != dc_a, (dc_a, dc_b)
    for c in (a, b):
        me = c.agent.self()["Member"]
        assert isinstance(me["Addr"], str) and me["Addr"], me
        leader = c.status.leader()
        assert isinstance(leader, str), leader
        host, _, port = leader.rpartition(":")
        assert host and port.isdigit() and int(port) > 0, leader
    eventually("a lists both datacenters, its own first", lambda: a.catalog.datacenters() == [dc_a, dc_b])
    eventually("b lists both datacenters, its own first", lambda: b.catalog.datacenters() == [dc_b, dc_a])
    msg = raises(consul_exception, a.session.create)
    assert msg.startswith("501 "), msg
    msg = raises(consul_exception, a.session.create, name="lock", ttl=10)
    assert msg.startswith("501 "), msg
    return dc_a, dc_b
