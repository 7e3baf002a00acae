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

/// Fast anti-entropy, so that repairs are quick to watch.
const FAST_SYNC: &str = "[sync]\nae_interval_ms = 300\nae_jitter_ms = 100\n";

fn metric(addr: &str, name: &str) -> u64 {
    let (code, text) = http(addr, Method::GET, "/metrics", "");
    assert_eq!(code, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("meridian_{name} ")))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .trim()
        .parse()
        .unwrap()
}

fn value(addr: &str, key: &str) -> (u16, String) {
    http(addr, Method::GET, &format!("/v1/kv/{key}?raw"), "")
}

/// Values damaged in a stopped node's store are quarantined when it
/// starts, repaired from its peer, and `verify` never reports agreement
/// while a damaged value is served.
#[test]
fn values_damaged_on_disk_are_repaired_and_never_verified_while_served() {
    let root_dir = dir("disk-values");
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let (_a, a) = node(&root_dir, "a", "us", pa, &[], FAST_SYNC);
    let (b_proc, b) = node(&root_dir, "b", "eu", pb, &[pa], FAST_SYNC);
    for i in 0..200 {
        let (code, _) = http(
            &a,
            Method::PUT,
            &format!("/v1/kv/cfg/{i:03}"),
            &format!("good {i:03}"),
        );
        assert_eq!(code, 200);
    }
    eventually("b holds a's data", || root(&a) == root(&b));
    let b_id = status(&b)["node"].as_str().unwrap().to_string();
    assert!(b_proc.terminate().success());
    let damaged: Vec<String> = (0..8).map(|i| format!("cfg/{:03}", i * 23)).collect();
    {
        let path = root_dir.join("b/data/meridian.redb");
        let mut store =
            meridian::store::RedbStore::open(&path, meridian::store::Durability::Immediate)
                .unwrap();
        for k in &damaged {
            // One bit of the value; the stored check is left as it was.
            assert!(store.damage_value(k, 6, 0x04).unwrap(), "{k}");
        }
    }
    let (_b, b) = restart(&root_dir, "b");
    assert_eq!(status(&b)["node"].as_str().unwrap(), b_id, "the same node");
    // Until every damaged key is repaired, verify must not say "agree";
    // whenever it does, every damaged key is served with its good value.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = meridian(&b, &["verify"]);
        let agreed = v.status.success();
        for k in &damaged {
            let (code, body) = value(&b, k);
            let good = format!("good {}", &k[4..]);
            assert!(
                code == 503 || (code == 200 && body == good),
                "{k} served as {code} {body:?}"
            );
            if agreed {
                assert_eq!((code, body.as_str()), (200, good.as_str()), "verify agreed");
            }
        }
        if agreed {
            break;
        }
        assert!(Instant::now() < deadline, "never repaired: {}", stdout(&v));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(&b, "records_quarantined_total"), 8);
    assert_eq!(metric(&b, "records_repaired_total"), 8);
    assert_eq!(metric(&b, "records_quarantined"), 0);
    // The damaged values never reached a.
    for k in &damaged {
        assert_eq!(value(&a, k).1, format!("good {}", &k[4..]));
    }
    assert!(meridian(&b, &["verify", "--deep"]).status.success());
    assert!(meridian(&b, &["health"]).status.success());
}

