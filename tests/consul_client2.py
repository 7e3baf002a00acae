"""Drives two Meridian nodes with python-consul2, another unmodified Consul
client library from PyPI (import name `consul`, like py-consul's): get,
put, delete, recurse, keys with separator, flags, cas, blocking queries,
transactions, the agent/status/catalog probes, sessions refused, `dc=`
forwarding and `?consistent` reads. Run by tests/cli.rs; argv:
host:port host:port (two nodes in two regions).

    python -m pip install python-consul2==0.1.5
    python tests/consul_client2.py 127.0.0.1:PORT_A 127.0.0.1:PORT_B

python-consul2 answers a 404 from any endpoint with the tuple
(X-Consul-Index or None, None); a 409 raises consul.base.ClientError and a
5xx consul.ConsulException, both with "<code> <body>" as the message.
"""

import json
import os
import sys
import threading
import time

import consul
from consul_common import (
    acl_checks,
    b64,
    blocking_query_ignores_other_keys,
    documents,
    client_of,
    eventually,
    probes_and_sessions,
    raises,
)
from consul import ConsulException
from consul.base import ClientError

P = "pc2/"


client = client_of(consul)


if os.environ.get("MERIDIAN_ACL_ROOT"):
    # The ACL run: a cluster with ACLs on, and this library with tokens.
    acl_checks(consul, sys.argv[1], sys.argv[2], os.environ["MERIDIAN_ACL_ROOT"], ClientError)
    print("consul client: ACL checks: all checks passed")
    sys.exit(0)

a = client(sys.argv[1])
b = client(sys.argv[2])


def value(c, key, **kw):
    return (c.kv.get(key, **kw)[1] or {}).get("Value")


# put / get, and the value reaches the other node.
assert a.kv.put(P + "app/db/host", "db1.internal") is True
index, e = a.kv.get(P + "app/db/host")
assert int(index) > 0 and int(index) == e["ModifyIndex"], (index, e)
assert e["Value"] == b"db1.internal", e
assert e["Key"] == P + "app/db/host" and e["LockIndex"] == 0 and e["Flags"] == 0, e
eventually("replication", lambda: value(b, P + "app/db/host") == b"db1.internal")

# flags are stored and replicated with the value.
assert a.kv.put(P + "app/feature", "on", flags=42) is True
e = a.kv.get(P + "app/feature")[1]
assert e["Flags"] == 42 and e["Value"] == b"on", e
eventually("flags replicate", lambda: (b.kv.get(P + "app/feature")[1] or {}).get("Flags") == 42)

# a missing key: (index, None), the index header sent with the 404
index, e = a.kv.get(P + "app/missing")
assert e is None and index is not None and int(index) > 0, (index, e)

# recurse and keys with a separator
_, entries = a.kv.get(P + "app/", recurse=True)
assert [x["Key"] for x in entries] == [P + "app/db/host", P + "app/feature"], entries
assert [x["Value"] for x in entries] == [b"db1.internal", b"on"], entries
_, keys = a.kv.get(P + "app/", keys=True, separator="/")
assert keys == [P + "app/db/", P + "app/feature"], keys
_, keys = a.kv.get(P + "app/", keys=True)
assert keys == [P + "app/db/host", P + "app/feature"], keys

# check-and-set
mi = a.kv.get(P + "app/feature")[1]["ModifyIndex"]
assert a.kv.put(P + "app/feature", "off", cas=mi + 1000) is False
assert value(a, P + "app/feature") == b"on"
assert a.kv.put(P + "app/feature", "off", cas=mi) is True
assert a.kv.put(P + "app/feature", "x", cas=0) is False  # create-only, exists
assert a.kv.put(P + "app/new", "x", cas=0) is True
e = a.kv.get(P + "app/feature")[1]
assert e["Value"] == b"off" and e["ModifyIndex"] > mi, e

# a blocking query on b returns when a writes the key
eventually("b has off", lambda: value(b, P + "app/feature") == b"off")
index, e = b.kv.get(P + "app/feature")


def write_later():
    time.sleep(0.5)
    client(sys.argv[1]).kv.put(P + "app/feature", "changed")


threading.Thread(target=write_later).start()
start = time.time()
index2, e2 = b.kv.get(P + "app/feature", index=index, wait="20s")
assert time.time() - start < 15, "the blocking query was not woken by the write"
assert e2["Value"] == b"changed", e2
assert int(index2) > int(index), (index, index2)

# a blocking query on a key is not woken by writes to other keys
blocking_query_ignores_other_keys(a, client(sys.argv[1]), "pc2/")

# documents read as their JSON; a library's JSON PUT merges field by field
documents(a, b, sys.argv[1], sys.argv[2], "pc2/doc/")

