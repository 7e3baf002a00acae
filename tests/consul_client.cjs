// Drives two Meridian nodes with the npm `consul` package (2.0.1), an
// unmodified Consul client library: get, set, del, recurse, keys with a
// separator, flags, cas, blocking queries and a watch, transactions, the
// agent/status/catalog probes, sessions refused, `dc` forwarding and
// `consistent` reads. Run by tests/cli.rs; argv: host:port host:port (two
// nodes in two regions).
//
// The package is CommonJS (`module.exports = Consul`), so this file is too
// (.cjs, whatever package.json is nearby). It is found through NODE_PATH,
// or a node_modules next to this file or in the current directory:
//
//     npm install --prefix /tmp/npm-consul consul@2.0.1
//     NODE_PATH=/tmp/npm-consul/node_modules \
//         node tests/consul_client.cjs 127.0.0.1:PORT_A 127.0.0.1:PORT_B
//
// or: cd /tmp/npm-consul && node /path/to/tests/consul_client.cjs A B

"use strict";

const assert = require("node:assert/strict");
const events = require("node:events");
const path = require("node:path");
const { createRequire } = require("node:module");

function loadConsul() {
  try {
    return require("consul"); // NODE_PATH, or node_modules above this file
  } catch (err) {
    if (err.code !== "MODULE_NOT_FOUND") throw err;
    return createRequire(path.join(process.cwd(), "noop.js"))("consul");
  }
}

const Consul = loadConsul();

function client(addr) {
  const i = addr.lastIndexOf(":");
  return new Consul({ host: addr.slice(0, i), port: Number(addr.slice(i + 1)) });
}

const [addrA, addrB] = process.argv.slice(2);
if (!addrA || !addrB) {
  console.error("usage: node consul_client.cjs hostA:portA hostB:portB");
  process.exit(2);
}
const a = client(addrA);
const b = client(addrB);
const P = "npm/";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function eventually(what, f, ms = 30000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await f()) return;
    await sleep(50);
  }
  throw new Error("never happened: " + what);
}

// A ctx that makes the library resolve [response, data], for the headers.
function withResponse() {
  const ctx = new events.EventEmitter();
  ctx.includeResponse = true;
  return ctx;
}

// kv.get with the X-Consul-Index: [index (BigInt), entry or undefined].
async function getIndexed(c, opts) {
  const [res, data] = await c.kv.get({ ...opts, ctx: withResponse() });
  const header = res.headers["x-consul-index"];
  assert.ok(header, `no X-Consul-Index on ${JSON.stringify(opts)}`);
  return [BigInt(header), data];
}

// kv.set and kv.del resolve the JSON body, but papi resolves a `false`
// body as undefined; with the response asked for, the body comes as sent.
async function kvSet(c, key, val, opts = {}) {
  const [, body] = await c.kv.set(key, val, { ...opts, ctx: withResponse() });
  return body;
}

async function kvDel(c, opts) {
  const [, body] = await c.kv.del({ ...opts, ctx: withResponse() });
  return body;
}

async function value(c, key, opts = {}) {
  const e = await c.kv.get({ key, ...opts });
  return e === undefined ? undefined : e.Value;
}

// The error a promise rejects with (it must reject).
async function rejection(promise, what) {
  try {
    const r = await promise;
    throw new assert.AssertionError({ message: `${what} resolved ${JSON.stringify(r)}, expected an error` });
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    return err;
  }
}

const b64 = (s) => Buffer.from(s, "utf8").toString("base64");
// Meridian's errors are JSON ({"error": "..."}), Consul's plain text: either reads.
const bodyText = (err) => {
  const body = err.response && err.response.body;
  return body && typeof body === "object" && !Buffer.isBuffer(body) ? JSON.stringify(body) : String(body);
};