/// A store that cannot be read at all (a zeroed page, a cut file, an empty
/// file) is moved aside; the node keeps its id and rebuilds from its peer.
#[test]
fn an_unreadable_store_is_moved_aside_and_rebuilt_under_the_same_id() {
    let root_dir = dir("disk-unreadable");
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let (_a, a) = node(&root_dir, "a", "us", pa, &[], FAST_SYNC);
    let (mut b_proc, mut b) = node(&root_dir, "b", "eu", pb, &[pa], FAST_SYNC);
    for i in 0..2_000 {
        let (code, _) = http(
            &a,
            Method::PUT,
            &format!("/v1/kv/k/{i:04}"),
            &"v".repeat(100),
        );
        assert_eq!(code, 200);
    }
    let b_id = status(&b)["node"].as_str().unwrap().to_string();
    let path = root_dir.join("b/data/meridian.redb");
    type Damage = fn(&std::path::Path);
    let damages: [(&str, Damage); 3] = [
        ("a zeroed page", |p| {
            let mut bytes = std::fs::read(p).unwrap();
            let page = bytes.len() / 4096 / 2;
            bytes[page * 4096..(page + 1) * 4096].fill(0);
            std::fs::write(p, bytes).unwrap();
        }),
        ("a cut", |p| {
            let len = std::fs::metadata(p).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(len / 2).unwrap();
        }),
        ("an empty file", |p| std::fs::write(p, b"").unwrap()),
    ];
    for (what, damage) in damages {
        eventually("b holds a's data", || root(&a) == root(&b));
        assert!(b_proc.terminate().success());
        damage(&path);
        let before = moved_aside(&root_dir);
        (b_proc, b) = restart(&root_dir, "b");
        assert_eq!(
            status(&b)["node"].as_str().unwrap(),
            b_id,
            "{what}: the same node"
        );
        assert_eq!(
            moved_aside(&root_dir),
            before + 1,
            "{what}: kept for inspection"
        );
        eventually("b is rebuilt", || {
            root(&a) == root(&b) && meridian(&b, &["health"]).status.success()
        });
        assert_eq!(value(&b, "k/1999").0, 200, "{what}");
    }
    // Without node.id, the certificate's node id says which node the
    // directory held: the same again.
    assert!(b_proc.terminate().success());
    std::fs::write(&path, b"").unwrap();
    std::fs::remove_file(root_dir.join("b/data/node.id")).unwrap();
    (b_proc, b) = restart(&root_dir, "b");
    assert_eq!(status(&b)["node"].as_str().unwrap(), b_id);
    eventually("b is rebuilt again", || {
        root(&a) == root(&b) && meridian(&b, &["health"]).status.success()
    });
    // Without either (a certificate from before ids were bound), nothing
    // says which node the directory held: refused.
    assert!(b_proc.terminate().success());
    std::fs::write(&path, b"").unwrap();
    std::fs::remove_file(root_dir.join("b/data/node.id")).unwrap();
    let ca = meridian::net::tls::Ca::load(&root_dir.join("ca")).unwrap();
    let unbound = ca.issue_unbound("b", "eu").unwrap();
    unbound.save(&root_dir.join("b/tls")).unwrap();
    let o = std::process::Command::new(BIN)
        .args(["node", "--config"])
        .arg(root_dir.join("b.toml"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("node.id"), "{err}");
}

fn moved_aside(root_dir: &std::path::Path) -> usize {
    std::fs::read_dir(root_dir.join("b/data"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("meridian.redb.damaged-")
        })
        .count()
}

/// A node whose data directory sits on a small tmpfs that fills up: writes
/// get 507 with a JSON error, reads and health go on, and once space is
/// freed the refused commit lands and writes resume; nothing acknowledged
/// is lost. (Mounting needs root, as in CI; elsewhere the same path is
/// tested through an injected ENOSPC in `tests/node.rs`.)
#[test]
fn a_full_filesystem_refuses_writes_keeps_reads_and_recovers() {
    let Some(tmpfs) = Tmpfs::mount("tmpfs") else {
        return;
    };
    let mnt = tmpfs.0.clone();
    let (a_proc, a) = node(&mnt, "a", "us", free_udp_port(), &[], "");
    // Leave little room.
    let filler = tmpfs.fill();
    let value = "v".repeat(1_000);
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for i in 0..20_000 {
        let key = format!("fill/{i:05}");
        match http(&a, Method::PUT, &format!("/v1/kv/{key}"), &value) {
            (200, _) => acknowledged.push(key),
            (code, body) => {
                refusal = Some((code, body));
                break;
            }
        }
    }
    let (code, body) = refusal.expect("the disk never filled up");
    assert_eq!(code, 507, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        doc["error"].as_str().unwrap().contains("disk is full"),
        "{doc}"
    );
    // Reads and health go on.
    assert_eq!(value_of(&a, &acknowledged[0]), (200, value.clone()));
    let (code, body) = http(&a, Method::GET, "/v1/health", "");
    assert_eq!(code, 503);
    assert!(body.contains("disk_full"), "{body}");
    assert_eq!(http(&a, Method::PUT, "/v1/kv/more", "x").0, 507);
    // Space returns: writes resume without a restart.
    std::fs::remove_file(&filler).unwrap();
    eventually("writes resume", || {
        http(&a, Method::PUT, "/v1/kv/more", "x").0 == 200
    });
    eventually("healthy again", || {
        http(&a, Method::GET, "/v1/health", "").0 == 200
    });
    // Nothing acknowledged was lost.
    assert!(a_proc.terminate().success());
    let (_a, a) = restart(&mnt, "a");
    for k in acknowledged.iter().step_by(7).chain(acknowledged.last()) {
        assert_eq!(value_of(&a, k).0, 200, "{k} lost");
    }
    assert_eq!(value_of(&a, "more").0, 200);
}

fn value_of(addr: &str, key: &str) -> (u16, String) {
    http(addr, Method::GET, &format!("/v1/kv/{key}?raw"), "")
}

/// Short HTTP timeouts and a small connection limit, for the tests below.
const TIGHT_HTTP: &str = "[http]\nheader_read_timeout_ms = 500\nbody_read_timeout_ms = 500\n\
                          idle_timeout_ms = 700\nconnections_max = 64\n";

/// Sends `bytes` on a new connection and reads until the server closes it
/// (or 10 s pass): what came back, and how long it took.
fn raw(addr: &str, bytes: &[u8]) -> (String, Duration) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

fn json_body(answer: &str) -> serde_json::Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer:?}"))
}

