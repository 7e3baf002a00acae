//! The built `meridian` binary as an operator and an application use it:
//! real processes on loopback, `meridian dev`, `meridian node` from a config
//! file, the CLI, the HTTP API, and an unmodified Consul client library.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use meridian::client::Client;

#[test]
fn dev_cluster_replicates_across_regions_and_verifies() {
    let (dev, api) = dev("dev", 3);
    let put = meridian(&api[0], &["kv", "put", "config/greeting", "hello"]);
    assert!(put.status.success(), "{put:?}");
    let put = meridian(
        &api[0],
        &["kv", "put", "--flags", "42", "config/flagged", "x"],
    );
    assert!(put.status.success(), "{put:?}");
    for other in &api[1..] {
        eventually("the write is visible in another region", || {
            let o = meridian(other, &["kv", "get", "config/greeting"]);
            o.status.success() && stdout(&o) == "hello"
        });
        // Flags replicate with the value.
        eventually("flags replicate", || {
            let o = meridian(other, &["kv", "get", "--json", "config/flagged"]);
            stdout(&o).contains("\"Flags\": 42")
        });
    }
    let list = meridian(&api[2], &["kv", "list", "config/", "--values"]);
    assert_eq!(
        stdout(&list),
        "config/flagged = x\nconfig/greeting = hello\n"
    );
    eventually("verify agrees", || {
        let v = meridian(&api[1], &["verify"]);
        v.status.success() && stdout(&v).contains("all 3 nodes in 3 regions agree on")
    });
    let s = meridian(&api[0], &["status"]);
    assert!(s.status.success());
    let text = stdout(&s);
    assert!(
        text.contains("eu-west-1") && text.contains("ap-southeast-1"),
        "{text}"
    );
    let h = meridian(&api[0], &["health"]);
    assert!(h.status.success(), "{h:?}");
    // Ctrl-C (SIGINT) or SIGTERM stops it cleanly.
    assert!(dev.terminate().success());
}