async function main() {
  // set / get, and the value reaches the other node.
  assert.equal(await a.kv.set(P + "app/db/host", "db1.internal"), true);
  let [index, e] = await getIndexed(a, { key: P + "app/db/host" });
  assert.ok(index > 0n);
  assert.equal(index, BigInt(e.ModifyIndex));
  assert.equal(e.Value, "db1.internal");
  assert.equal(e.Key, P + "app/db/host");
  assert.equal(e.LockIndex, 0);
  assert.equal(e.Flags, 0);
  await eventually("replication", async () => (await value(b, P + "app/db/host")) === "db1.internal");

  // flags are stored and replicated with the value.
  assert.equal(await a.kv.set(P + "app/feature", "on", { flags: 42 }), true);
  e = await a.kv.get(P + "app/feature");
  assert.equal(e.Flags, 42);
  assert.equal(e.Value, "on");
  await eventually("flags replicate", async () => {
    const x = await b.kv.get(P + "app/feature");
    return x !== undefined && x.Flags === 42;
  });

  // a missing key resolves undefined (a 404), with an index
  [index, e] = await getIndexed(a, { key: P + "app/missing" });
  assert.equal(e, undefined);
  assert.ok(index > 0n);

  // recurse and keys with a separator
  const entries = await a.kv.get({ key: P + "app/", recurse: true });
  assert.deepEqual(entries.map((x) => x.Key), [P + "app/db/host", P + "app/feature"]);
  assert.deepEqual(entries.map((x) => x.Value), ["db1.internal", "on"]);
  assert.deepEqual(await a.kv.keys({ key: P + "app/", separator: "/" }), [P + "app/db/", P + "app/feature"]);
  assert.deepEqual(await a.kv.keys(P + "app/"), [P + "app/db/host", P + "app/feature"]);

  // check-and-set
  const mi = (await a.kv.get(P + "app/feature")).ModifyIndex;
  assert.equal(await kvSet(a, P + "app/feature", "off", { cas: mi + 1000 }), false);
  assert.equal(await value(a, P + "app/feature"), "on");
  assert.equal(await kvSet(a, P + "app/feature", "off", { cas: mi }), true);
  assert.equal(await kvSet(a, P + "app/feature", "x", { cas: 0 }), false); // create-only, exists
  assert.equal(await kvSet(a, P + "app/new", "x", { cas: 0 }), true);
  e = await a.kv.get(P + "app/feature");
  assert.equal(e.Value, "off");
  assert.ok(e.ModifyIndex > mi);

  // a blocking query on b returns when a writes the key
  await eventually("b has off", async () => (await value(b, P + "app/feature")) === "off");
  [index] = await getIndexed(b, { key: P + "app/feature" });
  const writer = client(addrA);
  const later = sleep(500).then(() => writer.kv.set(P + "app/feature", "changed"));
  let start = Date.now();
  const [index2, e2] = await getIndexed(b, { key: P + "app/feature", index: index.toString(), wait: "20s" });
  assert.ok(Date.now() - start < 15000, "the blocking query was not woken by the write");
  assert.equal(await later, true);
  assert.equal(e2.Value, "changed");
  assert.ok(index2 > index, `index ${index2} after ${index}`);

  // a blocking query on a key is not woken by writes to other keys: it
  // returns at the deadline with the index it was given and the old value
  const K = P + "block/k";
  assert.equal(await a.kv.set(K, "old"), true);
  const [idx, old] = await getIndexed(a, { key: K });
  const others = [];
  let n = 0;
  const writeOthers = async (rounds) => {
    for (let i = 0; i < rounds; i++, n++) {
      await sleep(250);
      for (const other of [`${K}${n}`, `${K}/child${n}`, `${P}block/other${n}`]) {
        assert.equal(await writer.kv.set(other, String(n)), true);
        others.push(other);
      }
    }
  };
  start = Date.now();
  const during = writeOthers(5);
  const [idx2, same] = await getIndexed(a, { key: K, index: idx.toString(), wait: "2s" });
  const elapsed = Date.now() - start;
  const writtenDuring = others.length;
  await during;
  assert.equal(idx2, idx, `the index moved from ${idx} to ${idx2} on writes to other keys`);
  assert.deepEqual(same, old);
  assert.ok(elapsed >= 1800 && elapsed < 6000, `returned after ${elapsed} ms, not at the 2 s deadline`);
  assert.ok(writtenDuring >= 6, "the other keys were not written during the wait");

  // the same through a watch: one change (the first read), none while
  // other keys are written, one more when the key is
  const changes = [];
  const watchErrors = [];
  const watch = a.watch({ method: a.kv.get, options: { key: K, wait: "1s" } });
  watch.on("change", (data, res) => changes.push({ data, index: BigInt(res.headers["x-consul-index"]) }));
  watch.on("error", (err) => watchErrors.push(err));
  try {
    await writeOthers(16); // about 4 s
    assert.deepEqual(watchErrors, []);
    assert.equal(changes.length, 1, `changes on other keys' writes: ${JSON.stringify(changes.map((c) => c.index.toString()))}`);
    assert.equal(changes[0].data.Value, "old");
    assert.equal(changes[0].index, idx);
    assert.equal(await writer.kv.set(K, "new"), true);
    await eventually("the watch sees the write", async () => changes.length >= 2, 10000);
    await sleep(1500);
    assert.equal(changes.length, 2);
    assert.equal(changes[1].data.Value, "new");
    assert.ok(changes[1].index > idx);
    assert.deepEqual(watchErrors, []);
  } finally {
    watch.end();
  }
  const blockKeys = await a.kv.keys(P + "block/");
  assert.deepEqual(blockKeys, [...others, K].sort());

  // delete with cas, then recursively
  const nw = await a.kv.get(P + "app/new");
  assert.equal(await kvDel(a, { key: P + "app/new", cas: nw.ModifyIndex + 1 }), false);
  assert.equal(await kvDel(a, { key: P + "app/new", cas: 0 }), false);
  assert.notEqual(await a.kv.get(P + "app/new"), undefined);
  assert.equal(await kvDel(a, { key: P + "app/new", cas: nw.ModifyIndex }), true);
  assert.equal(await a.kv.get(P + "app/new"), undefined);
  assert.equal(await a.kv.del(P + "app/db/host"), true);
  assert.equal(await a.kv.get(P + "app/db/host"), undefined);
  await eventually("a delete replicates", async () => (await b.kv.get(P + "app/db/host")) === undefined);
  assert.equal(await a.kv.del({ key: P + "app/", recurse: true }), true);
  assert.equal(await a.kv.get({ key: P + "app/", recurse: true }), undefined);
  await eventually("deletes replicate", async () => (await b.kv.get({ key: P + "app/", recurse: true })) === undefined);

  // the agent, status and catalog probes: two regions, each its own datacenter
  const dcA = (await a.agent.self()).Config.Datacenter;
  const dcB = (await b.agent.self()).Config.Datacenter;
  assert.ok(typeof dcA === "string" && dcA.length > 0, dcA);
  assert.ok(typeof dcB === "string" && dcB.length > 0 && dcB !== dcA, `${dcA} ${dcB}`);
  for (const c of [a, b]) {
    const me = (await c.agent.self()).Member;
    assert.ok(typeof me.Addr === "string" && me.Addr.length > 0, JSON.stringify(me));
    const leader = await c.status.leader();
    assert.match(leader, /^.+:[1-9][0-9]*$/);
  }
  await eventually("a lists both datacenters, its own first", async () =>
    JSON.stringify(await a.catalog.datacenters()) === JSON.stringify([dcA, dcB]));
  await eventually("b lists both datacenters, its own first", async () =>
    JSON.stringify(await b.catalog.datacenters()) === JSON.stringify([dcB, dcA]));

  // sessions are not served: the promise rejects rather than reading "absent"
  let err = await rejection(a.session.create(), "session.create()");
  assert.equal(err.statusCode, 501, err.message);
  err = await rejection(a.session.create({ name: "lock", ttl: "10s" }), "session.create({name, ttl})");
  assert.equal(err.statusCode, 501, err.message);

  // a transaction: two sets and a get, all or nothing; values are base64
  const res = await a.transaction.create([
    { KV: { Verb: "set", Key: P + "txn/a", Value: b64("one") } },
    { KV: { Verb: "set", Key: P + "txn/b", Value: b64("two"), Flags: 7 } },
    { KV: { Verb: "get", Key: P + "txn/a" } },
  ]);
  assert.equal(res.Errors, null);
  assert.equal(res.Results.length, 3);
  for (const r of res.Results) assert.deepEqual(Object.keys(r), ["KV"]);
  const [rA, rB, rGet] = res.Results.map((r) => r.KV);
  for (const r of [rA, rB, rGet]) {
    for (const f of ["LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"]) {
      assert.ok(Object.hasOwn(r, f), `${f} missing from ${JSON.stringify(r)}`);
    }
    assert.ok(r.ModifyIndex > 0);
    assert.equal(r.LockIndex, 0);
  }
  assert.equal(rA.Key, P + "txn/a");
  assert.equal(rA.Value, null);
  assert.equal(rA.Flags, 0);
  assert.equal(rB.Key, P + "txn/b");
  assert.equal(rB.Value, null);
  assert.equal(rB.Flags, 7);
  assert.equal(rGet.Key, P + "txn/a");
  assert.equal(rGet.Value, b64("one"));
  assert.equal(rGet.ModifyIndex, rA.ModifyIndex);
  e = await a.kv.get(P + "txn/a");
  assert.equal(e.Value, "one");
  assert.equal(e.ModifyIndex, rA.ModifyIndex);
  e = await a.kv.get(P + "txn/b");
  assert.equal(e.Value, "two");
  assert.equal(e.Flags, 7);
  await eventually("txn replicates", async () => (await value(b, P + "txn/b")) === "two");

  // a failing check-index rolls the whole transaction back: 409, nothing written
  err = await rejection(
    a.transaction.create([
      { KV: { Verb: "check-index", Key: P + "txn/a", Index: rA.ModifyIndex + 1000 } },
      { KV: { Verb: "set", Key: P + "txn/new", Value: b64("x") } },
    ]),
    "a failing transaction",
  );
  assert.equal(err.statusCode, 409, err.message);
  const body = err.response.body;
  assert.equal(body.Results, null, JSON.stringify(body));
  assert.equal(body.Errors.length, 1, JSON.stringify(body));
  assert.equal(body.Errors[0].OpIndex, 0);
  assert.ok(typeof body.Errors[0].What === "string" && body.Errors[0].What.length > 0);
  assert.equal(await a.kv.get(P + "txn/new"), undefined);
  assert.equal(await value(a, P + "txn/a"), "one");
  // and with the right index it commits
  const ok = await a.transaction.create([
    { KV: { Verb: "check-index", Key: P + "txn/a", Index: rA.ModifyIndex } },
    { KV: { Verb: "set", Key: P + "txn/new", Value: b64("x") } },
  ]);
  assert.equal(ok.Errors, null);
  assert.deepEqual(ok.Results.map((r) => r.KV.Key), [P + "txn/a", P + "txn/new"]);
  assert.equal(await value(a, P + "txn/new"), "x");

  // dc: requests for another region are served by a node of that region
  assert.equal(await a.kv.set(P + "dc/x", "via-a", { dc: dcB }), true);
  assert.equal(await value(b, P + "dc/x"), "via-a"); // at once, no polling: b wrote it
  for (let i = 0; i < 5; i++) {
    assert.equal(await b.kv.set(P + "dc/y", `v${i}`), true);
    assert.equal(await value(a, P + "dc/y", { dc: dcB }), `v${i}`);
  }
  await eventually("a dc write replicates back", async () => (await value(a, P + "dc/x", { dc: dcA })) === "via-a");
  assert.equal(await a.kv.del({ key: P + "dc/x", dc: dcB }), true);
  assert.equal(await b.kv.get(P + "dc/x"), undefined);
  err = await rejection(a.kv.get({ key: P + "dc/y", dc: "no-such-dc" }), "kv.get dc=no-such-dc");
  assert.equal(err.statusCode, 500, err.message);
  assert.match(bodyText(err), /No path to datacenter/);
  err = await rejection(a.kv.set(P + "dc/z", "v", { dc: "no-such-dc" }), "kv.set dc=no-such-dc");
  assert.equal(err.statusCode, 500, err.message);
  assert.match(bodyText(err), /No path to datacenter/);
  assert.equal(await a.kv.get(P + "dc/z"), undefined);
  assert.equal(await b.kv.get(P + "dc/z"), undefined);

  // consistent: a read on a sees what b acknowledged just before, no polling
  for (let i = 0; i < 5; i++) {
    assert.equal(await b.kv.set(P + "consistent", `c${i}`), true);
    assert.equal(await value(a, P + "consistent", { consistent: true }), `c${i}`);
  }

  // a consistent read first, so that a holds every write b made before the
  // recursive delete
  assert.ok((await a.kv.get({ key: P, recurse: true, consistent: true })).length > 0);
  assert.equal(await a.kv.del({ key: P, recurse: true }), true);
  assert.equal(await a.kv.get({ key: P, recurse: true }), undefined);
  await eventually("the deletes replicate", async () => (await b.kv.get({ key: P, recurse: true })) === undefined);
}

