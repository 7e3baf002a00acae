"""Loads KEYS keys of 30 bytes with 100-byte values into a Meridian node
through Consul's transaction API (PUT /v1/txn), OPS operations per request,
THREADS requests at a time; with CHANGE set, rewrites every step-th key.

usage: load.py ADDR KEYS OPS [STEP]
"""
import base64
import http.client
import json
import sys
import threading
from urllib.parse import urlparse

addr, keys, ops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
step = int(sys.argv[4]) if len(sys.argv) > 4 else 1
tag = b"c" if step > 1 else b"v"
value = base64.b64encode(tag * 100).decode()
url = urlparse(addr)
indexes = list(range(0, keys, step))
batches = [indexes[i:i + ops] for i in range(0, len(indexes), ops)]
lock = threading.Lock()


def worker():
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    while True:
        with lock:
            if not batches:
                return
            batch = batches.pop()
        body = json.dumps([
            {"KV": {"Verb": "set", "Key": "k/%028d" % i, "Value": value}}
            for i in batch
        ])
        conn.request("PUT", "/v1/txn", body)
        r = conn.getresponse()
        answer = r.read()
        if r.status != 200:
            sys.exit("txn: %d %s" % (r.status, answer[:200]))


threads = [threading.Thread(target=worker) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("wrote %d keys" % len(indexes))
