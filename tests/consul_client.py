"""Drives two Meridian nodes with py-consul, an unmodified Consul client
library from PyPI: get, put, delete, recurse, keys with separator, cas,
blocking queries, flags, transactions, the agent/status/catalog probes,
sessions refused, `dc=` forwarding and `?consistent` reads.
Run by tests/cli.rs; argv: host:port host:port (two nodes in two regions).

    python -m pip install py-consul==1.8.0
    python tests/consul_client.py 127.0.0.1:PORT_A 127.0.0.1:PORT_B
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
from consul.exceptions import ClientError, ConsulException


client = client_of(consul)


if os.environ.get("MERIDIAN_ACL_ROOT"):
    # The ACL run: a cluster with ACLs on, and this library with tokens.
    acl_checks(consul, sys.argv[1], sys.argv[2], os.environ["MERIDIAN_ACL_ROOT"], ClientError)
    print("consul client: ACL checks: all checks passed")
    sys.exit(0)

a = client(sys.argv[1])
b = client(sys.argv[2])


# put / get, and the value reaches the other node.
assert a.kv.put("app/db/host", "db1.internal") is True
index, e = a.kv.get("app/db/host")
assert int(index) > 0
assert e["Value"] == b"db1.internal", e
assert e["Key"] == "app/db/host" and e["LockIndex"] == 0
eventually("replication", lambda: (b.kv.get("app/db/host")[1] or {}).get("Value") == b"db1.internal")

# flags are stored and replicated with the value.
assert a.kv.put("app/feature", "on", flags=42) is True
assert a.kv.get("app/feature")[1]["Flags"] == 42
eventually("flags replicate", lambda: (b.kv.get("app/feature")[1] or {}).get("Flags") == 42)

# a missing key
assert a.kv.get("app/missing")[1] is None

# recurse and keys with a separator
_, entries = a.kv.get("app/", recurse=True)
assert [x["Key"] for x in entries] == ["app/db/host", "app/feature"], entries
_, keys = a.kv.get("app/", keys=True, separator="/")
assert keys == ["app/db/", "app/feature"], keys
_, keys = a.kv.get("app/", keys=True)
assert keys == ["app/db/host", "app/feature"], keys

# check-and-set
mi = a.kv.get("app/feature")[1]["ModifyIndex"]
assert a.kv.put("app/feature", "off", cas=mi + 1000) is False
assert a.kv.put("app/feature", "off", cas=mi) is True
assert a.kv.put("app/feature", "x", cas=0) is False  # create-only, exists
assert a.kv.put("app/new", "x", cas=0) is True
assert a.kv.get("app/feature")[1]["Value"] == b"off"

# a blocking query on b returns when a writes the key
eventually("b has off", lambda: (b.kv.get("app/feature")[1] or {}).get("Value") == b"off")
index, e = b.kv.get("app/feature")


def write_later():
    time.sleep(0.5)
    client(sys.argv[1]).kv.put("app/feature", "changed")


threading.Thread(target=write_later).start()
index2, e2 = b.kv.get("app/feature", index=index, wait="20s")
assert e2["Value"] == b"changed", e2
assert int(index2) > int(index)
# and with nothing changing it returns the same value at the deadline
index3, e3 = b.kv.get("app/feature", index=index2, wait="1s")
assert e3["Value"] == b"changed"
assert index3 == index2, (index3, index2)

# delete with cas, then recursively
new = a.kv.get("app/new")[1]
assert a.kv.delete("app/new", cas=new["ModifyIndex"] + 1) is False
assert a.kv.delete("app/new", cas=0) is False
assert a.kv.get("app/new")[1] is not None
assert a.kv.delete("app/new", cas=new["ModifyIndex"]) is True
assert a.kv.get("app/new")[1] is None
assert a.kv.delete("app/", recurse=True) is True
assert a.kv.get("app/", recurse=True)[1] is None
eventually("deletes replicate", lambda: b.kv.get("app/", recurse=True)[1] is None)


# the agent, status and catalog probes, and sessions refused (501)
dc_a, dc_b = probes_and_sessions(a, b, ConsulException)

# a blocking query on a key is not woken by writes to other keys
blocking_query_ignores_other_keys(a, client(sys.argv[1]), "py/")

# documents read as their JSON; a library's JSON PUT merges field by field
documents(a, b, sys.argv[1], sys.argv[2], "py/doc/")

# a transaction: two sets and a get, all or nothing
res = a.txn.put(
    [
        {"KV": {"Verb": "set", "Key": "py/txn/a", "Value": b64("one")}},
        {"KV": {"Verb": "set", "Key": "py/txn/b", "Value": b64("two"), "Flags": 7}},
        {"KV": {"Verb": "get", "Key": "py/txn/a"}},
    ]
)
assert res["Errors"] is None, res
results = res["Results"]
assert len(results) == 3 and all(list(r) == ["KV"] for r in results), res
r_a, r_b, r_get = (r["KV"] for r in results)
for r in (r_a, r_b, r_get):
    assert {"LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"} <= set(r), r
    assert r["ModifyIndex"] > 0 and r["LockIndex"] == 0, r
assert r_a["Key"] == "py/txn/a" and r_a["Value"] is None and r_a["Flags"] == 0, r_a
assert r_b["Key"] == "py/txn/b" and r_b["Value"] is None and r_b["Flags"] == 7, r_b
assert r_get["Key"] == "py/txn/a" and r_get["Value"] == b64("one"), r_get
assert r_get["ModifyIndex"] == r_a["ModifyIndex"], (r_a, r_get)
e = a.kv.get("py/txn/a")[1]
assert e["Value"] == b"one" and e["ModifyIndex"] == r_a["ModifyIndex"], e
e = a.kv.get("py/txn/b")[1]
assert e["Value"] == b"two" and e["Flags"] == 7, e
eventually("txn replicates", lambda: (b.kv.get("py/txn/b")[1] or {}).get("Value") == b"two")

# a failing check-index rolls the whole transaction back: 409, nothing written
msg = raises(
    ClientError,
    a.txn.put,
    [
        {"KV": {"Verb": "check-index", "Key": "py/txn/a", "Index": r_a["ModifyIndex"] + 1000}},
        {"KV": {"Verb": "set", "Key": "py/txn/new", "Value": b64("x")}},
    ],
)
assert msg.startswith("409 "), msg
body = json.loads(msg[4:])
assert body["Results"] is None and len(body["Errors"]) == 1, body
assert body["Errors"][0]["OpIndex"] == 0 and body["Errors"][0]["What"], body
assert a.kv.get("py/txn/new")[1] is None
assert a.kv.get("py/txn/a")[1]["Value"] == b"one"
# and with the right index it commits
res = a.txn.put(
    [
        {"KV": {"Verb": "check-index", "Key": "py/txn/a", "Index": r_a["ModifyIndex"]}},
        {"KV": {"Verb": "set", "Key": "py/txn/new", "Value": b64("x")}},
    ]
)
assert res["Errors"] is None and [r["KV"]["Key"] for r in res["Results"]] == ["py/txn/a", "py/txn/new"], res
assert a.kv.get("py/txn/new")[1]["Value"] == b"x"

# dc=: requests for another region are served by a node of that region
assert a.kv.put("py/dc/x", "via-a", dc=dc_b) is True
e = b.kv.get("py/dc/x")[1]  # at once, no polling: b wrote it
assert e is not None and e["Value"] == b"via-a", e
for i in range(5):
    assert b.kv.put("py/dc/y", f"v{i}") is True
    _, e = a.kv.get("py/dc/y", dc=dc_b)
    assert e is not None and e["Value"] == f"v{i}".encode(), (i, e)
eventually("a dc= write replicates back", lambda: (a.kv.get("py/dc/x", dc=dc_a)[1] or {}).get("Value") == b"via-a")
assert a.kv.delete("py/dc/x", dc=dc_b) is True
assert b.kv.get("py/dc/x")[1] is None
msg = raises(ConsulException, a.kv.get, "py/dc/y", dc="no-such-dc")
assert msg.startswith("500 ") and "No path to datacenter" in msg, msg
msg = raises(ConsulException, a.kv.put, "py/dc/z", "v", dc="no-such-dc")
assert msg.startswith("500 ") and "No path to datacenter" in msg, msg
assert a.kv.get("py/dc/z")[1] is None and b.kv.get("py/dc/z")[1] is None

# ?consistent: a read on a sees what b acknowledged just before, no polling
for i in range(5):
    assert b.kv.put("py/consistent", f"c{i}") is True
    _, e = a.kv.get("py/consistent", consistency="consistent")
    assert e is not None and e["Value"] == f"c{i}".encode(), (i, e)

# a consistent read first, so that a holds every py/ write b made before
# the recursive delete
assert a.kv.get("py/", recurse=True, consistency="consistent")[1]
assert a.kv.delete("py/", recurse=True) is True
assert a.kv.get("py/", recurse=True)[1] is None
eventually("py/ deletes replicate", lambda: b.kv.get("py/", recurse=True)[1] is None)

print("consul client: all checks passed")
