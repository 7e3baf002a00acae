//! The operators' console (`/ui/`): its files as a node serves them, the
//! cross-origin reads members' consoles make of each other, and the page
//! itself in headless Chromium against a real `meridian dev` cluster
//! (tests/console_browser.cjs, through playwright-core from npm, pinned).
//!
//! The browser test needs Chromium (Debian's `chromium`, or `CHROMIUM`):
//! without one it says so and passes, unless `MERIDIAN_BROWSER_TESTS=require`
//! (as `.ci/run` sets), where a missing browser fails it.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// playwright-core, pinned: drives the Chromium given to it (no download).
const PLAYWRIGHT: &str = "playwright-core@1.64.1";

/// A raw HTTP/1.1 request: the status line and headers (lower-cased), and the body.
fn raw(api: &str, head: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(api.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{head}Host: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (h, b) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (h.to_ascii_lowercase(), b.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

#[test]
fn the_console_is_served_and_only_members_consoles_read_across_nodes() {
    let (_dev, apis) = dev("console-serve", 2);
    let (a, b) = (&apis[0], &apis[1]);

    // The page and its files, from the binary, with their types.
    let (h, body) = raw(a, "GET /ui/ HTTP/1.1\r\n");
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert_eq!(header(&h, "content-type"), Some("text/html; charset=utf-8"));
    assert!(header(&h, "content-security-policy").is_some_and(|c| c.contains("default-src 'self'")));
    assert!(body.contains("/ui/app.js"));
    let (h, _) = raw(a, "GET /ui/app.js HTTP/1.1\r\n");
    assert_eq!(
        header(&h, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let (h, body) = raw(a, "GET /ui/nothing.js HTTP/1.1\r\n");
    assert!(h.starts_with("http/1.1 404"), "{h}");
    assert!(body.contains("\"error\""), "{body}");
    let (h, _) = raw(a, "GET / HTTP/1.1\r\n");
    assert!(h.starts_with("http/1.1 301"), "{h}");
    assert_eq!(header(&h, "location"), Some("/ui/"));

    // The other member's console may read this node: its origin is allowed,
    // preflights are answered (before the ACL gate).
    let origin = b.clone();
    // (Known from the status the API refreshes every 500 ms.)
    let status_from = |o: &str| raw(a, &format!("GET /v1/status HTTP/1.1\r\nOrigin: {o}\r\n")).0;
    eventually("a knows b's API address", || {
        header(&status_from(&origin), "access-control-allow-origin").is_some()
    });
    let h = status_from(&origin);
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some(origin.as_str())
    );
    let (h, _) = raw(
        a,
        &format!(
            "OPTIONS /v1/kv/x HTTP/1.1\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: PUT\r\n\
             Access-Control-Request-Headers: x-consul-token\r\n"
        ),
    );
    assert!(h.starts_with("http/1.1 204"), "{h}");
    assert!(
        header(&h, "access-control-allow-headers").is_some_and(|v| v.contains("x-consul-token"))
    );
    // Its own origin too (a page that names this node by its address).
    let (h, _) = raw(a, &format!("GET /v1/health HTTP/1.1\r\nOrigin: {a}\r\n"));
    assert_eq!(header(&h, "access-control-allow-origin"), Some(a.as_str()));
    // Any other site gets nothing that lets a browser read the answer.
    for other in ["http://evil.example", "http://127.0.0.1:1", "null"] {
        let (h, _) = raw(
            a,
            &format!("GET /v1/status HTTP/1.1\r\nOrigin: {other}\r\n"),
        );
        assert!(h.starts_with("http/1.1 200"), "{h}");
        assert_eq!(header(&h, "access-control-allow-origin"), None, "{other}");
        let (h, _) = raw(
            a,
            &format!(
                "OPTIONS /v1/kv/x HTTP/1.1\r\nOrigin: {other}\r\nAccess-Control-Request-Method: PUT\r\n"
            ),
        );
        assert_eq!(header(&h, "access-control-allow-origin"), None, "{other}");
    }
}

/// Every metric the Grafana dashboard (docs/grafana/meridian.json) queries
/// is one a real node exports, and the dashboard is well formed: each panel
/// has a query, an id of its own and a place on Grafana's 24-column grid.
#[test]
fn the_grafana_dashboard_queries_metrics_a_node_exports() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/meridian.json"),
    )
    .unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut ids = std::collections::HashSet::new();
    let mut names = std::collections::BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "{p}");
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{p}"
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{p}");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("meridian_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
    }
    let (_dev, apis) = dev("console-metrics", 2);
    // Per-peer series appear once the peers have exchanged their feeds.
    let missing = || {
        let (_, metrics) = raw(&apis[0], "GET /metrics HTTP/1.1\r\n");
        let exported: std::collections::HashSet<&str> = metrics
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        names
            .iter()
            .filter(|n| !exported.contains(n.as_str()))
            .cloned()
            .collect::<Vec<_>>()
    };
    eventually("every metric the dashboard queries is exported", || {
        missing().is_empty()
    });
}

/// The browser: `CHROMIUM`, else Debian's.
fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// In one region's console: write a key and see it in another region's;
/// edit it there and roll it back here from the history (with its diff);
/// cut a region off (the dev cluster's cut-off file) and see the
/// partition, the differing roots and the differing key with each node's
/// value; heal and see every link back, one root and the conflict logged;
/// export a prefix, import it under another, delete that prefix; and with
/// ACLs on, be refused without a token and read every view with one.
/// Screenshots go to target/tmp/console-shots (the README's, with
/// `MERIDIAN_SCREENSHOTS=docs/console`).
#[test]
fn the_console_in_a_browser_shows_writes_rollback_partition_and_heal() {
    let Some(browser) = chromium() else {
        assert_ne!(
            std::env::var("MERIDIAN_BROWSER_TESTS").as_deref(),
            Ok("require"),
            "no Chromium found (install Debian's chromium, or set CHROMIUM)"
        );
        eprintln!("skipped: no Chromium (install Debian's chromium, or set CHROMIUM)");
        return;
    };
    let modules = npm_package("console-npm", PLAYWRIGHT);
    let name = "console-browser";
    let (_dev, apis) = dev(name, 3);
    // dev() made this directory (see common::dir); the cut-off file goes in it.
    let dir = std::env::temp_dir().join(format!("meridian-cli-{}-{name}", std::process::id()));
    let cut_file = dir.join("cut-off");
    let shots = std::env::var("MERIDIAN_SCREENSHOTS")
        .map(|d| Path::new(env!("CARGO_MANIFEST_DIR")).join(d))
        .unwrap_or_else(|_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-shots"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console_browser.cjs");
    // A second cluster with ACLs on (default deny): the page needs a token.
    let (_acl_dev, acl_apis, lines) = dev_with("console-acl", 2, &["--acl"]);
    let token = lines
        .iter()
        .find_map(|l| l.strip_prefix("management token: "))
        .expect("dev --acl prints the management token")
        .trim()
        .to_string();
    let o = Command::new("node")
        .arg(&script)
        .env("ACL_URL", &acl_apis[0])
        .env("ACL_TOKEN", &token)
        .env("NODE_PATH", &modules)
        .env("URLS", apis.join(","))
        .env("CUT_FILE", &cut_file)
        .env("CUT_REGION", "ap-southeast")
        .env("CHROMIUM", &browser)
        .env("SHOTS", &shots)
        .output()
        .expect("node is needed for the console's browser test");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("console checks passed"),
        "{}:\n{out}\n{}",
        script.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}
