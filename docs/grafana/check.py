#!/usr/bin/env python3
"""Runs every query of the Grafana dashboard (meridian.json) through a real
Prometheus scraping a real `meridian dev` cluster, across a partition and
its heal, and fails if one does not parse or gives no series.

Needs Debian's `prometheus` (apt-get install prometheus) and a built
`meridian` (MERIDIAN, default target/release/meridian). With SHOT=file.png
and playwright-core on NODE_PATH, it also saves Prometheus's own graph of
the partition's key series (Grafana is not installable on these machines).

    python3 docs/grafana/check.py
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MERIDIAN = os.environ.get("MERIDIAN", os.path.join(ROOT, "target/release/meridian"))
API_PORT = 18600
PROM_PORT = 19090
REGIONS = ["us-east", "eu-west", "ap-southeast"]
LOAD_S, CUT_AT_S, HEAL_AT_S = 60, 20, 35


def get(url, body=None, method="GET"):
    req = urllib.request.Request(url, data=body, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def main():
    tmp = tempfile.mkdtemp(prefix="meridian-grafana-")
    dev = subprocess.Popen(
        [MERIDIAN, "dev", "--dir", f"{tmp}/dev", "--api-port", str(API_PORT)],
        stdout=subprocess.PIPE, text=True)
    prom = None
    try:
        for line in dev.stdout:
            if line.startswith("ready:"):
                break
        targets = [f"127.0.0.1:{API_PORT + i}" for i in range(len(REGIONS))]
        with open(f"{tmp}/prometheus.yml", "w") as f:
            f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: meridian\n"
                    f"    static_configs:\n      - targets: {json.dumps(targets)}\n")
        prom = subprocess.Popen(
            ["prometheus", f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/tsdb",
             f"--web.listen-address=127.0.0.1:{PROM_PORT}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = time.time()
        cut = f"{tmp}/dev/cut-off"
        i = 0
        while time.time() - start < LOAD_S:
            t = time.time() - start
            if CUT_AT_S <= t < HEAL_AT_S and not os.path.exists(cut):
                with open(cut, "w") as f:
                    f.write("ap-southeast\n")
                print(f"{t:.0f} s: ap-southeast cut off")
            if t >= HEAL_AT_S and os.path.exists(cut):
                os.unlink(cut)
                print(f"{t:.0f} s: healed")
            for n, port in enumerate(range(API_PORT, API_PORT + len(REGIONS))):
                # The same keys in every region: the partition makes conflicts.
                get(f"http://127.0.0.1:{port}/v1/kv/load/k{i % 50}", f"{n}-{i}".encode(), "PUT")
            i += 1
            time.sleep(0.05)
        time.sleep(3)
        dash = json.load(open(os.path.join(HERE, "meridian.json")))
        end = time.time()
        failed = 0
        for p in dash["panels"]:
            for t in p["targets"]:
                q = urllib.parse.urlencode({"query": t["expr"], "start": start, "end": end, "step": 2})
                r = json.loads(get(f"http://127.0.0.1:{PROM_PORT}/api/v1/query_range?{q}"))
                series = len(r["data"]["result"]) if r.get("status") == "success" else 0
                ok = series > 0
                failed += not ok
                print(f"{'ok ' if ok else 'NO '} {series:3} series  {p['title']}: {t['expr']}")
        shot = os.environ.get("SHOT")
        if shot:
            exprs = ["meridian_peer_lag_seconds", "meridian_partitions",
                     "sum by (instance) (increase(meridian_conflicts_total[5m]))"]
            graph = "&".join(
                f"g{k}.expr={urllib.parse.quote(e)}&g{k}.tab=0&g{k}.range_input=2m" for k, e in enumerate(exprs))
            script = (
                "const {chromium}=require('playwright-core');(async()=>{"
                "const b=await chromium.launch({executablePath:process.env.CHROMIUM||'/usr/bin/chromium',args:['--no-sandbox']});"
                "const p=await b.newPage({viewport:{width:1280,height:2450}});"
                f"await p.goto('http://127.0.0.1:{PROM_PORT}/graph?{graph}');"
                "await p.waitForTimeout(4000);"
                f"await p.screenshot({{path:{json.dumps(shot)},fullPage:false}});await b.close();}})()"
                ".catch(e=>{console.error(e);process.exit(1)})")
            subprocess.run(["node", "-e", script], check=True)
            print(f"screenshot: {shot}")
        print(f"{failed} of the dashboard's queries gave no series" if failed else "every query of the dashboard gave series")
        return 1 if failed else 0
    finally:
        for p in (prom, dev):
            if p:
                p.terminate()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
