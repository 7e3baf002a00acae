//! Edges on real QUIC (mutual TLS, loopback), with servers in two regions,
//! all in one process: what an edge reads and writes, and that it follows
//! another server of its region when its own is lost.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meridian::net::tls::{Ca, NodeIdentity};
use meridian::node::Node;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-edge-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_addr() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A node with fast timers; an edge when `edge`. A node that ran in `dir`
/// before gets a certificate bound to the id it holds.
#[allow(clippy::too_many_arguments)]
async fn start(
    ca: &Ca,
    name: &str,
    region: &str,
    dir: &PathBuf,
    listen: SocketAddr,
    seeds: &[SocketAddr],
    edge: bool,
    horizon_ms: u64,
) -> Node {
    let held = std::fs::read_to_string(dir.join("node.id"))
        .ok()
        .and_then(|t| u64::from_str_radix(t.trim(), 16).ok());
    let id: NodeIdentity = match held {
        Some(n) => ca
            .issue_node(name, region, meridian::core::types::NodeId(n), &[])
            .unwrap(),
        None => ca.issue(name, region).unwrap(),
    };
    let mut b = Node::builder(name, region, id)
        .listen(listen)
        .data_dir(dir)
        .seeds(seeds.iter().copied())
        .tune(move |c| {
            c.ae_interval_ms = 500;
            c.ae_jitter_ms = 100;
            c.heartbeat_interval_ms = 200;
            c.contact_timeout_ms = 600;
            c.gc_interval_ms = 100;
            c.tombstone_horizon_ms = horizon_ms;
        });
    if edge {
        b = b.edge();
    }
    b.start().await.unwrap()
}

async fn value(n: &Node, key: &str) -> Option<String> {
    n.get(key)
        .await
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.value).into_owned())
}

/// `svc/api`'s document at `n` (`None`: none there).
async fn doc_of(n: &Node) -> Option<serde_json::Value> {
    n.get_doc("svc/api", None)
        .await
        .unwrap()
        .value
        .map(|d| d.json)
}

