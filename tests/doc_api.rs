//! Documents (issue 16) over HTTP with real processes: every `/v1/doc`
//! endpoint and its refusals, documents as ordinary values to `/v1/kv`
//! (reads, blocking queries, writes of JSON), the CLI, and the partition
//! case of `meridian dev --partition-demo`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use hyper::{Method, StatusCode};
use meridian::api::wire;
use meridian::client::{Client, Reply};
use serde_json::{json, Value};

async fn call(c: &Client, method: Method, path: &str, body: &str) -> Reply {
    c.request(method, path, Bytes::from(body.to_string()))
        .await
        .unwrap()
}

async fn doc_of(c: &Client, key: &str) -> Value {
    let r = call(c, Method::GET, &format!("/v1/doc/{key}"), "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

/// `n` characters of 64 kinds in no order (deflate saves little of them).
fn noise(n: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(ALPHABET[(x % 64) as usize])
        })
        .collect()
}

fn index(r: &Reply) -> u64 {
    r.header("X-Consul-Index").unwrap().parse().unwrap()
}

#[test]
fn every_document_endpoint_and_its_refusals() {
    let (_p, addrs) = dev("doc-api", 1);
    let api = addrs[0].clone();
    let rt = rt();
    rt.block_on(async {
        let c = Client::new(&api).unwrap();
        // PUT a whole document.
        let r = call(&c, Method::PUT, "/v1/doc/svc", r#"{"a": 1, "b": {"c": 2}}"#).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let w: wire::DocWritten = serde_json::from_slice(&r.body).unwrap();
        assert!(w.modify_index > 0);
        assert_eq!(doc_of(&c, "svc").await, json!({"a": 1, "b": {"c": 2}}));
        let first: wire::DocAnswer = c.get_json("/v1/doc/svc?heads").await.unwrap();
        assert_eq!(first.modify_index, w.modify_index);
        assert_eq!(first.heads.len(), 1);

        // PATCH: an RFC 7386 merge patch.
        let r = call(
            &c,
            Method::PATCH,
            "/v1/doc/svc",
            r#"{"b": {"c": null, "d": 3}}"#,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(doc_of(&c, "svc").await, json!({"a": 1, "b": {"d": 3}}));
        // ?at= an earlier version.
        let at = first.heads.join(",");
        let old: Value = c.get_json(&format!("/v1/doc/svc?at={at}")).await.unwrap();
        assert_eq!(old, json!({"a": 1, "b": {"c": 2}}));

        // To /v1/kv the document is its JSON.
        let raw = call(&c, Method::GET, "/v1/kv/svc?raw", "").await;
        let v: Value = serde_json::from_slice(&raw.body).unwrap();
        assert_eq!(v, json!({"a": 1, "b": {"d": 3}}));
        let entries: Vec<wire::KvEntry> = c.get_json("/v1/kv/svc").await.unwrap();
        let v: Value = serde_json::from_slice(&entries[0].value).unwrap();
        assert_eq!(v, json!({"a": 1, "b": {"d": 3}}));

        // A blocking query on the key fires on a document change.
        let at = index(&raw);
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move {
                call(
                    &c,
                    Method::GET,
                    &format!("/v1/kv/svc?index={at}&wait=10s"),
                    "",
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = call(&c, Method::PATCH, "/v1/doc/svc", r#"{"e": true}"#).await;
        assert_eq!(r.status, StatusCode::OK);
        let woke = waiter.await.unwrap();
        assert!(index(&woke) > at);
        let entries: Vec<wire::KvEntry> = serde_json::from_slice(&woke.body).unwrap();
        let v: Value = serde_json::from_slice(&entries[0].value).unwrap();
        assert_eq!(v["e"], json!(true));

        // A KV PUT of JSON to a document key is a document write...
        let r = call(&c, Method::PUT, "/v1/kv/svc", r#"{"a": 5, "b": {"d": 3}}"#).await;
        assert_eq!(r.text(), "true");
        assert_eq!(doc_of(&c, "svc").await, json!({"a": 5, "b": {"d": 3}}));
        // ...and anything else is refused with nothing written.
        let before = doc_of(&c, "svc").await;
        for body in ["not json", "[1, 2]", "{\"unterminated\": "] {
            let r = call(&c, Method::PUT, "/v1/kv/svc", body).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
            assert!(r.error_message().contains("document"), "{}", r.text());
            let r = call(&c, Method::PUT, "/v1/doc/svc", body).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        }
        assert_eq!(doc_of(&c, "svc").await, before);

        // Check-and-set.
        let cur: wire::DocAnswer = c.get_json("/v1/doc/svc?heads").await.unwrap();
        let r = call(&c, Method::PATCH, "/v1/doc/svc?cas=1", r#"{"x": 1}"#).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
        let path = format!("/v1/doc/svc?cas={}", cur.modify_index);
        let r = call(&c, Method::PATCH, &path, r#"{"x": 1}"#).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());

        // A plain value is no document: a patch and a read say so.
        assert_eq!(
            call(&c, Method::PUT, "/v1/kv/plain", "text").await.text(),
            "true"
        );
        let r = call(&c, Method::PATCH, "/v1/doc/plain", r#"{"x": 1}"#).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
        let r = call(&c, Method::GET, "/v1/doc/plain", "").await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
        // Absent keys, bad heads, other methods.
        let r = call(&c, Method::GET, "/v1/doc/absent", "").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = call(&c, Method::GET, "/v1/doc/svc?at=zz", "").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
        let r = call(
            &c,
            Method::GET,
            &format!("/v1/doc/svc?at={}", "ab".repeat(32)),
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
        let r = call(&c, Method::OPTIONS, "/v1/doc/svc", "").await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        // History is bounded: each write of a 500 KB field keeps the one
        // before, until the saved document would pass half the value
        // limit; then it starts over from its JSON. Every write is taken.
        for n in 0..4u64 {
            let x: String = noise(500_000, n + 1);
            let r = call(
                &c,
                Method::PUT,
                "/v1/doc/big",
                &json!({ "x": x }).to_string(),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{n}: {}", r.error_message());
            let held = doc_of(&c, "big").await;
            assert_eq!(held["x"].as_str(), Some(x.as_str()));
        }
        let m = call(&c, Method::GET, "/metrics", "").await.text();
        let compactions = m
            .lines()
            .find(|l| l.starts_with("meridian_doc_compactions_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(compactions.is_some_and(|n| n >= 1), "{m}");
        // A body past the value limit: 413, nothing written.
        let huge = json!({ "x": noise(1_200_000, 9) }).to_string();
        let r = call(&c, Method::PUT, "/v1/doc/huge", &huge).await;
        assert_eq!(
            r.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            r.error_message()
        );
        assert_eq!(
            call(&c, Method::GET, "/v1/doc/huge", "").await.status,
            StatusCode::NOT_FOUND
        );

        // DELETE as for KV.
        let r = call(&c, Method::DELETE, "/v1/doc/svc", "").await;
        assert_eq!(r.text(), "true");
        let r = call(&c, Method::GET, "/v1/doc/svc", "").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    });

    // The CLI.
    let o = meridian(&api, &["doc", "put", "cli/d", r#"{"a": 1}"#]);
    assert!(o.status.success(), "{o:?}");
    let o = meridian(&api, &["doc", "patch", "cli/d", r#"{"b": [1, 2]}"#]);
    assert!(o.status.success(), "{o:?}");
    let o = meridian(&api, &["doc", "get", "cli/d"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v, json!({"a": 1, "b": [1, 2]}));
    let o = meridian(&api, &["doc", "history", "cli/d"]);
    assert!(
        stdout(&o).contains(r#"{"a":1,"b":[1,2]}"#),
        "{}",
        stdout(&o)
    );
    let o = meridian(&api, &["doc", "patch", "cli/d", "[1]"]);
    assert!(!o.status.success());
}

#[test]
fn the_partition_demo_merges_a_document_changed_on_both_sides() {
    let (p, _addrs, _) = dev_with("doc-partition", 2, &["--partition-demo"]);
    let mut seen = p.until("document demo/service in");
    seen.extend(p.until("document demo/service in"));
    let docs: Vec<Value> = seen
        .iter()
        .filter(|l| l.contains("document demo/service in"))
        .map(|l| serde_json::from_str(l.split_once(": ").unwrap().1).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{seen:#?}");
    for d in docs {
        assert_eq!(d, json!({"rps": 200, "timeout_ms": 900}), "{seen:#?}");
    }
}