// The ACL run (MERIDIAN_ACL_ROOT: the management token of a cluster with
// ACLs on): a token that may write only under acl/app/ (and read acl/ro/),
// made in one region, used through this library in both (see
// tests/consul_common.py `acl_checks` for the same checks in Python).
async function aclChecks(root) {
  const call = async (method, addr, path, body) => {
    const r = await fetch(`http://${addr}${path}`, {
      method,
      headers: { "X-Consul-Token": root },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    assert.equal(r.status, 200, `${method} ${path}: ${await r.clone().text()}`);
    return r.json();
  };
  const rules = 'key_prefix "acl/app/" { policy = "write" }\nkey_prefix "acl/ro/" { policy = "read" }';
  await call("PUT", addrA, "/v1/acl/policy", { Name: "client-app", Rules: rules });
  const tok = await call("PUT", addrA, "/v1/acl/token", { Policies: [{ Name: "client-app" }] });
  const withToken = (addr, token) => {
    const i = addr.lastIndexOf(":");
    return new Consul({ host: addr.slice(0, i), port: Number(addr.slice(i + 1)), defaults: { token } });
  };
  const rootA = withToken(addrA, root);
  const appA = withToken(addrA, tok.SecretID);
  const appB = withToken(addrB, tok.SecretID);
  assert.equal(await rootA.kv.set("acl/ro/r", "r"), true);
  assert.equal(await rootA.kv.set("acl/secret", "s"), true);
  assert.equal(await appA.kv.set("acl/app/x", "1"), true);
  for (const key of ["acl/secret", "acl/ro/r", "elsewhere"]) {
    const err = await rejection(appA.kv.set(key, "x"), `writing ${key}`);
    assert.equal(err.statusCode, 403, err.message);
  }
  let err = await rejection(appA.kv.get("acl/secret"), "reading acl/secret");
  assert.equal(err.statusCode, 403, err.message);
  err = await rejection(a.kv.set("acl/app/y", "1"), "writing without a token");
  assert.equal(err.statusCode, 403, err.message);
  assert.equal(await value(appA, "acl/ro/r"), "r");
  const entries = await appA.kv.get({ key: "acl/", recurse: true });
  assert.deepEqual(entries.map((e) => e.Key), ["acl/app/x", "acl/ro/r"]);
  assert.deepEqual(await appA.kv.keys("acl/"), ["acl/app/x", "acl/ro/r"]);
  err = await rejection(
    appA.transaction.create([
      { KV: { Verb: "set", Key: "acl/app/t", Value: b64("t") } },
      { KV: { Verb: "set", Key: "acl/secret", Value: b64("t") } },
    ]),
    "a transaction with a forbidden operation",
  );
  assert.equal(err.statusCode, 409, err.message);
  assert.equal(await rootA.kv.get("acl/app/t"), undefined);
  assert.equal(await value(rootA, "acl/secret"), "s");
  const bTakesIt = async () => {
    try {
      return (await appB.kv.set("acl/app/from-b", "1")) === true;
    } catch (e) {
      if (e.statusCode === 403) return false;
      throw e;
    }
  };
  await eventually("the token works in the other region", bTakesIt);
  await call("DELETE", addrA, `/v1/acl/token/${tok.AccessorID}`);
  await eventually("the deleted token is refused in the other region", async () => !(await bTakesIt()));
}

const run = process.env.MERIDIAN_ACL_ROOT ? () => aclChecks(process.env.MERIDIAN_ACL_ROOT) : main;

run().then(
  () => {
    console.log("consul_client.cjs: all checks passed");
    process.exit(0);
  },
  (err) => {
    console.error("consul_client.cjs failed:", err && err.stack ? err.stack : err);
    if (err && err.response) {
      console.error("response:", err.statusCode, JSON.stringify(String(err.response.body)));
    }
    process.exit(1);
  },
);
