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


def acl_checks(consul, addr_a, addr_b, root, conflict_exception):
    """With ACLs on (`root` is the management token): a token that may
    write only under `acl/app/` (and read `acl/ro/`), created in one region,
    works through the library in the other; everything else raises the
    library's ACLPermissionDenied; recursive reads and key lists are
    filtered; a transaction with a forbidden operation writes nothing; the
    token, deleted in one region, is refused in the other."""
    import json
    import urllib.request

    def call(method, addr, path, body, token):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://{addr}{path}", data=data, method=method, headers={"X-Consul-Token": token}
        )
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())

    rules = 'key_prefix "acl/app/" { policy = "write" }\nkey_prefix "acl/ro/" { policy = "read" }'
    call("PUT", addr_a, "/v1/acl/policy", {"Name": "client-app", "Rules": rules}, root)
    tok = call("PUT", addr_a, "/v1/acl/token", {"Policies": [{"Name": "client-app"}]}, root)
    secret, accessor = tok["SecretID"], tok["AccessorID"]

    def client(addr, token=None):
        host, port = addr.rsplit(":", 1)
        return consul.Consul(host=host, port=int(port), token=token)

    root_a, app_a, app_b, anon_a = client(addr_a, root), client(addr_a, secret), client(addr_b, secret), client(addr_a)
    denied = consul.ACLPermissionDenied
    assert root_a.kv.put("acl/ro/r", "r") is True
    assert root_a.kv.put("acl/secret", "s") is True
    assert app_a.kv.put("acl/app/x", "1") is True
    for key in ("acl/secret", "acl/ro/r", "elsewhere"):
        raises(denied, app_a.kv.put, key, "x")
    raises(denied, app_a.kv.get, "acl/secret")
    raises(denied, anon_a.kv.put, "acl/app/y", "1")
    raises(denied, anon_a.kv.get, "acl/ro/r")
    assert app_a.kv.get("acl/ro/r")[1]["Value"] == b"r"
    _, entries = app_a.kv.get("acl/", recurse=True)
    assert [e["Key"] for e in entries] == ["acl/app/x", "acl/ro/r"], entries
    _, keys = app_a.kv.get("acl/", keys=True)
    assert keys == ["acl/app/x", "acl/ro/r"], keys
    _, everything = root_a.kv.get("acl/", recurse=True)
    assert [e["Key"] for e in everything] == ["acl/app/x", "acl/ro/r", "acl/secret"], everything
    # One forbidden operation: nothing of the transaction is written.
    ops = [
        {"KV": {"Verb": "set", "Key": "acl/app/t", "Value": b64("t")}},
        {"KV": {"Verb": "set", "Key": "acl/secret", "Value": b64("t")}},
    ]
    msg = raises(conflict_exception, app_a.txn.put, ops)
    assert msg.startswith("409 ") and "Permission denied" in msg, msg
    assert root_a.kv.get("acl/app/t")[1] is None
    assert root_a.kv.get("acl/secret")[1]["Value"] == b"s"

    # The token made in a's region works in b's, and stops when deleted in a's.
    def b_takes_it():
        try:
            return app_b.kv.put("acl/app/from-b", "1") is True
        except denied:
            return False

    eventually("the token works in the other region", b_takes_it)
    call("DELETE", addr_a, f"/v1/acl/token/{accessor}", None, root)
    eventually("the deleted token is refused in the other region", lambda: not b_takes_it())
    raises(denied, app_a.kv.get, "acl/app/x")


def documents(a, b, addr_a, addr_b, prefix):
    """Documents (written through Meridian's /v1/doc) read through the
    library as ordinary values: their JSON, also a change another region
    patched in. A library's PUT of a JSON object to a document key is a
    whole-document write (compared field by field with the document held)
    that replicates; a PUT of anything else is refused (the library
    raises) and changes nothing."""
    import json
    import urllib.request

    def call(method, addr, path, body):
        req = urllib.request.Request(f"http://{addr}{path}", data=json.dumps(body).encode(), method=method)
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())

    key = prefix + "svc"
    call("PUT", addr_a, f"/v1/doc/{key}", {"rps": 100, "timeout_ms": 500})
    index, e = a.kv.get(key)
    assert json.loads(e["Value"]) == {"rps": 100, "timeout_ms": 500}, e
    eventually("the document reaches the other region", lambda: (b.kv.get(key)[1] or {}).get("Value") is not None)
    # The other region changes another field; this library writes the
    # whole document it read, with one field changed.
    call("PATCH", addr_b, f"/v1/doc/{key}", {"regions": ["us", "eu"]})
    eventually(
        "the patch arrives",
        lambda: "regions" in json.loads(a.kv.get(key)[1]["Value"]),
    )
    assert a.kv.put(key, json.dumps({"rps": 200, "timeout_ms": 500, "regions": ["us", "eu"]})) is True
    want = {"rps": 200, "timeout_ms": 500, "regions": ["us", "eu"]}
    eventually("the write merges everywhere", lambda: json.loads(b.kv.get(key)[1]["Value"]) == want)
    raises(Exception, a.kv.put, key, "not json")
    assert json.loads(a.kv.get(key)[1]["Value"]) == want
