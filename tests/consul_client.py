"""Drives two Meridian nodes with py-consul, an unmodified Consul client
library from PyPI: get, put, delete, recurse, keys with separator, cas,
blocking queries, flags. Run by tests/cli.rs; argv: host:port host:port."""

import sys
import threading
import time

import consul


def client(addr):
    host, port = addr.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port))


a = client(sys.argv[1])
b = client(sys.argv[2])


def eventually(what, f):
    deadline = time.time() + 30
    while time.time() < deadline:
        if f():
            return
        time.sleep(0.05)
    raise AssertionError("never happened: " + what)


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

print("consul client: all checks passed")
