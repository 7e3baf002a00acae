//! The Consul contract as a client meets it over HTTP, with real node
//! processes in two regions: the start-up probes, the 501 for what is not
//! served, paths and parameters as Consul takes them, gzip, `/v1/txn`,
//! per-query indexes, and `?consistent` and `?dc=` with a region gone.
//! (The client libraries themselves run in tests/cli.rs.)

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use hyper::{Method, StatusCode};
use meridian::client::{Client, Reply};

fn two_regions(name: &str) -> (std::path::PathBuf, (Proc, String), (Proc, String)) {
    let root = dir(name);
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let a = node(&root, "a", "us", pa, &[pb], "");
    let b = node(&root, "b", "eu", pb, &[pa], "");
    (root, a, b)
}

/// Waits until `c` knows both regions and takes writes (a new node
/// rebuilds from its first peer before it does).
async fn ready(c: &Client) {
    for _ in 0..600 {
        let dcs: Vec<String> = c.get_json("/v1/catalog/datacenters").await.unwrap();
        let leader: String = c.get_json("/v1/status/leader").await.unwrap();
        if dcs.len() == 2 && !leader.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the node never knew both regions and took writes");
}

async fn call(c: &Client, method: Method, path: &str, body: &str) -> Reply {
    c.request(method, path, Bytes::from(body.to_string()))
        .await
        .unwrap()
}

fn index(r: &Reply) -> u64 {
    r.header("X-Consul-Index").unwrap().parse().unwrap()
}

/// A raw GET with `Accept-Encoding: gzip`: the status line and headers.
fn head_gzip(api: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(api.trim_start_matches("http://")).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase()
}

#[test]
fn probes_refusals_paths_parameters_txn_and_indexes() {
    let (_root, (_a, api_a), (_b, api_b)) = two_regions("contract");
    let rt = rt();
    rt.block_on(async {
        let a = Client::new(&api_a).unwrap();
        let b = Client::new(&api_b).unwrap();
        ready(&a).await;
        ready(&b).await;

        // The probes.
        let leader = call(&a, Method::GET, "/v1/status/leader", "").await;
        assert_eq!(leader.status, StatusCode::OK);
        let leader: String = serde_json::from_slice(&leader.body).unwrap();
        assert_eq!(leader, api_a.trim_start_matches("http://"));
        let me: serde_json::Value = a.get_json("/v1/agent/self").await.unwrap();
        assert_eq!(me["Config"]["Datacenter"], "us");
        assert_eq!(me["Config"]["NodeName"], "a");
        assert_eq!(me["Member"]["Tags"]["dc"], "us");
        assert_eq!(me["Member"]["Status"], 1);
        let dcs: Vec<String> = a.get_json("/v1/catalog/datacenters").await.unwrap();
        assert_eq!(dcs, ["us", "eu"]);
        let members: Vec<serde_json::Value> = a.get_json("/v1/agent/members").await.unwrap();
        assert_eq!(members.len(), 2, "{members:?}");

        // Consul endpoints not served: a 501 that names what is; others 404.
        for (method, path) in [
            (Method::PUT, "/v1/session/create"),
            (Method::GET, "/v1/health/service/web"),
            (Method::GET, "/v1/catalog/nodes"),
            (Method::GET, "/v1/agent/services"),
        ] {
            let r = call(&a, method, path, "").await;
            assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED, "{path}");
            assert!(r.error_message().contains("/v1/kv"), "{}", r.text());
        }
        assert_eq!(
            call(&a, Method::GET, "/v1/nothing", "").await.status,
            StatusCode::NOT_FOUND
        );

        // Paths: `//` is cleaned, a key beginning with `/` refused.
        let put = call(&a, Method::PUT, "/v1/kv//app//x", "v").await;
        assert_eq!(put.text(), "true");
        assert_eq!(
            call(&a, Method::GET, "/v1/kv/app/x?raw", "").await.text(),
            "v"
        );
        assert_eq!(
            call(&a, Method::GET, "/v1/kv//app/x?raw", "").await.text(),
            "v"
        );
        let slash = call(&a, Method::PUT, "/v1/kv/%2Fapp", "v").await;
        assert_eq!(slash.status, StatusCode::BAD_REQUEST);
        assert!(
            slash.error_message().contains("leading '/'"),
            "{}",
            slash.text()
        );
        // Parameters: a wait needs its unit; stale and consistent conflict.
        let r = call(&a, Method::GET, "/v1/kv/app/x?index=1&wait=10", "").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(
            r.error_message().contains("Invalid wait time"),
            "{}",
            r.text()
        );
        let r = call(&a, Method::GET, "/v1/kv/app/x?stale&consistent", "").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);

        // gzip when the client accepts it.
        let big = "config line\n".repeat(500);
        assert_eq!(
            call(&a, Method::PUT, "/v1/kv/app/big", &big).await.text(),
            "true"
        );
        let head = head_gzip(&api_a, "/v1/kv/app/big?raw");
        assert!(head.contains("content-encoding: gzip"), "{head}");
        let plain = call(&a, Method::GET, "/v1/kv/app/big?raw", "").await;
        assert_eq!(plain.text(), big);

        // Indexes: a key's own; a prefix's greatest, deletes included; an
        // unrelated write changes neither.
        let k = call(&a, Method::GET, "/v1/kv/app/x", "").await;
        let list = call(&a, Method::GET, "/v1/kv/app/?recurse", "").await;
        call(&a, Method::PUT, "/v1/kv/other/y", "1").await;
        assert_eq!(
            index(&call(&a, Method::GET, "/v1/kv/app/x", "").await),
            index(&k)
        );
        let list2 = call(&a, Method::GET, "/v1/kv/app/?recurse", "").await;
        assert_eq!(index(&list2), index(&list));
        call(&a, Method::DELETE, "/v1/kv/app/big", "").await;
        let list3 = call(&a, Method::GET, "/v1/kv/app/?keys", "").await;
        assert!(
            index(&list3) > index(&list),
            "a delete under the prefix moves its index"
        );
        let missing = call(&a, Method::GET, "/v1/kv/never/written", "").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert!(index(&missing) > 0);
        // A blocking query on the key, with other keys written meanwhile,
        // returns at its deadline with the index it was given.
        let path = format!("/v1/kv/app/x?index={}&wait=1s", index(&k));
        let blocked = tokio::spawn({
            let a = Client::new(&api_a).unwrap();
            async move { a.get(&path).await.unwrap() }
        });
        for i in 0..5 {
            call(&a, Method::PUT, &format!("/v1/kv/app/x{i}"), "o").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let blocked = blocked.await.unwrap();
        assert_eq!(blocked.status, StatusCode::OK);
        assert_eq!(index(&blocked), index(&k));

        // A transaction: all or nothing.
        let ok = call(
            &a,
            Method::PUT,
            "/v1/txn",
            r#"[{"KV": {"Verb": "set", "Key": "t/a", "Value": "YQ=="}},
                {"KV": {"Verb": "get", "Key": "t/a"}}]"#,
        )
        .await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
        let body: serde_json::Value = serde_json::from_slice(&ok.body).unwrap();
        assert_eq!(body["Errors"], serde_json::Value::Null);
        assert_eq!(body["Results"][0]["KV"]["Value"], serde_json::Value::Null);
        assert_eq!(body["Results"][1]["KV"]["Value"], "YQ==");
        let failed = call(
            &a,
            Method::PUT,
            "/v1/txn",
            r#"[{"KV": {"Verb": "set", "Key": "t/b", "Value": "Yg=="}},
                {"KV": {"Verb": "check-not-exists", "Key": "t/a"}},
                {"KV": {"Verb": "lock", "Key": "t/c", "Session": "s"}}]"#,
        )
        .await;
        assert_eq!(failed.status, StatusCode::CONFLICT, "{}", failed.text());
        let body: serde_json::Value = serde_json::from_slice(&failed.body).unwrap();
        assert_eq!(body["Results"], serde_json::Value::Null);
        assert_eq!(body["Errors"][0]["OpIndex"], 2, "{body}");
        assert_eq!(
            call(&a, Method::GET, "/v1/kv/t/b", "").await.status,
            StatusCode::NOT_FOUND
        );
        let failed = call(
            &a,
            Method::PUT,
            "/v1/txn",
            r#"[{"KV": {"Verb": "set", "Key": "t/b", "Value": "Yg=="}},
                {"KV": {"Verb": "check-not-exists", "Key": "t/a"}}]"#,
        )
        .await;
        assert_eq!(failed.status, StatusCode::CONFLICT);
        let body: serde_json::Value = serde_json::from_slice(&failed.body).unwrap();
        assert_eq!(body["Errors"][0]["OpIndex"], 1, "{body}");
        assert_eq!(body["Errors"][0]["What"], "key \"t/a\" exists");
        assert_eq!(
            call(&a, Method::GET, "/v1/kv/t/b", "").await.status,
            StatusCode::NOT_FOUND
        );
        let many: Vec<String> = (0..65)
            .map(|i| format!(r#"{{"KV": {{"Verb": "get", "Key": "t/{i}"}}}}"#))
            .collect();
        let r = call(&a, Method::PUT, "/v1/txn", &format!("[{}]", many.join(","))).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
        let r = call(&a, Method::PUT, "/v1/txn", "[{").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);

        // ?dc: served by the other region's node, at once.
        let put = call(&a, Method::PUT, "/v1/kv/dc/x?dc=eu", "there").await;
        assert_eq!(put.text(), "true");
        assert_eq!(
            call(&b, Method::GET, "/v1/kv/dc/x?raw", "").await.text(),
            "there"
        );
        call(&b, Method::PUT, "/v1/kv/dc/y", "only-b-yet").await;
        let r = call(&a, Method::GET, "/v1/kv/dc/y?raw&dc=eu", "").await;
        assert_eq!(r.text(), "only-b-yet");
        let r = call(&a, Method::GET, "/v1/kv/dc/y?dc=mars", "").await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.error_message(), "No path to datacenter");
        // ?consistent sees what the other region acknowledged just before.
        for i in 0..5 {
            call(&b, Method::PUT, "/v1/kv/c/k", &i.to_string()).await;
            let r = call(&a, Method::GET, "/v1/kv/c/k?raw&consistent", "").await;
            assert_eq!(r.text(), i.to_string());
        }
    });
}