async fn eventually<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which of `servers` the edge is attached to (the one that counts it).
async fn attached(servers: &[&Node]) -> Option<usize> {
    for (i, s) in servers.iter().enumerate() {
        if s.status().await.unwrap().replica.edges == 1 {
            return Some(i);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_reads_every_region_forwards_its_writes_and_follows_another_server() {
    let root = scratch("follow");
    let ca = Ca::generate("test").unwrap();
    let (a1, a2, b1, e) = (free_addr(), free_addr(), free_addr(), free_addr());
    let hour = 3_600_000;
    let us1 = start(
        &ca,
        "us1",
        "us-east",
        &root.join("us1"),
        a1,
        &[],
        false,
        hour,
    )
    .await;
    let us2 = start(
        &ca,
        "us2",
        "us-east",
        &root.join("us2"),
        a2,
        &[a1],
        false,
        hour,
    )
    .await;
    let eu1 = start(
        &ca,
        "eu1",
        "eu-west",
        &root.join("eu1"),
        b1,
        &[a1, a2],
        false,
        hour,
    )
    .await;
    let edge = start(
        &ca,
        "edge1",
        "us-east",
        &root.join("edge1"),
        e,
        &[a1, a2],
        true,
        hour,
    )
    .await;

    // What a server of another region writes reaches the edge.
    eu1.put("from/eu", "x").await.unwrap();
    eventually("the edge holds eu1's write", 20, || async {
        value(&edge, "from/eu").await.as_deref() == Some("x")
    })
    .await;
    // The edge's write is made by its server and answered once it is back
    // at the edge: a read right after it sees it. Every region gets it.
    let receipt = edge.put("from/edge", "y").await.unwrap();
    assert_ne!(receipt.stamp.node, edge.id(), "stamped by the server");
    assert_eq!(value(&edge, "from/edge").await.as_deref(), Some("y"));
    eventually("every server holds the edge's write", 20, || async {
        value(&eu1, "from/edge").await.as_deref() == Some("y")
            && value(&us1, "from/edge").await.as_deref() == Some("y")
            && value(&us2, "from/edge").await.as_deref() == Some("y")
    })
    .await;
    // A check-and-set at the edge, as a Consul client's.
    let seen = edge.get("from/edge").await.unwrap().unwrap().modify_index;
    edge.put_with("from/edge", "z", 0, Some(seen))
        .await
        .unwrap();
    assert!(edge
        .put_with("from/edge", "stale", 0, Some(seen))
        .await
        .is_err());
    assert_eq!(value(&edge, "from/edge").await.as_deref(), Some("z"));
    // An edge keeps no key history by default (it holds the whole key
    // space on a small machine); its server keeps the versions.
    assert!(edge.history("from/edge").await.unwrap().is_empty());
    eventually("us1 keeps from/edge's versions", 20, || async {
        us1.history("from/edge").await.unwrap().len() >= 2
    })
    .await;
    // Documents: the edge's write is made by its server; a field changed
    // in another region meanwhile merges with the edge's patch.
    let receipt = edge
        .put_doc(
            "svc/api",
            serde_json::json!({"rps": 100, "timeout_ms": 500}),
        )
        .await
        .unwrap();
    assert_ne!(receipt.stamp.node, edge.id(), "made by the server");
    assert_eq!(
        doc_of(&edge).await,
        Some(serde_json::json!({"rps": 100, "timeout_ms": 500}))
    );
    eventually("eu1 holds the edge's document", 20, || async {
        doc_of(&eu1).await.is_some()
    })
    .await;
    eu1.patch_doc("svc/api", serde_json::json!({"timeout_ms": 900}))
        .await
        .unwrap();
    edge.patch_doc("svc/api", serde_json::json!({"rps": 200}))
        .await
        .unwrap();
    let want = serde_json::json!({"rps": 200, "timeout_ms": 900});
    eventually(
        "the edge's and eu1's fields merge everywhere",
        20,
        || async {
            doc_of(&edge).await.as_ref() == Some(&want)
                && doc_of(&eu1).await.as_ref() == Some(&want)
        },
    )
    .await;

    // The edge is no member: the servers count 3 members and 2 regions, and
    // one of them serves it; the edge knows only the server it attached to.
    let at = attached(&[&us1, &us2]).await.expect("attached to a server");
    for s in [&us1, &us2, &eu1] {
        let st = s.status().await.unwrap().replica;
        assert_eq!(st.peers.len(), 2, "{}: members only", s.name());
        assert_eq!(st.total_regions, 2);
    }
    let st = edge.status().await.unwrap().replica;
    assert!(st.edge);
    assert_eq!(st.peers.iter().filter(|p| p.connected).count(), 1);

    // Its server goes: it attaches to the other one of its region and
    // misses nothing written meanwhile.
    let (gone, other) = if at == 0 { (us1, us2) } else { (us2, us1) };
    gone.shutdown().await.unwrap();
    for i in 0..50 {
        eu1.put(&format!("during/{i}"), "w").await.unwrap();
    }
    eventually("the edge follows the other server", 30, || async {
        other.status().await.unwrap().replica.edges == 1
    })
    .await;
    eventually("the edge holds every write made meanwhile", 30, || async {
        edge.list("during/").await.unwrap().len() == 50
    })
    .await;
    edge.put("after/failover", "ok").await.unwrap();
    eventually("its write after the failover reaches eu1", 20, || async {
        value(&eu1, "after/failover").await.as_deref() == Some("ok")
    })
    .await;
    eventually("the edge and its new server agree", 20, || async {
        edge.digest("").await.unwrap() == other.digest("").await.unwrap()
    })
    .await;
    for n in [edge, other, eu1] {
        n.shutdown().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_away_longer_than_the_horizon_resyncs_and_resurrects_nothing() {
    let root = scratch("horizon");
    let ca = Ca::generate("test").unwrap();
    let (a1, b1, e) = (free_addr(), free_addr(), free_addr());
    // A short horizon: tombstones older than 3 s are collected by age.
    let horizon = 3_000;
    let us1 = start(
        &ca,
        "us1",
        "us-east",
        &root.join("us1"),
        a1,
        &[],
        false,
        horizon,
    )
    .await;
    let eu1 = start(
        &ca,
        "eu1",
        "eu-west",
        &root.join("eu1"),
        b1,
        &[a1],
        false,
        horizon,
    )
    .await;
    let edge_dir = root.join("edge1");
    let edge = start(&ca, "edge1", "us-east", &edge_dir, e, &[a1], true, horizon).await;
    for i in 0..20 {
        us1.put(&format!("k/{i}"), "v").await.unwrap();
    }
    eventually("the edge holds the keys", 20, || async {
        edge.list("k/").await.unwrap().len() == 20
    })
    .await;
    // The edge goes away, and so does eu1: deletes can only be collected
    // by age (eu1 cannot confirm them), after the horizon.
    edge.shutdown().await.unwrap();
    eu1.shutdown().await.unwrap();
    us1.delete("k/3").await.unwrap();
    us1.delete("k/4").await.unwrap();
    eventually("us1 collects the deletes by age", 20, || async {
        us1.get("k/3").await.unwrap().is_none()
            && us1.status().await.unwrap().metrics.tombstones_collected >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Back after more than the horizon: told to resync, it drops what is
    // older than the horizon and takes the server's state again.
    let edge = start(&ca, "edge1", "us-east", &edge_dir, e, &[a1], true, horizon).await;
    eventually("the edge converges with its server", 30, || async {
        edge.digest("").await.unwrap() == us1.digest("").await.unwrap()
            && !edge.status().await.unwrap().replica.rebuilding
    })
    .await;
    assert_eq!(edge.list("k/").await.unwrap().len(), 18);
    assert!(
        value(&edge, "k/3").await.is_none(),
        "a deleted key came back"
    );
    assert!(edge.status().await.unwrap().metrics.resyncs >= 1);
    assert!(value(&us1, "k/3").await.is_none(), "the edge gave it back");
    for n in [edge, us1] {
        n.shutdown().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&root);
}

mod common;

/// The daemon as an edge (`role = "edge"`): the Consul KV API reads and
/// writes on it as on a server, and status says what it is.
#[test]
fn an_edge_daemon_serves_the_kv_api_and_forwards_writes() {
    use common::{eventually as until, free_udp_port, meridian, node, stdout};
    let root = common::dir("edge-daemon");
    let (p1, p2, pe) = (free_udp_port(), free_udp_port(), free_udp_port());
    let (_s1, us) = node(&root, "us1", "us-east", p1, &[], "");
    let (_s2, eu) = node(&root, "eu1", "eu-west", p2, &[p1], "");
    let (_e, edge) = node(&root, "edge1", "us-east", pe, &[p1], "role = \"edge\"\n");
    let o = meridian(&eu, &["kv", "put", "cfg/db", "postgres://eu"]);
    assert!(o.status.success(), "{o:?}");
    until("the edge reads eu1's write", || {
        stdout(&meridian(&edge, &["kv", "get", "cfg/db"])).contains("postgres://eu")
    });
    let o = meridian(&edge, &["kv", "put", "cfg/flag", "on"]);
    assert!(o.status.success(), "{o:?}");
    // Read right after the write, on the edge itself.
    assert!(stdout(&meridian(&edge, &["kv", "get", "cfg/flag"])).contains("on"));
    until("eu1 reads the edge's write", || {
        stdout(&meridian(&eu, &["kv", "get", "cfg/flag"])).contains("on")
    });
    let st = stdout(&meridian(&edge, &["status", "--json"]));
    assert!(st.contains("\"role\": \"edge\""), "{st}");
    until("us1 counts the edge, not as a member", || {
        let st = stdout(&meridian(&us, &["status", "--json"]));
        st.contains("\"edges\": 1") && st.contains("\"total_regions\": 2")
    });
    let _ = std::fs::remove_dir_all(&root);
}

/// `edge_writes = "local"`: with its only server gone, the edge daemon
/// takes plain puts and deletes itself (a check-and-set still needs a
/// server: 503), keeps them across its own restart, and hands them over
/// when the server is back: every region then holds them.
#[test]
fn an_edge_daemon_with_local_writes_takes_them_while_its_server_is_down() {
    use common::{eventually as until, free_udp_port, meridian, node, stdout};
    let root = common::dir("edge-local");
    let (p1, p2, pe) = (free_udp_port(), free_udp_port(), free_udp_port());
    let (s1, us) = node(&root, "us1", "us-east", p1, &[], "");
    let (_s2, eu) = node(&root, "eu1", "eu-west", p2, &[p1], "");
    let edge_cfg = "role = \"edge\"\nedge_writes = \"local\"\n";
    let (e, edge) = node(&root, "edge1", "us-east", pe, &[p1], edge_cfg);
    let o = meridian(&us, &["kv", "put", "cfg/old", "1"]);
    assert!(o.status.success(), "{o:?}");
    until("the edge attached and holds us1's write", || {
        stdout(&meridian(&edge, &["kv", "get", "cfg/old"])).contains('1')
    });
    // Its only server goes.
    drop(s1);
    until("the edge has no server", || {
        let st = stdout(&meridian(&edge, &["status", "--json"]));
        !st.contains("\"connected\": true")
    });
    let o = meridian(&edge, &["kv", "put", "cfg/offline", "taken"]);
    assert!(o.status.success(), "{o:?}");
    let o = meridian(&edge, &["kv", "delete", "cfg/old"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&meridian(&edge, &["kv", "get", "cfg/offline"])).contains("taken"));
    // A check-and-set needs a server.
    let o = meridian(&edge, &["kv", "put", "--cas", "0", "cfg/cas", "x"]);
    assert!(!o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("needs one"),
        "{o:?}"
    );
    // Kept across the edge's own restart.
    drop(e);
    let (_e, edge) = node(&root, "edge1", "us-east", pe, &[p1], edge_cfg);
    let st = stdout(&meridian(&edge, &["status", "--json"]));
    assert!(st.contains("\"local_writes_waiting\": 2"), "{st}");
    assert!(stdout(&meridian(&edge, &["kv", "get", "cfg/offline"])).contains("taken"));
    // The server comes back: handed over, and eu1 gets them through it.
    let (_s1, us) = node(&root, "us1", "us-east", p1, &[], "");
    until("eu1 holds the edge's local writes", || {
        stdout(&meridian(&eu, &["kv", "get", "cfg/offline"])).contains("taken")
            && !meridian(&eu, &["kv", "get", "cfg/old"]).status.success()
    });
    until("nothing waits at the edge", || {
        stdout(&meridian(&edge, &["status", "--json"])).contains("\"local_writes_waiting\": 0")
    });
    let o = meridian(&us, &["verify"]);
    assert!(o.status.success(), "{o:?}");
    let _ = std::fs::remove_dir_all(&root);
}