# delete with cas, then recursively
new = a.kv.get(P + "app/new")[1]
assert a.kv.delete(P + "app/new", cas=new["ModifyIndex"] + 1) is False
assert a.kv.delete(P + "app/new", cas=0) is False
assert a.kv.get(P + "app/new")[1] is not None
assert a.kv.delete(P + "app/new", cas=new["ModifyIndex"]) is True
assert a.kv.get(P + "app/new")[1] is None
assert a.kv.delete(P + "app/db/host") is True
assert a.kv.get(P + "app/db/host")[1] is None
eventually("a delete replicates", lambda: b.kv.get(P + "app/db/host")[1] is None)
assert a.kv.delete(P + "app/", recurse=True) is True
assert a.kv.get(P + "app/", recurse=True)[1] is None
assert a.kv.get(P + "app/", keys=True)[1] is None
eventually("deletes replicate", lambda: b.kv.get(P + "app/", recurse=True)[1] is None)

# the agent, status and catalog probes, and sessions refused (501)
dc_a, dc_b = probes_and_sessions(a, b, ConsulException)

# a transaction: two sets and a get, all or nothing
res = a.txn.put(
    [
        {"KV": {"Verb": "set", "Key": P + "txn/a", "Value": b64("one")}},
        {"KV": {"Verb": "set", "Key": P + "txn/b", "Value": b64("two"), "Flags": 7}},
        {"KV": {"Verb": "get", "Key": P + "txn/a"}},
    ]
)
assert res["Errors"] is None, res
results = res["Results"]
assert len(results) == 3 and all(list(r) == ["KV"] for r in results), res
r_a, r_b, r_get = (r["KV"] for r in results)
for r in (r_a, r_b, r_get):
    assert {"LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"} <= set(r), r
    assert r["ModifyIndex"] > 0 and r["LockIndex"] == 0, r
assert r_a["Key"] == P + "txn/a" and r_a["Value"] is None and r_a["Flags"] == 0, r_a
assert r_b["Key"] == P + "txn/b" and r_b["Value"] is None and r_b["Flags"] == 7, r_b
assert r_get["Key"] == P + "txn/a" and r_get["Value"] == b64("one"), r_get
assert r_get["ModifyIndex"] == r_a["ModifyIndex"], (r_a, r_get)
e = a.kv.get(P + "txn/a")[1]
assert e["Value"] == b"one" and e["ModifyIndex"] == r_a["ModifyIndex"], e
e = a.kv.get(P + "txn/b")[1]
assert e["Value"] == b"two" and e["Flags"] == 7, e
eventually("txn replicates", lambda: value(b, P + "txn/b") == b"two")

# a failing check-index rolls the whole transaction back: 409, nothing written
msg = raises(
    ClientError,
    a.txn.put,
    [
        {"KV": {"Verb": "check-index", "Key": P + "txn/a", "Index": r_a["ModifyIndex"] + 1000}},
        {"KV": {"Verb": "set", "Key": P + "txn/new", "Value": b64("x")}},
    ],
)
assert msg.startswith("409 "), msg
body = json.loads(msg[4:])
assert body["Results"] is None and len(body["Errors"]) == 1, body
assert body["Errors"][0]["OpIndex"] == 0 and body["Errors"][0]["What"], body
assert a.kv.get(P + "txn/new")[1] is None
assert value(a, P + "txn/a") == b"one"
# and with the right index it commits
res = a.txn.put(
    [
        {"KV": {"Verb": "check-index", "Key": P + "txn/a", "Index": r_a["ModifyIndex"]}},
        {"KV": {"Verb": "set", "Key": P + "txn/new", "Value": b64("x")}},
    ]
)
assert res["Errors"] is None and [r["KV"]["Key"] for r in res["Results"]] == [P + "txn/a", P + "txn/new"], res
assert value(a, P + "txn/new") == b"x"

# dc=: requests for another region are served by a node of that region
assert a.kv.put(P + "dc/x", "via-a", dc=dc_b) is True
assert value(b, P + "dc/x") == b"via-a"  # at once, no polling: b wrote it
for i in range(5):
    assert b.kv.put(P + "dc/y", f"v{i}") is True
    assert value(a, P + "dc/y", dc=dc_b) == f"v{i}".encode(), i
eventually("a dc= write replicates back", lambda: value(a, P + "dc/x", dc=dc_a) == b"via-a")
assert a.kv.delete(P + "dc/x", dc=dc_b) is True
assert b.kv.get(P + "dc/x")[1] is None
msg = raises(ConsulException, a.kv.get, P + "dc/y", dc="no-such-dc")
assert msg.startswith("500 ") and "No path to datacenter" in msg, msg
msg = raises(ConsulException, a.kv.put, P + "dc/z", "v", dc="no-such-dc")
assert msg.startswith("500 ") and "No path to datacenter" in msg, msg
assert a.kv.get(P + "dc/z")[1] is None and b.kv.get(P + "dc/z")[1] is None

# ?consistent: a read on a sees what b acknowledged just before, no polling
for i in range(5):
    assert b.kv.put(P + "consistent", f"c{i}") is True
    assert value(a, P + "consistent", consistency="consistent") == f"c{i}".encode(), i

# a consistent read first, so that a holds every write b made before the
# recursive delete
assert a.kv.get(P, recurse=True, consistency="consistent")[1]
assert a.kv.delete(P, recurse=True) is True
assert a.kv.get(P, recurse=True)[1] is None
eventually("the deletes replicate", lambda: b.kv.get(P, recurse=True)[1] is None)

print("consul client2: all checks passed")