#[test]
fn consistent_reads_and_dc_refuse_when_a_region_is_gone() {
    let (_root, (_a, api_a), (b, _api_b)) = two_regions("gone");
    let rt = rt();
    rt.block_on(async {
        let a = Client::new(&api_a).unwrap();
        ready(&a).await;
        // An empty store: the root's key list is `[]`, a prefix's a 404 (as Consul).
        let root = call(&a, Method::GET, "/v1/kv/?keys", "").await;
        assert_eq!((root.status, root.text().as_str()), (StatusCode::OK, "[]"));
        let r = call(&a, Method::GET, "/v1/kv/app/?keys", "").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let mut ok = false;
        for _ in 0..600 {
            let r = call(&a, Method::GET, "/v1/kv/k?consistent", "").await;
            if r.status == StatusCode::NOT_FOUND {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            ok,
            "the consistent read never succeeded with both regions up"
        );
        assert!(b.terminate().success());
        let mut refused = None;
        for _ in 0..600 {
            let r = call(&a, Method::GET, "/v1/kv/k?consistent", "").await;
            if r.status == StatusCode::SERVICE_UNAVAILABLE {
                refused = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = refused.expect("a consistent read with a region gone is refused");
        assert!(r.error_message().contains("eu"), "{}", r.text());
        let r = call(&a, Method::GET, "/v1/kv/k?dc=eu", "").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
        // The default (stale) read is served.
        assert_eq!(
            call(&a, Method::GET, "/v1/kv/k", "").await.status,
            StatusCode::NOT_FOUND
        );
    });
}
