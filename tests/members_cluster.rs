//! Members that leave, as operators run them: `meridian node` processes on
//! real QUIC (loopback), `meridian members`, `meridian leave` and
//! `meridian forget` through the CLI.

mod common;

use common::*;

/// The number `"field": N` holds in a JSON text.
fn number(json: &str, field: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {json}"))
}

/// How many regions a status JSON says are reachable.
fn reachable(json: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["reachable_regions"].as_array().map_or(0, |a| a.len())
}

fn status(api: &str) -> String {
    let o = meridian(api, &["status", "--json"]);
    assert!(o.status.success(), "{o:?}");
    stdout(&o)
}

fn put(api: &str, k: &str, v: &str) -> std::process::Output {
    meridian(api, &["kv", "put", k, v])
}

/// A dead member keeps its region "unreachable" (health, quorum) and holds
/// tombstone collection back; forgotten, it stops counting on every
/// member. A member that leaves hands over, is forgotten by the others,
/// and its process exits.
#[test]
fn a_left_or_forgotten_member_no_longer_counts_for_quorum_health_or_collection() {
    let root = dir("members");
    let fast = "[sync]\ncontact_timeout_ms = 1500\nae_interval_ms = 500\nae_jitter_ms = 100\n\
                [health]\npartition_ms_max = 1000\npeer_down_ms_max = 1000\n\
                [swim]\nprofile = \"lan\"\nprobe_period_ms = 500\n";
    let (pa, pa2, pb, pc) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let quorum = format!("partition_policy = \"quorum\"\n{fast}");
    let (_a, a) = node(&root, "a", "us", pa, &[], &quorum);
    let (_a2, a2) = node(&root, "a2", "us", pa2, &[pa], fast);
    let (b_proc, b) = node(&root, "b", "eu", pb, &[pa], fast);
    let (c_proc, c) = node(&root, "c", "ap", pc, &[pa, pb], fast);
    eventually("every member sees the three regions", || {
        [&a, &a2, &b, &c]
            .iter()
            .all(|api| reachable(&status(api)) == 3)
    });
    let m = stdout(&meridian(&a, &["members"]));
    for name in ["a *", "a2", "b", "c"] {
        assert!(m.contains(name), "{m}");
    }
    assert_eq!(m.matches(" alive ").count(), 4, "{m}");
    // A delete whose tombstone every member must hold before it goes.
    assert!(put(&a, "x", "1").status.success());
    assert!(meridian(&a, &["kv", "delete", "x"]).status.success());
    eventually("the tombstone reached c", || {
        number(&status(&c), "tombstones") == 1
    });
    drop(c_proc);
    // c is dead: it still counts. Its region is unreachable, a is
    // unhealthy, and nobody collects the tombstone c may lack.
    eventually("a reports ap unreachable", || {
        !meridian(&a, &["health"]).status.success()
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(number(&status(&a), "tombstones"), 1);
    assert_eq!(number(&status(&a2), "tombstones"), 1);
    // b leaves: it hands its writes over, tells every member, and stops.
    assert!(put(&b, "from-b", "1").status.success());
    let o = meridian(&b, &["leave"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("left the cluster"), "{}", stdout(&o));
    let mut b_proc = b_proc;
    eventually("b's process exits by itself", || {
        b_proc.child.try_wait().unwrap().is_some()
    });
    let m = stdout(&meridian(&a, &["members"]));
    assert!(
        m.lines()
            .any(|l| l.starts_with("b ") && l.contains(" left ")),
        "{m}"
    );
    assert!(stdout(&meridian(&a, &["kv", "get", "from-b"])).contains('1'));
    // a's quorum counts us and ap (c, dead): one of two is no majority.
    eventually("a lost its quorum", || {
        number(&status(&a), "total_regions") == 2
    });
    assert!(!put(&a, "y", "1").status.success());
    // Forgotten, c stops counting everywhere: a has its quorum back, is
    // healthy, and collection resumes.
    let o = meridian(&a, &["forget", "c"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("forgot c"), "{}", stdout(&o));
    eventually("a2 heard c was forgotten", || {
        stdout(&meridian(&a2, &["members", "--json"])).contains("\"forgotten\"")
    });
    assert_eq!(number(&status(&a), "total_regions"), 1);
    assert!(put(&a, "y", "1").status.success());
    eventually("a is healthy again", || {
        meridian(&a, &["health"]).status.success()
    });
    eventually("the tombstone is collected on a and a2", || {
        number(&status(&a), "tombstones") == 0 && number(&status(&a2), "tombstones") == 0
    });
    // Forgetting a member in contact is refused; so is an unknown one.
    let o = meridian(&a, &["forget", "a2"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("in contact"),
        "{o:?}"
    );
    assert!(!meridian(&a, &["forget", "nobody"]).status.success());
}
