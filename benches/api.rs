//! The HTTP API under load, and propagation between regions, on loopback.
//! Run with `cargo bench --bench api`; prints a table of figures.
//!
//! - durable writes (PUT /v1/kv) and reads (GET /v1/kv) per second through
//!   the HTTP API of one node (redb with fsync), with p50/p99 latency, at
//!   several concurrencies; each client holds one keep-alive connection;
//! - the time from a PUT's start in one region until the change arrives on
//!   `/v1/watch` streams open on the nodes of the two other regions.
//!
//! The load generator runs in the same process as the node, on the same
//! 2 cores: the figures are what one machine does serving and loading.

use std::time::{Duration, Instant};

use hyper::Method;
use meridian::client::{self, Client};
use meridian::daemon::{Daemon, DaemonConfig};
use meridian::net::tls::Ca;

/// Bootstraps the node's ACLs and makes a token for the load; its secret.
async fn acl_token(c: &Client) -> String {
    use meridian::api::wire::AclToken;
    let root: AclToken = c
        .call(Method::PUT, "/v1/acl/bootstrap", None::<&()>)
        .await
        .unwrap();
    let root_c = c.clone().token(Some(&root.secret_id));
    let rules = "key_prefix \"\" { policy = \"read\" }\nkey_prefix \"bench/\" { policy = \"write\" }\n\
                 key_prefix \"bench/private/\" { policy = \"deny\" }\nkey \"bench/flag\" { policy = \"read\" }\n\
                 operator = \"read\"";
    let policy = serde_json::json!({"Name": "bench", "Rules": rules});
    let _: serde_json::Value = root_c
        .call(Method::PUT, "/v1/acl/policy", Some(&policy))
        .await
        .unwrap();
    let token = serde_json::json!({"Policies": [{"Name": "bench"}]});
    let t: AclToken = root_c
        .call(Method::PUT, "/v1/acl/token", Some(&token))
        .await
        .unwrap();
    t.secret_id
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn config(
    root: &std::path::Path,
    name: &str,
    region: &str,
    seeds: Vec<std::net::SocketAddr>,
) -> DaemonConfig {
    DaemonConfig {
        name: name.into(),
        region: region.into(),
        data_dir: root.join(name),
        listen: "127.0.0.1:0".parse().unwrap(),
        api: "127.0.0.1:0".parse().unwrap(),
        seeds,
        ..DaemonConfig::default()
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let root = std::env::temp_dir().join(format!("meridian-bench-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let ca = Ca::generate("bench").unwrap();

        println!("== HTTP API, one node (redb, fsync per group commit), 100-byte values, keep-alive clients; plain HTTP, then HTTPS (TLS 1.3, rustls), then HTTP with ACLs on (a token with 5 rules), then HTTP without the audit log; twice, in turn, in the same run");
        println!("{:>8} {:>6} {:>6} {:>12} {:>9} {:>9}", "scheme", "clients", "op", "ops/s", "p50 ms", "p99 ms");
        // Two rounds, the three kinds in turn in each: this machine's
        // throughput drifts within a run, so each kind is measured early and late.
        // (https, acl, audit): plain HTTP, HTTPS, ACLs on, and plain HTTP
        // without the audit log (on by default, as in the others).
        let kinds = [
            (false, false, true),
            (true, false, true),
            (false, true, true),
            (false, false, false),
        ];
        for (round, (https, acl, audit)) in kinds.iter().chain(kinds.iter()).copied().enumerate() {
            let name = &*format!(
                "{}-{}",
                match (https, acl, audit) {
                    (true, _, _) => "api-tls",
                    (_, true, _) => "api-acl",
                    (_, _, false) => "api-noaudit",
                    _ => "api",
                },
                round
            );
            let mut cfg = config(&root, name, "us-east", vec![]);
            let id = ca.issue(name, "us-east").unwrap();
            let mut tls = None;
            if https {
                cfg.tls_dir = root.join(name).join("tls");
                id.save(&cfg.tls_dir).unwrap();
                cfg.api_tls.enabled = true;
                let ca_file = cfg.tls_dir.join("ca.pem");
                tls = Some(std::sync::Arc::new(client::ClientTls::new(Some(&ca_file), None, None).unwrap()));
            }
            cfg.acl.enabled = acl;
            cfg.audit.enabled = audit;
            let d = Daemon::start_with(&cfg, id, None).await.unwrap();
            let mut target = Client::with_tls(&d.api_url(), tls).unwrap();
            if acl {
                // A token whose policy may write bench/ (the keys the load uses),
                // beside other rules, as a real deployment's would be.
                let secret = acl_token(&target).await;
                target = target.token(Some(&secret));
            }
            let scheme = match (https, acl, audit) {
                (true, _, _) => "https",
                (_, true, _) => "http+acl",
                (_, _, false) => "no-audit",
                _ => "http",
            };
            for clients in [1usize, 16, 64] {
                let two = Duration::from_secs(2);
                let put = client::load(&target, clients, two, 100, 100, client::Load::Put).await.unwrap();
                println!(
                    "{scheme:>8} {clients:>6} {:>6} {:>12.0} {:>9.2} {:>9.2}",
                    "PUT",
                    put.ops_per_s,
                    put.quantile_ms(0.5),
                    put.quantile_ms(0.99)
                );
                let get = client::load(&target, clients, two, 100, 100, client::Load::Get).await.unwrap();
                println!(
                    "{scheme:>8} {clients:>6} {:>6} {:>12.0} {:>9.2} {:>9.2}",
                    "GET",
                    get.ops_per_s,
                    get.quantile_ms(0.5),
                    get.quantile_ms(0.99)
                );
            }
            d.shutdown().await.unwrap();
        }

        println!();
        println!("== propagation: PUT in us-east until the change arrives on /v1/watch in eu-west and ap-southeast (loopback, no injected delay)");
        let a = Daemon::start_with(&config(&root, "p-a", "us-east", vec![]), ca.issue("p-a", "us-east").unwrap(), None)
            .await
            .unwrap();
        let seed = vec![a.node().local_addr()];
        let b = Daemon::start_with(&config(&root, "p-b", "eu-west", seed.clone()), ca.issue("p-b", "eu-west").unwrap(), None)
            .await
            .unwrap();
        let c = Daemon::start_with(&config(&root, "p-c", "ap-southeast", seed), ca.issue("p-c", "ap-southeast").unwrap(), None)
            .await
            .unwrap();
        // Wait until both see the first key.
        let writer = Client::new(&a.api_addr().to_string()).unwrap();
        let mut watches = Vec::new();
        for d in [&b, &c] {
            let w = Client::new(&d.api_addr().to_string()).unwrap();
            let idx = d.node().index();
            watches.push(w.stream(&format!("/v1/watch/prop/?index={idx}")).await.unwrap());
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for mut s in watches {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok(Some(_)) = s.next_event().await {
                    if tx.send(Instant::now()).is_err() {
                        return;
                    }
                }
            });
        }
        let rounds = 300;
        let mut lat = Vec::new();
        for i in 0..rounds {
            let t = Instant::now();
            let r = writer.request(Method::PUT, &format!("/v1/kv/prop/{i}"), "v".into()).await.unwrap();
            assert!(r.status.is_success());
            for _ in 0..2 {
                let at = rx.recv().await.unwrap();
                lat.push(at - t);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        lat.sort();
        println!(
            "{} PUTs, {} arrivals: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (includes the PUT's fsync and the receivers' fsync)",
            rounds,
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat.last().unwrap().as_secs_f64() * 1e3
        );
        for d in [a, b, c] {
            d.shutdown().await.unwrap();
        }

        println!();
        println!("== recovery: a wiped node rebuilds 100k keys (100-byte values) from a peer until /v1/health says 200");
        let src = Daemon::start_with(&config(&root, "r-src", "us-east", vec![]), ca.issue("r-src", "us-east").unwrap(), None)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for w in 0..64 {
            let node = src.node().clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..100_000).step_by(64) {
                    node.put(&format!("cfg/{i:06}"), vec![b'x'; 100]).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let start = Instant::now();
        let wiped = Daemon::start_with(
            &config(&root, "r-wiped", "eu-west", vec![src.node().local_addr()]),
            ca.issue("r-wiped", "eu-west").unwrap(),
            None,
        )
        .await
        .unwrap();
        let health = Client::new(&wiped.api_addr().to_string()).unwrap();
        let mut first_keys = None;
        loop {
            let r = health.get("/v1/health").await.unwrap();
            if first_keys.is_none() && wiped.node().status().await.unwrap().replica.keys > 0 {
                first_keys = Some(start.elapsed());
            }
            if r.status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let healthy = start.elapsed();
        let keys = wiped.node().status().await.unwrap().replica.keys;
        assert_eq!(keys, 100_000);
        assert_eq!(wiped.node().digest("").await.unwrap(), src.node().digest("").await.unwrap());
        println!(
            "start to healthy: {:.2} s ({} keys, equal roots); first keys after {:.2} s",
            healthy.as_secs_f64(),
            keys,
            first_keys.unwrap_or_default().as_secs_f64()
        );
        for d in [src, wiped] {
            d.shutdown().await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&root);
    });
}
