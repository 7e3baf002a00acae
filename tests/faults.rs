//! Faults injected into real processes of the built binary, and what an
//! operator or a client sees of them: each test here failed before the fix
//! it guards.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::Method;
use meridian::client::Client;

fn http(addr: &str, method: Method, path: &str, body: &str) -> (u16, String) {
    let r = rt()
        .block_on(Client::new(addr).unwrap().request(
            method,
            path,
            bytes::Bytes::from(body.to_string()),
        ))
        .unwrap();
    (r.status.as_u16(), r.text())
}

fn root(addr: &str) -> String {
    let (code, body) = http(addr, Method::GET, "/v1/digest", "");
    assert_eq!(code, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    doc["root"].as_str().unwrap().to_string()
}

fn status(addr: &str) -> serde_json::Value {
    let (code, body) = http(addr, Method::GET, "/v1/status", "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A delete taken by a region that never saw the key still wins over the
/// earlier write made elsewhere: it writes a tombstone with its stamp.
#[test]
fn a_delete_of_a_key_never_seen_here_wins_over_the_earlier_write() {
    let root_dir = dir("absent-delete");
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let (_a, a) = node(&root_dir, "a", "us", pa, &[], "");
    // b runs on its own first: it cannot see what a holds.
    let (b_alone, b) = node(&root_dir, "b", "eu", pb, &[], "");
    assert_eq!(http(&a, Method::PUT, "/v1/kv/del/x", "v").0, 200);
    std::thread::sleep(Duration::from_millis(20));
    let (code, body) = http(&b, Method::DELETE, "/v1/kv/del/x", "");
    assert_eq!((code, body.trim()), (200, "true"));
    // b joins a: the delete was acknowledged later, so it wins everywhere.
    assert!(b_alone.terminate().success());
    let (_b, b) = node(&root_dir, "b", "eu", pb, &[pa], "");
    eventually("both hold the same data", || root(&a) == root(&b));
    for n in [&a, &b] {
        let (code, body) = http(n, Method::GET, "/v1/kv/del/x", "");
        assert_eq!(code, 404, "del/x came back at {n}: {body}");
    }
}

/// `cas` deletes answer as Consul does: a key that is not live answers
/// true and writes nothing; another version answers false.
#[test]
fn cas_deletes_answer_as_consul_does() {
    let root_dir = dir("cas-delete");
    let (_a, a) = node(&root_dir, "a", "us", free_udp_port(), &[], "");
    let index = |a: &str| status(a)["index"].as_u64().unwrap();
    let before = index(&a);
    let (code, body) = http(&a, Method::DELETE, "/v1/kv/none?cas=5", "");
    assert_eq!((code, body.trim()), (200, "true"));
    let (code, body) = http(&a, Method::DELETE, "/v1/kv/none?cas=0", "");
    assert_eq!((code, body.trim()), (200, "true"));
    assert_eq!(index(&a), before, "a cas delete of an absent key wrote");
    assert_eq!(http(&a, Method::PUT, "/v1/kv/k", "v").0, 200);
    let (code, body) = http(&a, Method::DELETE, "/v1/kv/k?cas=0", "");
    assert_eq!((code, body.trim()), (200, "false"));
    let modify = index(&a);
    let (code, body) = http(&a, Method::DELETE, &format!("/v1/kv/k?cas={modify}"), "");
    assert_eq!((code, body.trim()), (200, "true"));
    assert_eq!(http(&a, Method::GET, "/v1/kv/k", "").0, 404);
    // Without cas, a delete of an absent key writes a tombstone.
    let before = index(&a);
    let (code, body) = http(&a, Method::DELETE, "/v1/kv/never-written", "");
    assert_eq!((code, body.trim()), (200, "true"));
    assert_eq!(index(&a), before + 1);
}

/// Once every node holds the same live data, every root stays equal while
/// the nodes collect tombstones, each at its own moment.
#[test]
fn roots_stay_equal_while_tombstones_are_collected() {
    let (_dev, api) = dev("steady-roots", 3);
    let keys = 300;
    let rt = rt();
    let c0 = Client::new(&api[0]).unwrap();
    rt.block_on(async {
        for i in 0..keys {
            let r = c0
                .request(
                    Method::PUT,
                    &format!("/v1/kv/gone/{i}"),
                    bytes::Bytes::from_static(b"v"),
                )
                .await
                .unwrap();
            assert!(r.status.is_success());
        }
    });
    eventually("the writes reach every node", || {
        let r: Vec<String> = api.iter().map(|a| root(a)).collect();
        r.windows(2).all(|w| w[0] == w[1])
    });
    let (code, _) = http(&api[0], Method::DELETE, "/v1/kv/gone/?recurse&force", "");
    assert_eq!(code, 200);
    eventually("the deletes reach every node", || {
        let r: Vec<String> = api.iter().map(|a| root(a)).collect();
        r.windows(2).all(|w| w[0] == w[1])
    });
    // From here on nothing changes the live data: every poll must agree,
    // until every node has collected its tombstones.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut polls = 0;
    loop {
        let r: Vec<String> = api.iter().map(|a| root(a)).collect();
        polls += 1;
        assert!(
            r.windows(2).all(|w| w[0] == w[1]),
            "poll {polls}: roots differ with equal live data: {r:?}"
        );
        let left: u64 = api
            .iter()
            .map(|a| status(a)["tombstones"].as_u64().unwrap())
            .sum();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "tombstones never collected");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(polls > 5, "collection was over before polling began");
}