/// Slow and idle clients time out with clear answers; over-long request
/// lines and heads and wrong methods get JSON errors; nothing is written.
#[test]
fn slow_idle_and_oversized_http_clients_get_clear_answers() {
    let root_dir = dir("http-limits");
    let (_a, a) = node(&root_dir, "a", "us", free_udp_port(), &[], TIGHT_HTTP);
    let index = |a: &str| status(a)["index"].as_u64().unwrap();
    let before = index(&a);
    // Half a header: 408 with a JSON error, then the connection closes.
    let (answer, took) = raw(&a, b"GET /v1/kv/x HTTP/1.1\r\nHost: a\r\nX-Slow: ");
    assert!(status_line(&answer).contains("408"), "{answer:?}");
    assert!(json_body(&answer)["error"]
        .as_str()
        .unwrap()
        .contains("head"));
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A body that never comes: 408, and nothing written.
    let (answer, _) = raw(
        &a,
        b"PUT /v1/kv/stalled HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc",
    );
    assert!(status_line(&answer).contains("408"), "{answer:?}");
    assert!(json_body(&answer)["error"]
        .as_str()
        .unwrap()
        .contains("body"));
    assert_eq!(value_of(&a, "stalled").0, 404);
    // Nothing at all: closed quietly.
    let (answer, took) = raw(&a, b"");
    assert_eq!(answer, "");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // An idle keep-alive connection is closed after its request.
    let (answer, took) = raw(&a, b"GET /v1/kv/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(status_line(&answer).contains("404"), "{answer:?}");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // A 100,000-byte key: 414 with JSON; a huge head: 431 with JSON.
    let long = format!(
        "PUT /v1/kv/{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "k".repeat(100_000)
    );
    let (answer, _) = raw(&a, long.as_bytes());
    assert!(status_line(&answer).contains("414"), "{answer:?}");
    assert!(json_body(&answer)["error"].is_string());
    let fat = format!(
        "GET /v1/kv/x HTTP/1.1\r\nHost: a\r\nX-Fat: {}\r\n\r\n",
        "f".repeat(100_000)
    );
    let (answer, _) = raw(&a, fat.as_bytes());
    assert!(status_line(&answer).contains("431"), "{answer:?}");
    assert!(json_body(&answer)["error"].is_string());
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (answer, _) = raw(
        &a,
        format!("GET /v1/kv/x HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
    );
    assert!(status_line(&answer).contains("431"), "{answer:?}");
    // A key over the key limit but within the request line: 413, as documented.
    let (code, body) = http(
        &a,
        Method::PUT,
        &format!("/v1/kv/{}", "k".repeat(2_000)),
        "v",
    );
    assert_eq!(code, 413, "{body}");
    // A wrong method: 405 with JSON.
    let (code, body) = http(&a, Method::POST, "/v1/status", "");
    assert_eq!(code, 405);
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("POST")
    );
    assert_eq!(index(&a), before, "nothing was written");
}

/// Hundreds of clients that send half a header hold no connection for
/// long: they are cut at the header timeout, and the node keeps answering.
#[test]
fn hundreds_of_slow_clients_are_cut_and_the_api_keeps_answering() {
    use std::io::Write;
    const SLOW: usize = 400;
    let root_dir = dir("http-slowloris");
    let (_a, a) = node(&root_dir, "a", "us", free_udp_port(), &[], TIGHT_HTTP);
    let target = a.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut s = std::net::TcpStream::connect(&target).unwrap();
        let _ = s.write_all(b"GET /v1/kv/x HTTP/1.1\r\nHost: a\r\n");
        slow.push(s);
    }
    // More than connections_max are open: the rest wait to be accepted, and
    // each accepted one is cut at the header timeout, so the node answers.
    let started = Instant::now();
    assert_eq!(http(&a, Method::PUT, "/v1/kv/alive", "yes").0, 200);
    assert!(started.elapsed() < Duration::from_secs(30));
    // Every slow client was answered 408 and closed.
    use std::io::Read;
    let mut closed = 0;
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut out = Vec::new();
        if s.read_to_end(&mut out).is_ok() {
            closed += 1;
        }
    }
    assert_eq!(closed, SLOW);
}

