// The console in a real browser (headless Chromium through playwright-core)
// against a real `meridian dev` cluster of three regions; run by
// tests/console.rs, which installs playwright-core (pinned) and passes:
//   URLS        the nodes' API addresses, comma-separated, first region first
//   CUT_FILE    the dev cluster's cut-off file; CUT_REGION the region it cuts
//   CHROMIUM    the browser; SHOTS a directory for screenshots
//   ACL_URL, ACL_TOKEN  a node of a second cluster with ACLs on, and its management token
// Prints "console checks passed" when every step held.
"use strict";
const { chromium } = require("playwright-core");
const fs = require("fs");
const path = require("path");

const urls = process.env.URLS.split(",");
const [east, , south] = urls;
const cutFile = process.env.CUT_FILE;
const cutRegion = process.env.CUT_REGION;
const shots = process.env.SHOTS;
const STEP_MS = 30000;

function step(name) { console.log(`- ${name}`); }

async function shot(page, name) {
  if (!shots) return;
  fs.mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

/** Waits until `f` (run in the page) is true, reloading the view every second. */
async function until(page, what, f, arg) {
  const deadline = Date.now() + STEP_MS;
  for (;;) {
    try {
      if (await page.evaluate(f, arg)) return;
    } catch (_) { /* the page was navigating */ }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${STEP_MS} ms`);
    await page.waitForTimeout(500);
  }
}

/** A write straight to a node's API, as another client would make it. */
async function put(base, key, value) {
  const r = await fetch(`${base}/v1/kv/${key}`, { method: "PUT", body: value });
  if (!r.ok || (await r.text()).trim() !== "true") throw new Error(`PUT ${key} at ${base}: ${r.status}`);
}

(async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM, args: ["--no-sandbox"] });
  const errors = [];
  const open = async (base, hash) => {
    const p = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    p.on("pageerror", (e) => errors.push(`${base}: ${e.message}`));
    p.on("dialog", (d) => d.accept());
    await p.goto(`${base}/ui/${hash}`);
    return p;
  };

  step("the cluster view shows every region connected and one root");
  const a = await open(east, "#/cluster");
  await until(a, "three nodes agree", () => {
    const v = document.querySelector("#roots-verdict");
    return v && v.dataset.agree === "yes" && document.querySelectorAll("#roots tr[data-node]").length === 3
      && document.querySelectorAll('line.link[data-state="up"]').length === 3;
  });

  step("a key written in one region's console is seen in another region's");
  await a.goto(`${east}/ui/#/keys/`);
  await a.waitForSelector("#new-key");
  await a.fill("#new-key", "console/greeting");
  await a.fill("#new-value", "hello from us-east");
  await a.click("#create");
  await a.waitForSelector('#value[data-key="console/greeting"]');
  const c = await open(south, "#/key/console/greeting");
  await until(c, "the other region holds the key", async () => {
    const v = document.querySelector("#value");
    if (v && v.textContent === "hello from us-east") return true;
    window.dispatchEvent(new HashChangeEvent("hashchange"));
    return false;
  });

  step("edited there, rolled back here from the history");
  await c.fill("#editor", '{"greeting": "hello", "from": "ap-southeast"}');
  await c.click("#save");
  await until(c, "the edit is saved", () => {
    const v = document.querySelector("#value");
    return v && v.textContent.includes('"from": "ap-southeast"');
  });
  await until(a, "the edit reaches us-east with two versions in its history", () => {
    const rows = document.querySelectorAll("#history tr[data-index]");
    const v = document.querySelector("#value");
    if (rows.length >= 2 && v && v.textContent.includes("ap-southeast")) return true;
    window.dispatchEvent(new HashChangeEvent("hashchange"));
    return false;
  });
  await a.waitForSelector("#diff .add");
  await shot(a, "console-key-history");
  const first = await a.getAttribute("#history tr[data-index] button.rollback", "data-index");
  await a.click(`#history button.rollback[data-index="${first}"]`);
  await until(a, "the rollback is written", () => {
    const v = document.querySelector("#value");
    return v && v.textContent === "hello from us-east" && document.querySelectorAll("#history tr[data-index]").length >= 3;
  });
  await until(c, "the rollback reaches ap-southeast", () => {
    const v = document.querySelector("#value");
    if (v && v.textContent === "hello from us-east") return true;
    window.dispatchEvent(new HashChangeEvent("hashchange"));
    return false;
  });

  step("a document shown as its JSON and edited as a document");
  const made = await fetch(`${east}/v1/doc/console/service`, { method: "PUT", body: JSON.stringify({ rps: 100, timeout_ms: 500 }) });
  if (!made.ok) throw new Error(`PUT /v1/doc: ${made.status}`);
  await a.goto(`${east}/ui/#/key/console/service`);
  await until(a, "the document is shown", () => {
    const h = document.querySelector("#panel h2");
    const v = document.querySelector("#value");
    return h && h.textContent.includes("(document)") && v && JSON.parse(v.textContent).rps === 100;
  });
  await a.fill("#editor", JSON.stringify({ rps: 200, timeout_ms: 500, owner: "console" }));
  await a.click("#save");
  await until(a, "the document edit is saved", () => {
    const v = document.querySelector("#value");
    try { const d = JSON.parse(v.textContent); return d.rps === 200 && d.owner === "console"; } catch (_) { return false; }
  });
  await until(c, "the document edit reaches ap-southeast", async () => {
    const r = await fetch("/v1/doc/console/service");
    return r.ok && (await r.json()).owner === "console";
  });

  step("export a prefix as Consul JSON, import it under another name, delete that prefix");
  await a.goto(`${east}/ui/#/keys/console/`);
  await a.waitForSelector("#export");
  const [download] = await Promise.all([a.waitForEvent("download"), a.click("#export")]);
  const exported = JSON.parse(fs.readFileSync(await download.path(), "utf8"));
  const greeting = exported.find((e) => e.key === "console/greeting");
  if (!greeting || Buffer.from(greeting.value, "base64").toString() !== "hello from us-east") {
    throw new Error(`the export holds ${JSON.stringify(exported)}`);
  }
  const copy = exported.map((e) => ({ ...e, key: e.key.replace(/^console\//, "imported/") }));
  await a.setInputFiles("#import-file", { name: "copy.json", mimeType: "application/json", buffer: Buffer.from(JSON.stringify(copy)) });
  await a.click("#import");
  await until(c, "the imported key reaches ap-southeast", async () => {
    if (location.hash !== "#/key/imported/greeting") location.hash = "#/key/imported/greeting";
    const v = document.querySelector("#value");
    if (v && v.textContent === "hello from us-east") return true;
    window.dispatchEvent(new HashChangeEvent("hashchange"));
    return false;
  });
  await a.goto(`${east}/ui/#/keys/imported/`);
  await a.waitForSelector('#tree-list a[data-key="imported/greeting"]');
  await a.click("#delete-prefix");
  await until(a, "the prefix is deleted", async () => {
    const r = await fetch("/v1/kv/imported/?keys");
    return r.status === 404;
  });

  step(`cutting ${cutRegion} off: the console shows the partition and the differing roots`);
  await a.goto(`${east}/ui/#/cluster`);
  fs.writeFileSync(cutFile, `${cutRegion}\n`);
  await until(a, "the partition is shown", (region) => {
    const p = document.querySelector("#partition-state");
    return p && p.dataset.state === "cut" && p.textContent.includes(region)
      && document.querySelector(`line.link[data-link*="${region}"][data-state="cut"]`) !== null;
  }, cutRegion);
  await put(east, "console/color", "blue");
  await put(south, "console/color", "green");
  await until(a, "the roots differ", () => {
    const v = document.querySelector("#roots-verdict");
    return v && v.dataset.agree === "no";
  });
  await shot(a, "console-partition");
  await a.goto(`${east}/ui/#/divergence`);
  await until(a, "the divergence view names the differing key with each node's value", () => {
    const row = document.querySelector('#diff-table tr[data-key="console/color"]');
    if (row && row.textContent.includes('"blue"') && row.textContent.includes('"green"')) return true;
    const again = document.querySelector("#recheck");
    if (again) again.click();
    return false;
  });
  await shot(a, "console-divergence");

  step("healing: the console shows every region back and one root");
  await a.goto(`${east}/ui/#/cluster`);
  await a.waitForSelector("#roots-verdict");
  fs.unlinkSync(cutFile);
  await until(a, "healed and converged", () => {
    const v = document.querySelector("#roots-verdict");
    const p = document.querySelector("#partition-state");
    return v && v.dataset.agree === "yes" && p && p.dataset.state === "none"
      && document.querySelectorAll('line.link[data-state="up"]').length === 3;
  });
  await until(a, "the heal is in the event log", () =>
    document.querySelector('#events li[data-type="partition_healed"], #events li[data-type="partition_ended"]') !== null);
  await shot(a, "console-healed");
  await a.goto(`${east}/ui/#/divergence`);
  await until(a, "no differing keys and the conflict is logged", () =>
    document.querySelector("#no-diff") !== null && document.querySelector("#conflict-table") !== null
    && document.querySelector("#conflict-table").textContent.includes("console/color"));

  if (process.env.ACL_URL) {
    step("with ACLs on: refused without a token, every view with the management token");
    const g = await open(process.env.ACL_URL, "#/cluster");
    await until(g, "the page says a token is needed", () => {
      const n = document.querySelector("#notice");
      return n && !n.hidden && n.textContent.includes("403") && n.textContent.includes("token");
    });
    await g.fill("#token", process.env.ACL_TOKEN);
    await g.click("#token-form button");
    await until(g, "every member read with the token", () => {
      const v = document.querySelector("#roots-verdict");
      return v && v.dataset.agree === "yes" && document.querySelectorAll("#roots tr[data-node]").length === 2
        && !document.querySelector("#roots").textContent.includes("unreachable");
    });
    await g.evaluate(async (t) => {
      await fetch("/v1/kv/acl/seen", { method: "PUT", body: "yes", headers: { "X-Consul-Token": t } });
    }, process.env.ACL_TOKEN);
    await g.goto(`${process.env.ACL_URL}/ui/#/key/acl/seen`);
    await until(g, "a key read with the token", () => {
      const v = document.querySelector("#value");
      return v && v.textContent === "yes";
    });
  }

  if (errors.length) throw new Error(`errors in the page:\n${errors.join("\n")}`);
  await browser.close();
  console.log("console checks passed");
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
