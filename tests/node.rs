//! Real nodes on loopback: QUIC with mutual TLS, redb stores, one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meridian::net::tls::{Ca, NodeIdentity};
use meridian::node::Node;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-node-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn start(
    ca: &Ca,
    name: &str,
    region: &str,
    dir: Option<PathBuf>,
    listen: SocketAddr,
    seeds: &[SocketAddr],
) -> Node {
    // A node that ran before gets a certificate bound to the id it holds.
    let held = dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(d.join("node.id")).ok())
        .and_then(|t| u64::from_str_radix(t.trim(), 16).ok());
    let id: NodeIdentity = match held {
        Some(n) => ca
            .issue_node(name, region, meridian::core::types::NodeId(n), &[])
            .unwrap(),
        None => ca.issue(name, region).unwrap(),
    };
    let mut b = Node::builder(name, region, id)
        .listen(listen)
        .seeds(seeds.iter().copied())
        .tune(|c| {
            c.ae_interval_ms = 500;
            c.ae_jitter_ms = 100;
            c.heartbeat_interval_ms = 200;
        });
    if let Some(d) = dir {
        b = b.data_dir(d);
    }
    b.start().await.unwrap()
}

/// Waits until every node reports the same root, or panics after `secs`.
async fn converge(nodes: &[&Node], secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut roots = Vec::new();
        for n in nodes {
            roots.push(n.digest("").await.unwrap());
        }
        if roots.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        assert!(Instant::now() < deadline, "no convergence within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `a` refuses `b` (counted), and `b` gets nothing of `a`'s data.
async fn assert_refused_and_isolated(a: &Node, b: &Node) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.status().await.unwrap().peers_refused == 0 {
        assert!(Instant::now() < deadline, "the peer was never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.get("secret").await.unwrap().is_none());
    for n in [a, b] {
        let st = n.status().await.unwrap();
        assert!(st.replica.peers.iter().all(|p| !p.connected));
    }
}

/// Three nodes in three regions, each with its fault-injecting socket,
/// built by `configure` (a name prefix tells tests apart in logs).
struct Faulty {
    nodes: Vec<Node>,
    addrs: Vec<SocketAddr>,
    faults: Vec<std::sync::Arc<meridian::net::faults::Faults>>,
}

async fn three_with_faults(
    prefix: &str,
    configure: impl Fn(meridian::node::NodeBuilder) -> meridian::node::NodeBuilder,
) -> Faulty {
    let ca = Ca::generate("test").unwrap();
    let faults: Vec<_> = (0..3)
        .map(|_| meridian::net::faults::Faults::new())
        .collect();
    let regions = ["us-east", "eu-west", "ap-southeast"];
    let mut nodes: Vec<Node> = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..3 {
        let name = format!("{prefix}{i}");
        let b = Node::builder(&name, regions[i], ca.issue(&name, regions[i]).unwrap())
            .seeds(addrs.clone())
            .faults(faults[i].clone());
        let n = configure(b).start().await.unwrap();
        addrs.push(n.local_addr());
        nodes.push(n);
    }
    Faulty {
        nodes,
        addrs,
        faults,
    }
}

impl Faulty {
    /// Cuts node `i` off from the others, in both directions.
    fn cut_off(&self, i: usize) {
        for j in 0..self.nodes.len() {
            if j != i {
                self.faults[j].block(self.addrs[i]);
                self.faults[i].block(self.addrs[j]);
            }
        }
    }

    async fn shutdown(self) {
        for f in &self.faults {
            f.heal();
        }
        for n in self.nodes {
            n.shutdown().await.unwrap();
        }
    }
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_converge_and_nodes_recover() {
    let ca = Ca::generate("test").unwrap();
    let base = scratch("converge");
    let regions = ["us-east", "eu-west", "ap-southeast"];
    let mut nodes: Vec<Node> = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for i in 0..6 {
        let name = format!("n{i}");
        let n = start(
            &ca,
            &name,
            regions[i % 3],
            Some(base.join(&name)),
            any_port(),
            &addrs,
        )
        .await;
        addrs.push(n.local_addr());
        nodes.push(n);
    }
    for (i, n) in nodes.iter().enumerate() {
        for j in 0..20 {
            n.put(&format!("app/{i}/{j}"), format!("v{i}-{j}"))
                .await
                .unwrap();
        }
    }
    converge(&nodes.iter().collect::<Vec<_>>(), 20).await;
    for n in &nodes {
        assert_eq!(n.list("app/").await.unwrap().len(), 120);
        let e = n.get("app/3/7").await.unwrap().expect("replicated");
        assert_eq!(&e.value[..], b"v3-7");
    }
    let st = nodes[0].status().await.unwrap();
    assert_eq!(st.replica.reachable_regions.len(), 3);
    assert!(st.replica.quorum);

    // A node restarts from its disk and catches up from the change feed.
    let n5 = nodes.pop().unwrap();
    let n5_addr = n5.local_addr();
    let n5_id = n5.id();
    n5.shutdown().await.unwrap();
    for j in 0..100 {
        nodes[j % 5].put(&format!("during/{j}"), "x").await.unwrap();
    }
    let n5 = start(
        &ca,
        "n5",
        "ap-southeast",
        Some(base.join("n5")),
        n5_addr,
        &addrs[..5],
    )
    .await;
    assert_eq!(n5.id(), n5_id, "the node id is kept on disk");
    let mut all: Vec<&Node> = nodes.iter().collect();
    all.push(&n5);
    converge(&all, 20).await;
    let m = n5.status().await.unwrap().metrics;
    assert!(m.feed_entries_applied >= 100, "{m:?}");
    assert_eq!(m.ae_entries_applied, 0, "the feed sufficed: {m:?}");
    n5.put("written/by/n5", "kept by its peers").await.unwrap();
    converge(&all, 20).await;
    n5.shutdown().await.unwrap();

    // Wiped again, but its certificate names its id: it comes back under
    // that id with nothing to say its store was lost. Its peers know the
    // id: it finds the loss from them and recovers its own write.
    std::fs::remove_dir_all(base.join("n5")).unwrap();
    let bound = ca.issue_node("n5", "ap-southeast", n5_id, &[]).unwrap();
    let n5 = Node::builder("n5", "ap-southeast", bound)
        .listen(any_port())
        .seeds(addrs[..5].iter().copied())
        .data_dir(base.join("n5"))
        .start()
        .await
        .unwrap();
    assert_eq!(n5.id(), n5_id, "the certificate's id");
    let mut all: Vec<&Node> = nodes.iter().collect();
    all.push(&n5);
    converge(&all, 20).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = n5.status().await.unwrap();
        if st.replica.recovery.is_none() && !st.replica.rebuilding {
            assert!(
                st.recent_events
                    .iter()
                    .any(|e| matches!(e, meridian::sync::Event::LostStoreFound { .. })),
                "{:?}",
                st.recent_events
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered: {:?}",
            st.replica.recovery
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        &n5.get("written/by/n5").await.unwrap().unwrap().value[..],
        b"kept by its peers"
    );
    assert!(!base.join("n5").join("node.id.adopted").exists());
    n5.put("after", "taken").await.unwrap();
    converge(&all, 20).await;
    n5.shutdown().await.unwrap();

    // Its store is wiped: it comes back as a new node and rebuilds from peers.
    std::fs::remove_dir_all(base.join("n5")).unwrap();
    let n5 = start(
        &ca,
        "n5",
        "ap-southeast",
        Some(base.join("n5")),
        any_port(),
        &addrs[..5],
    )
    .await;
    assert_ne!(n5.id(), n5_id);
    let mut all: Vec<&Node> = nodes.iter().collect();
    all.push(&n5);
    converge(&all, 20).await;
    assert_eq!(n5.list("").await.unwrap().len(), 222);
    assert!(!n5.status().await.unwrap().replica.rebuilding);
    // A rebuild brings current state, not versions the node applied: its
    // key history starts empty, while the node that took the write keeps it.
    assert!(n5.history("after").await.unwrap().is_empty());
    assert!(!nodes[0].history("after").await.unwrap().is_empty());
    n5.shutdown().await.unwrap();
    for n in nodes {
        n.shutdown().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_another_ca_is_refused() {
    let ca = Ca::generate("test").unwrap();
    let a = start(&ca, "a", "us-east", None, any_port(), &[]).await;
    a.put("secret", "v").await.unwrap();
    let other = Ca::generate("test").unwrap();
    let b = start(&other, "b", "eu-west", None, any_port(), &[a.local_addr()]).await;
    assert_refused_and_isolated(&a, &b).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_deliver_changes_in_order_and_resume() {
    let ca = Ca::generate("test").unwrap();
    let a = start(&ca, "a", "us-east", None, any_port(), &[]).await;
    let b = start(&ca, "b", "eu-west", None, any_port(), &[a.local_addr()]).await;
    let mut w = b.watch("cfg/", 0);
    a.put("cfg/x", "1").await.unwrap();
    a.put("other", "no").await.unwrap();
    a.put("cfg/y", "2").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.key.as_str(), second.key.as_str()),
        ("cfg/x", "cfg/y")
    );
    assert!(first.index < second.index);
    let resume_at = w.index();
    a.delete("cfg/x").await.unwrap();
    let mut w2 = b.watch("cfg/", resume_at);
    let del = tokio::time::timeout(Duration::from_secs(10), w2.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(del.key, "cfg/x");
    assert!(del.value.is_none());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_times_out_connections_and_heals_to_the_lww_winner() {
    let cluster = three_with_faults("p", |b| {
        b.tune(|c| {
            c.ae_interval_ms = 500;
            c.heartbeat_interval_ms = 200;
        })
    })
    .await;
    let (nodes, faults) = (&cluster.nodes, &cluster.faults);
    for k in 0..10 {
        nodes[0].put(&format!("k{k}"), "base").await.unwrap();
    }
    converge(&nodes.iter().collect::<Vec<_>>(), 20).await;

    cluster.cut_off(2);
    for k in 0..10 {
        nodes[0].put(&format!("k{k}"), "from p0").await.unwrap();
    }
    nodes[1].put("only-p1", "b").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for k in 0..10 {
        nodes[2]
            .put(&format!("k{k}"), "from p2, later")
            .await
            .unwrap();
    }
    // Longer than QUIC's 5 s idle timeout: the connections die.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = nodes[2].status().await.unwrap();
        if st.replica.peers.iter().all(|p| !p.connected) {
            assert!(!st.replica.quorum, "one region of three has no quorum");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the partitioned node never noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(faults[2].dropped() > 0);
    assert_eq!(
        &nodes[0].get("k3").await.unwrap().unwrap().value[..],
        b"from p0"
    );

    for f in faults {
        f.heal();
    }
    converge(&nodes.iter().collect::<Vec<_>>(), 30).await;
    for n in nodes {
        for k in 0..10 {
            let v = n.get(&format!("k{k}")).await.unwrap().unwrap();
            assert_eq!(
                &v.value[..],
                b"from p2, later",
                "the later write wins everywhere"
            );
        }
        assert!(n.get("only-p1").await.unwrap().is_some());
    }
    // Equal roots need one link only: the other may take a moment longer.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = nodes[2].status().await.unwrap();
        if st.replica.peers.iter().all(|p| p.connected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reconnected after the heal"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_discovered_through_one_seed_and_failures_detected() {
    let ca = Ca::generate("test").unwrap();
    let a = start(&ca, "a", "us-east", None, any_port(), &[]).await;
    let b = start(&ca, "b", "eu-west", None, any_port(), &[a.local_addr()]).await;
    // c knows only b; it must find a through SWIM and connect to it.
    let c = start(
        &ca,
        "c",
        "ap-southeast",
        None,
        any_port(),
        &[b.local_addr()],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = a.status().await.unwrap();
        let alive = st.members.iter().filter(|m| m.state == "alive").count();
        let connected = st.replica.peers.iter().filter(|p| p.connected).count();
        if alive == 2 && connected == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a never found c: {:?}",
            st.members
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.put("from/c", "hello").await.unwrap();
    converge(&[&a, &b, &c], 20).await;
    assert!(a.get("from/c").await.unwrap().is_some());
    let st = a.status().await.unwrap();
    assert_eq!(st.replica.reachable_regions.len(), 3);
    let c_id = c.id();
    c.shutdown().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = a.status().await.unwrap();
        let c_alive = st
            .members
            .iter()
            .any(|m| m.member.node == c_id && m.state == "alive");
        let c_connected = st
            .replica
            .peers
            .iter()
            .any(|p| p.node == c_id && p.connected);
        if !c_alive && !c_connected {
            assert!(!st
                .replica
                .reachable_regions
                .contains(&"ap-southeast".to_string()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "c never went down in a's view: {:?}",
            st.members
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_cluster_with_the_same_ca_is_refused() {
    use meridian::core::codec::ClusterId;
    let ca = Ca::generate("test").unwrap();
    let a = start(&ca, "a", "us-east", None, any_port(), &[]).await;
    a.put("secret", "v").await.unwrap();
    let b = Node::builder("b", "eu-west", ca.issue("b", "eu-west").unwrap())
        .cluster_id(ClusterId([42; 16]))
        .seeds([a.local_addr()])
        .start()
        .await
        .unwrap();
    assert_refused_and_isolated(&a, &b).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Waits until `a` has refused `n` peers.
async fn refused(a: &Node, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.status().await.unwrap().peers_refused < n {
        assert!(Instant::now() < deadline, "the peer was never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A peer's name, region and node id are those of its certificate: a node
/// refuses to start with another's certificate, and a peer that presents a
/// valid certificate of the cluster but names itself otherwise (its name or
/// its node id in its preamble, or another node in its hello) is refused
/// and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_naming_itself_otherwise_than_its_certificate_is_refused() {
    use meridian::core::codec::{self, Hello, Message};
    use meridian::core::types::NodeId;
    use meridian::core::Hlc;
    use meridian::net::{NetEvent, Transport};
    let ca = Ca::generate("test").unwrap();
    let stolen = ca.issue("b", "eu-west").unwrap();
    let e = Node::builder("mallory", "us-east", stolen.clone())
        .start()
        .await
        .err()
        .expect("a node with another node's certificate does not start");
    assert!(e.to_string().contains("\"b\" in \"eu-west\""), "{e}");

    let a = start(&ca, "a", "us-east", None, any_port(), &[]).await;
    a.put("secret", "v").await.unwrap();
    let (server, client) = stolen.quic_configs().unwrap();
    let mut endpoint = quinn::Endpoint::server(server, any_port()).unwrap();
    endpoint.set_default_client_config(client);
    // The preamble names another node than the certificate.
    let (tx, mut events) = tokio::sync::mpsc::channel(64);
    let cluster = stolen.cluster_id().unwrap();
    let liar = Transport::new(
        endpoint.clone(),
        cluster,
        NodeId(77),
        "mallory",
        "us-east",
        tx,
    );
    let dial = tokio::spawn(liar.clone().dial_loop(a.local_addr(), None));
    refused(&a, 1).await;
    dial.abort();
    // The names are right, the node id is not the certificate's.
    let (tx, _events3) = tokio::sync::mpsc::channel(64);
    let other_id = Transport::new(endpoint.clone(), cluster, NodeId(79), "b", "eu-west", tx);
    let dial = tokio::spawn(other_id.clone().dial_loop(a.local_addr(), None));
    refused(&a, 2).await;
    dial.abort();
    // The preamble is right, the hello names another node.
    let stolen_id = stolen.node_id().expect("certificates are bound to an id");
    let (tx, mut events2) = tokio::sync::mpsc::channel(64);
    let honest = Transport::new(endpoint.clone(), cluster, stolen_id, "b", "eu-west", tx);
    let dial = tokio::spawn(honest.clone().dial_loop(a.local_addr(), None));
    let tx = loop {
        match events2.recv().await.expect("the transport runs") {
            NetEvent::Up { tx, .. } => break tx,
            _ => continue,
        }
    };
    let hello = Message::Hello(Hello {
        protocol: codec::PROTOCOL_VERSION,
        cluster,
        node: NodeId(78),
        name: "mallory".into(),
        region: "us-east".into(),
        api: String::new(),
        index: 0,
        applied: 0,
        want_full: false,
        frontier: Hlc::ZERO,
        received: Hlc::ZERO,
        gc_floor: Hlc::ZERO,
        edge: false,
        tail: false,
        rejoined: Hlc::ZERO,
    });
    tx.send(codec::encode(&hello).unwrap()).await.unwrap();
    refused(&a, 3).await;
    dial.abort();
    while events.try_recv().is_ok() {}
    let st = a.status().await.unwrap();
    assert!(
        st.replica.peers.iter().all(|p| p.name != "mallory"),
        "{:?}",
        st.replica.peers
    );
    a.shutdown().await.unwrap();
}

/// The fault-injecting socket's WAN link: a change cannot arrive sooner
/// than the injected one-way delay, and a link that loses everything
/// delivers nothing until the loss is lifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_link_delays_and_loses_datagrams() {
    use meridian::net::faults::{Faults, Link};
    let ca = Ca::generate("test").unwrap();
    let (fa, fb) = (Faults::new(), Faults::new());
    let a = Node::builder("a", "us", ca.issue("a", "us").unwrap())
        .faults(fa.clone())
        .start()
        .await
        .unwrap();
    let b = Node::builder("b", "eu", ca.issue("b", "eu").unwrap())
        .seeds([a.local_addr()])
        .faults(fb.clone())
        .start()
        .await
        .unwrap();
    let slow = Link {
        delay_ms: 150,
        jitter_ms: 0,
        loss: 0.0,
    };
    fa.set_link(b.local_addr(), slow);
    fb.set_link(a.local_addr(), slow);
    converge(&[&a, &b], 30).await;
    let mut w = b.watch("d/", b.index());
    let t = Instant::now();
    a.put("d/1", "x").await.unwrap();
    let c = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.key, "d/1");
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "arrived in {:?}",
        t.elapsed()
    );
    // Everything lost one way: the write stays on a.
    fa.set_link(b.local_addr(), Link { loss: 1.0, ..slow });
    a.put("d/2", "y").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(b.get("d/2").await.unwrap().is_none());
    assert!(fa.dropped() > 0);
    fa.set_link(b.local_addr(), slow);
    let c = tokio::time::timeout(Duration::from_secs(30), w.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.key, "d/2");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A full disk: writes are refused with a clear error while reads go on;
/// the refused commit is retried and lands when space returns; nothing
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers() {
    use meridian::node::NodeError;
    use meridian::store::faults::StoreFaults;
    let ca = Ca::generate("test").unwrap();
    let dir = scratch("full-disk");
    let faults = StoreFaults::new();
    let id = ca.issue("n", "us").unwrap();
    let start_node = |faults: std::sync::Arc<StoreFaults>| {
        Node::builder("n", "us", id.clone())
            .data_dir(dir.join("n"))
            .store_faults(faults)
            .start()
    };
    let n = start_node(faults.clone()).await.unwrap();
    for i in 0..10 {
        n.put(&format!("k{i}"), "before").await.unwrap();
    }
    faults.set_full(true);
    // The write that meets the full disk is not acknowledged: it hears so
    // at once (it is applied here, and durable if space returns).
    let n = std::sync::Arc::new(n);
    match n.put("during", "not acknowledged").await {
        Err(NodeError::NotDurable {
            disk_full: true, ..
        }) => {}
        other => panic!("expected no acknowledgement, got {other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while n.status().await.unwrap().store_trouble.is_none() {
        assert!(
            Instant::now() < deadline,
            "the refused commit was never reported"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = n.status().await.unwrap();
    assert!(st.store_trouble.as_ref().unwrap().disk_full);
    match n.put("refused", "x").await {
        Err(
            e @ NodeError::StoreUnavailable {
                disk_full: true, ..
            },
        ) => {
            assert!(e.to_string().contains("disk is full"), "{e}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Reads are served.
    assert_eq!(&n.get("k3").await.unwrap().unwrap().value[..], b"before");
    assert_eq!(n.list("k").await.unwrap().len(), 10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(faults.refused() >= 2, "the commit is retried");
    // Space returns: the retried commit lands, writes resume.
    faults.set_full(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while n.put("after", "v").await.is_err() {
        assert!(Instant::now() < deadline, "writes never resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(n.status().await.unwrap().store_trouble.is_none());
    let n = std::sync::Arc::try_unwrap(n).ok().unwrap();
    n.shutdown().await.unwrap();
    // Everything acknowledged is on disk.
    let n = start_node(StoreFaults::new()).await.unwrap();
    // The retried commit landed: the write that was not acknowledged is
    // there too.
    for k in ["k0", "k9", "during", "after"] {
        assert!(n.get(k).await.unwrap().is_some(), "{k} lost");
    }
    assert!(n.get("refused").await.unwrap().is_none());
    n.shutdown().await.unwrap();
}

/// `partition_policy = quorum` refuses writes within the contact timeout
/// of a real cut (heartbeats stop arriving), not after QUIC's 5 s idle
/// timeout closes the connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quorum_policy_refuses_writes_soon_after_a_real_cut() {
    use meridian::sync::PartitionPolicy;
    let cluster = three_with_faults("q", |b| b.partition_policy(PartitionPolicy::Quorum)).await;
    let nodes = &cluster.nodes;
    nodes[2].put("before", "v").await.unwrap();
    converge(&nodes.iter().collect::<Vec<_>>(), 20).await;
    // Node 2 knows both other regions (a node that never met them would
    // count one region of one, and have its quorum).
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes[2]
        .status()
        .await
        .unwrap()
        .replica
        .reachable_regions
        .len()
        < 3
    {
        assert!(Instant::now() < deadline, "node 2 never met the others");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.cut_off(2);
    let cut = Instant::now();
    let refused_after = loop {
        match nodes[2].put("during", "v").await {
            Err(meridian::NodeError::Write(meridian::sync::WriteError::NoQuorum { .. })) => {
                break cut.elapsed()
            }
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(cut.elapsed() < Duration::from_secs(15), "never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // contact timeout 2.5 s + one heartbeat, with room for scheduling.
    assert!(
        refused_after < Duration::from_millis(4_500),
        "writes acknowledged for {refused_after:?} after the cut"
    );
    let st = nodes[2].status().await.unwrap();
    assert!(st.replica.refusing_writes_no_quorum);
    cluster.shutdown().await;
}

/// A recursive delete asked with `ack = quorum` is answered once every
/// tombstone is durable in a majority of regions; cut off from the others,
/// it is never answered as acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_prefix_delete_is_answered_once_a_majority_holds_it() {
    use meridian::sync::WriteAck;
    let cluster = three_with_faults("d", |b| b.tune(|c| c.quorum_ack_timeout_ms = 1_500)).await;
    let nodes = &cluster.nodes;
    for k in ["app/a", "app/b"] {
        nodes[2].put(k, "v").await.unwrap();
    }
    converge(&nodes.iter().collect::<Vec<_>>(), 20).await;
    let deleted = nodes[2]
        .delete_prefix_acked("app/", 100, Some(WriteAck::Quorum))
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    cluster.cut_off(2);
    nodes[2].put("app/c", "v").await.unwrap();
    match nodes[2]
        .delete_prefix_acked("app/", 100, Some(WriteAck::Quorum))
        .await
    {
        Err(meridian::NodeError::NotReplicated(_))
        | Err(meridian::NodeError::Write(meridian::sync::WriteError::NoQuorum { .. })) => {}
        other => panic!("a cut-off quorum delete answered {other:?}"),
    }
    cluster.shutdown().await;
}