/// The libfaketime library, where Debian puts it (`apt-get install faketime`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Three nodes, the third with its clock `skew` off (through the fault
/// variable, or libfaketime when `faketime` is given): the third refuses
/// client writes and says why, takes the others' writes, and the others
/// name its clock in their health.
fn a_node_off_by(skew: &str, faketime: bool) {
    let root_dir = dir(&format!("clock{skew}{}", if faketime { "-ft" } else { "" }));
    let (pa, pb, pc) = (free_udp_port(), free_udp_port(), free_udp_port());
    let (_a, a) = node(&root_dir, "a", "us", pa, &[], "");
    let (_b, _b_api) = node(&root_dir, "b", "eu", pb, &[pa], "");
    let ft_env = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME", &*format!("{skew}ms")),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ("FAKETIME_DONT_RESET", "1"),
    ];
    let env: &[(&str, &str)] = if faketime {
        &ft_env
    } else {
        &[(meridian::node::CLOCK_SKEW_ENV, skew)]
    };
    let (_c, c) = node_with(&root_dir, "c", "ap", pc, &[pa, pb], "", env, None);
    // Before its first round trips c cannot judge its clock (and takes
    // writes); once it has measured both peers, it refuses them.
    eventually("c has measured both peers' clocks", || {
        status(&c)["clock"]["measured"].as_u64() == Some(2)
    });
    assert_eq!(status(&c)["clock"]["off"], true);
    let (code, body) = http(&c, Method::PUT, "/v1/kv/from-c", "v");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("clock"), "{body}");
    let (code, body) = http(&c, Method::GET, "/v1/health", "");
    assert_eq!(code, 503);
    assert!(body.contains("clock_offset"), "{body}");
    assert_eq!(http(&a, Method::PUT, "/v1/kv/from-a", "v").0, 200);
    eventually("c takes a correct peer's write", || {
        value_of(&c, "from-a").0 == 200
    });
    eventually("a names c's clock", || {
        http(&a, Method::GET, "/v1/health", "")
            .1
            .contains("peer_clock")
    });
    assert_eq!(value_of(&a, "from-c").0, 404);
}

#[test]
fn a_node_whose_clock_runs_an_hour_fast_refuses_writes_and_says_why() {
    a_node_off_by("3600000", false);
}

#[test]
fn a_node_whose_clock_runs_an_hour_slow_takes_peers_writes_and_refuses_its_own() {
    a_node_off_by("-3600000", false);
}

/// The same under libfaketime, which moves the whole process's clock (the
/// TLS handshake's too), when it is installed (CI installs it).
#[test]
fn under_libfaketime_a_fast_node_refuses_writes() {
    if !std::path::Path::new(LIBFAKETIME).exists() {
        eprintln!("skipped: {LIBFAKETIME} is not installed (apt-get install faketime)");
        return;
    }
    a_node_off_by("+3600000", true);
}