#[test]
fn blocking_query_returns_when_the_key_changes() {
    let (_dev, api) = dev("blocking", 2);
    let rt = rt();
    rt.block_on(async {
        let a = Client::new(&api[0]).unwrap();
        let b = Client::new(&api[1]).unwrap();
        let put = a
            .request(hyper::Method::PUT, "/v1/kv/app/mode", "one".into())
            .await
            .unwrap();
        assert_eq!(put.text(), "true");
        let mut index = 0;
        for _ in 0..1_200 {
            let r = b.get("/v1/kv/app/mode?raw").await.unwrap();
            if r.text() == "one" {
                index = r.header("X-Consul-Index").unwrap().parse::<u64>().unwrap();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(index > 0, "the first write never reached the second node");
        // Block on the second node; write on the first.
        let path = format!("/v1/kv/app/mode?index={index}&wait=30s");
        let blocked = tokio::spawn(async move { b.get(&path).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !blocked.is_finished(),
            "the blocking query returned before any change"
        );
        a.request(hyper::Method::PUT, "/v1/kv/app/mode", "two".into())
            .await
            .unwrap();
        let r = blocked.await.unwrap();
        assert_eq!(r.status, 200);
        let new_index: u64 = r.header("X-Consul-Index").unwrap().parse().unwrap();
        assert!(new_index > index);
        assert!(r.text().contains("\"Value\":\"dHdv\""), "{}", r.text());
        // With nothing changing, it returns the same data at the deadline.
        let path = format!("/v1/kv/app/mode?index={new_index}&wait=200ms");
        let again = Client::new(&api[1]).unwrap().get(&path).await.unwrap();
        assert!(again.text().contains("dHdv"));
    });
}

#[test]
fn sse_watch_delivers_in_order_and_resumes_from_an_index() {
    let (_dev, api) = dev("watch", 1);
    let rt = rt();
    rt.block_on(async {
        let c = Client::new(&api[0]).unwrap();
        c.request(hyper::Method::PUT, "/v1/kv/other/x", "ignored".into())
            .await
            .unwrap();
        let mut s = c.stream("/v1/watch/w/?index=0").await.unwrap();
        assert_eq!(s.status, 200);
        for i in 1..=5 {
            let path = format!("/v1/kv/w/{i}");
            c.request(hyper::Method::PUT, &path, format!("v{i}").into())
                .await
                .unwrap();
        }
        let mut ids = Vec::new();
        for i in 1..=5 {
            let ev = s.next_event().await.unwrap().unwrap();
            let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap();
            assert_eq!(
                (ev.event.as_str(), v["Key"].as_str().unwrap()),
                ("put", format!("w/{i}").as_str())
            );
            ids.push(ev.id.parse::<u64>().unwrap());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        c.request(hyper::Method::DELETE, "/v1/kv/w/2", Default::default())
            .await
            .unwrap();
        let del = s.next_event().await.unwrap().unwrap();
        assert_eq!(del.event, "delete");
        assert!(del.data.contains("\"Key\":\"w/2\""), "{del:?}");
        drop(s);
        // Resume after w/3: the later changes only (w/2's latest change is its delete).
        let mut s = c
            .stream(&format!("/v1/watch/w/?index={}", ids[2]))
            .await
            .unwrap();
        let mut resumed = Vec::new();
        for _ in 0..3 {
            let ev = s.next_event().await.unwrap().unwrap();
            let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap();
            resumed.push(format!("{} {}", ev.event, v["Key"].as_str().unwrap()));
        }
        assert_eq!(resumed, ["put w/4", "put w/5", "delete w/2"]);
        // And live: a new write arrives on the open stream.
        c.request(hyper::Method::PUT, "/v1/kv/w/6", "v6".into())
            .await
            .unwrap();
        let live = s.next_event().await.unwrap().unwrap();
        assert!(live.data.contains("\"Key\":\"w/6\""), "{live:?}");
    });
}

#[test]
fn verify_names_the_differing_key_and_health_reports_a_down_peer() {
    let root = dir("verify");
    let (pa, pb, pc) = (free_udp_port(), free_udp_port(), free_udp_port());
    let fast = "[health]\npeer_down_ms_max = 1000\n";
    let (_a, a) = node(&root, "a", "us", pa, &[], fast);
    let (b_proc, b) = node(&root, "b", "eu", pb, &[pa], fast);
    // c shares the CA but knows no one and no one knows it: it diverges.
    let (_c, c) = node(&root, "c", "ap", pc, &[], "");
    assert!(meridian(&a, &["kv", "put", "shared", "1"]).status.success());
    eventually("a and b agree", || {
        let v = meridian(&a, &["verify"]);
        v.status.success() && stdout(&v).contains("all 2 nodes in 2 regions agree")
    });
    assert!(meridian(&c, &["kv", "put", "only-on-c", "x"])
        .status
        .success());
    let v = meridian(&a, &["verify", "--node", &c, "--diff"]);
    assert_eq!(v.status.code(), Some(1), "{v:?}");
    let text = stdout(&v);
    assert!(text.contains("DIVERGED"), "{text}");
    assert!(text.contains("only-on-c"), "{text}");
    assert!(text.contains("shared"), "{text}");
    assert!(text.contains("\"x\""), "c's value is shown: {text}");
    // JSON for scripts.
    let j = meridian(&a, &["verify", "--node", &c, "--diff", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(doc["agree"], false);
    assert_eq!(doc["differing_keys"].as_array().unwrap().len(), 2);

    // Health: b stops (SIGTERM: a clean exit), a reports it down past the threshold.
    assert!(meridian(&a, &["health"]).status.success());
    assert!(b_proc.terminate().success());
    eventually("a is unhealthy", || {
        let h = meridian(&a, &["health"]);
        h.status.code() == Some(1) && stdout(&h).contains("peer_down")
    });
    let r = rt()
        .block_on(Client::new(&a).unwrap().get("/v1/health"))
        .unwrap();
    assert_eq!(r.status, 503);
    // A stopped member cannot answer over the mesh; verify says so and fails.
    let v = meridian(&a, &["verify"]);
    assert_eq!(v.status.code(), Some(1));
    let text = stdout(&v);
    assert!(text.contains("unreachable: b (eu)"), "{text}");
    assert!(text.contains("not connected"), "{text}");
    let _ = b;

    // Members are asked over the mesh, not at the API address they
    // announce: one that announces another node's address is verified as
    // itself all the same.
    let wrong = format!("api_advertise = \"{}\"\n", a.trim_start_matches("http://"));
    let (_d, _) = node(&root, "d", "sa", free_udp_port(), &[pa], &wrong);
    eventually("d is verified over the mesh", || {
        let v = meridian(&a, &["verify"]);
        stdout(&v).contains("d (sa) (over the mesh)")
    });
}

#[test]
fn bad_input_gets_4xx_and_writes_nothing() {
    let root = dir("bad");
    let port = free_udp_port();
    let (_n, api) = node(
        &root,
        "n",
        "us",
        port,
        &[],
        "[limits]\nvalue_bytes_max = 1024\n",
    );
    rt().block_on(async {
        let c = Client::new(&api).unwrap();
        let put = |path: String, body: Vec<u8>| {
            let c = c.clone();
            async move {
                c.request(hyper::Method::PUT, &path, body.into())
                    .await
                    .unwrap()
            }
        };
        let r = put("/v1/kv/big".into(), vec![b'x'; 1025]).await;
        assert_eq!(r.status, 413, "{}", r.text());
        assert!(r.error_message().contains("1024"), "{}", r.text());
        let long = "k".repeat(1025);
        let r = put(format!("/v1/kv/{long}"), b"v".to_vec()).await;
        assert_eq!(r.status, 413);
        assert!(r.error_message().contains("key"), "{}", r.text());
        let r = put("/v1/kv/a?cas=abc".into(), b"v".to_vec()).await;
        assert_eq!(r.status, 400);
        assert!(r.header("X-Consul-Index").is_some());
        assert!(r.error_message().contains("cas"));
        let r = put("/v1/kv/a?flags=-1".into(), b"v".to_vec()).await;
        assert_eq!(r.status, 400);
        assert!(r.error_message().contains("flags"));
        let r = put("/v1/kv/%ff%fe".into(), b"v".to_vec()).await;
        assert_eq!(r.status, 400);
        assert!(r.error_message().contains("UTF-8"));
        let r = put("/v1/kv/a%00b".into(), b"v".to_vec()).await;
        assert_eq!(r.status, 400);
        let r = put("/v1/kv/a?acquire=s1".into(), b"v".to_vec()).await;
        assert_eq!(r.status, 400);
        let r = c.get("/v1/kv/a?index=1&wait=forever").await.unwrap();
        assert_eq!(r.status, 400);
        assert!(r.error_message().contains("wait"));
        let r = c.get("/v1/nothing").await.unwrap();
        assert_eq!(r.status, 404);
        // Nothing was written by any of them.
        let r = c.get("/v1/kv/?recurse").await.unwrap();
        assert_eq!(r.status, 404, "{}", r.text());
        let r = c.get("/v1/kv/missing").await.unwrap();
        assert_eq!(r.status, 404);
        assert!(r.header("X-Consul-Index").is_some());
        // A good write still works, and the metrics and status answer.
        assert_eq!(put("/v1/kv/a".into(), b"v".to_vec()).await.text(), "true");
        let m = c.get("/metrics").await.unwrap().text();
        for name in [
            "meridian_writes_total 1",
            "meridian_store_commit_seconds_count",
            "meridian_ae_keys_repaired_total",
            "meridian_bytes_out_total",
            "meridian_clock_skew_refusals_total",
            "meridian_clock_skew_ahead_ms_max",
            "meridian_partitions 0",
        ] {
            assert!(m.contains(name), "{name} missing from:\n{m}");
        }
        let s: serde_json::Value =
            serde_json::from_slice(&c.get("/v1/status").await.unwrap().body).unwrap();
        assert_eq!(s["keys"], 1);
        assert_eq!(s["state"], "active");
    });
}

#[test]
fn config_errors_name_the_field() {
    let root = dir("config");
    let path = root.join("bad.toml");
    std::fs::write(
        &path,
        "name = \"x\"\nregion = \"y\"\nparition_policy = \"quorum\"\n",
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["node", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("parition_policy"), "{err}");
    let o = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(o.status.success() && stdout(&o).contains("meridian"));
}

/// Held while a client library is installed (a venv or node_modules that
/// two tests share must not be created by both at once).
static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A venv under the test target directory with `package` (pinned) from
/// PyPI installed, for one Consul client library; its python.
fn python_with(venv: &str, package: &str) -> std::path::PathBuf {
    // Tests run in parallel and share the venvs: one installs at a time.
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(venv);
    let python = venv.join("bin").join("python");
    if !python.exists() {
        let o = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .expect("python3 is needed for the Consul client tests");
        assert!(o.status.success(), "python3 -m venv: {o:?}");
    }
    let marker = venv.join(format!("installed-{package}"));
    if !marker.exists() {
        let o = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", package])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "pip install {package}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::write(&marker, "").unwrap();
    }
    python
}

/// Runs a Consul client script against a fresh two-region cluster; with
/// `acl`, ACLs are on and the script gets the management token in
/// `MERIDIAN_ACL_ROOT` (it then runs its ACL checks).
fn run_client(
    name: &str,
    program: &Path,
    script: &str,
    env: &[(&str, &std::ffi::OsStr)],
    acl: bool,
) {
    let (_dev, api, lines) = dev_with(name, 2, if acl { &["--acl"] } else { &[] });
    let root = lines
        .iter()
        .find_map(|l| l.strip_prefix("management token: "))
        .unwrap_or("")
        .to_string();
    assert_eq!(acl, !root.is_empty(), "{lines:#?}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let mut cmd = Command::new(program);
    cmd.arg(&script)
        .arg(api[0].trim_start_matches("http://"))
        .arg(api[1].trim_start_matches("http://"))
        .envs(env.iter().copied());
    if acl {
        cmd.env("MERIDIAN_ACL_ROOT", &root);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout(&o).contains("all checks passed"));
}

/// Unmodified Consul client libraries against two regions: get, put,
/// delete, recurse, keys, cas, flags, blocking queries (woken by a write in
/// the other region; not by writes to other keys), txn, the probes, a
/// session call that raises, `?dc=` and `?consistent`. py-consul from PyPI:
#[test]
fn consul_client_library_works_unchanged() {
    let python = python_with("consul-venv", "py-consul==1.8.0");
    run_client("consul", &python, "consul_client.py", &[], false);
}

/// ... python-consul2 from PyPI:
#[test]
fn python_consul2_works_unchanged() {
    let python = python_with("consul2-venv", "python-consul2==0.1.5");
    run_client("consul2", &python, "consul_client2.py", &[], false);
}

/// With ACLs on, each library with a token that may write only under a
/// prefix: 403s raise the library's ACLPermissionDenied, recursive reads
/// and key lists are filtered, a transaction with a forbidden operation
/// writes nothing, the token works in the other region and stops there
/// when deleted (tests/consul_common.py `acl_checks`; node-consul's in
/// tests/consul_client.cjs).
#[test]
fn consul_client_libraries_honour_acl_tokens() {
    let python = python_with("consul-venv", "py-consul==1.8.0");
    run_client("consul-acl", &python, "consul_client.py", &[], true);
    let python = python_with("consul2-venv", "python-consul2==0.1.5");
    run_client("consul2-acl", &python, "consul_client2.py", &[], true);
    let modules = node_consul();
    run_client(
        "consul-npm-acl",
        Path::new("node"),
        "consul_client.cjs",
        &[("NODE_PATH", modules.as_os_str())],
        true,
    );
}

/// ... and npm's `consul` (node-consul):
#[test]
fn node_consul_works_unchanged() {
    let modules = node_consul();
    run_client(
        "consul-npm",
        Path::new("node"),
        "consul_client.cjs",
        &[("NODE_PATH", modules.as_os_str())],
        false,
    );
}

/// npm's `consul` (pinned) installed under the test target directory; its
/// node_modules.
fn node_consul() -> std::path::PathBuf {
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    npm_package("consul-npm", "consul@2.0.1")
}