/// A node that stamped writes while its clock ran an hour fast, restarted
/// with the clock fixed, does not resume stamping from its stored clock: it
/// refuses writes and says until when.
#[test]
fn a_stored_clock_from_the_future_refuses_writes_after_a_restart() {
    let root_dir = dir("clock-stored");
    let skew = [(meridian::node::CLOCK_SKEW_ENV, "3600000")];
    let (c_proc, c) = node_with(&root_dir, "c", "ap", free_udp_port(), &[], "", &skew, None);
    assert_eq!(http(&c, Method::PUT, "/v1/kv/stamped-fast", "v").0, 200);
    assert!(c_proc.terminate().success());
    let (_c, c) = restart(&root_dir, "c");
    let (code, body) = http(&c, Method::PUT, "/v1/kv/after", "v");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("catches up"), "{body}");
    let (code, body) = http(&c, Method::GET, "/v1/health", "");
    assert_eq!(code, 503);
    assert!(body.contains("clock_ahead"), "{body}");
    // Reads go on.
    assert_eq!(value_of(&c, "stamped-fast").0, 200);
}

/// `write_ack = "quorum"`: every write a region acknowledged survives that
/// region's destruction (kill -9 and its disk wiped) right after.
#[test]
fn quorum_acknowledged_writes_survive_the_destruction_of_their_region() {
    let root_dir = dir("quorum-destroy");
    let (pa, pb, pc) = (free_udp_port(), free_udp_port(), free_udp_port());
    let q = "write_ack = \"quorum\"\n";
    let (_b, b) = node(&root_dir, "b", "eu", pb, &[], q);
    let (_c, c) = node(&root_dir, "c", "ap", pc, &[pb], q);
    let (mut a_proc, a) = node(&root_dir, "a", "us", pa, &[pb, pc], q);
    eventually("a reaches a majority", || status(&a)["quorum"] == true);
    let mut acknowledged = Vec::new();
    for i in 0..100 {
        let k = format!("q/{i:03}");
        if http(&a, Method::PUT, &format!("/v1/kv/{k}"), "v").0 == 200 {
            acknowledged.push(k);
        }
    }
    assert!(
        acknowledged.len() >= 90,
        "{} acknowledged",
        acknowledged.len()
    );
    // The region is destroyed at once: no graceful stop, no disk.
    a_proc.child.kill().unwrap();
    a_proc.child.wait().unwrap();
    std::fs::remove_dir_all(root_dir.join("a/data")).unwrap();
    eventually("b and c agree", || root(&b) == root(&c));
    for k in &acknowledged {
        assert_eq!(value_of(&b, k).0, 200, "{k} was acknowledged and is lost");
    }
}

/// The conflict log outlives a restart, and `meridian conflicts` gathers
/// every member's.
#[test]
fn conflicts_are_kept_across_restarts_and_gathered_from_every_member() {
    let root_dir = dir("conflicts");
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let (a_proc, a) = node(&root_dir, "a", "us", pa, &[], "");
    let (b_alone, b_first) = node(&root_dir, "b", "eu", pb, &[], "");
    // Concurrent writes: neither has seen the other's.
    assert_eq!(http(&a, Method::PUT, "/v1/kv/shared", "from a").0, 200);
    std::thread::sleep(Duration::from_millis(20));
    let (code, _) = http(&b_first, Method::PUT, "/v1/kv/shared", "from b, later");
    assert_eq!(code, 200);
    assert!(b_alone.terminate().success());
    let (_b, b) = node(&root_dir, "b", "eu", pb, &[pa], "");
    eventually("a and b agree", || root(&a) == root(&b));
    let kept = |addr: &str| -> usize {
        let (_, body) = http(addr, Method::GET, "/v1/conflicts", "");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        doc["kept"].as_array().unwrap().len()
    };
    eventually("a recorded the conflict", || kept(&a) == 1);
    // Durable: still there after a restart.
    assert!(a_proc.terminate().success());
    let (_a, a) = restart(&root_dir, "a");
    assert_eq!(kept(&a), 1);
    // Gathered from every member, through any of them (once b has heard
    // a's new API address).
    let mut text = String::new();
    eventually("meridian conflicts reaches every member", || {
        let o = meridian(&b, &["conflicts"]);
        text = stdout(&o);
        o.status.success()
    });
    assert!(text.contains("shared") && text.contains("from a"), "{text}");
    assert!(text.contains("seen on a"), "{text}");
}
