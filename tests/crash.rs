//! A node killed with SIGKILL mid-load loses no acknowledged write: the
//! test runs itself as a child process that writes through a real node
//! (redb, group commit, 32 concurrent writers) and reports each write once
//! `put` returned, then kills it, restarts a node on the same data directory
//! and checks every acknowledged key.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian::net::tls::{Ca, NodeIdentity};
use meridian::node::Node;

const WRITERS: usize = 32;

fn child(dir: PathBuf, identity: NodeIdentity) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let node = Arc::new(
            Node::builder("crash", "us-east", identity)
                .data_dir(dir)
                .start()
                .await
                .unwrap(),
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for w in 0..WRITERS {
            let (node, tx) = (node.clone(), tx.clone());
            tokio::spawn(async move {
                for i in 0u64.. {
                    let key = format!("w{w}/k{i}");
                    node.put(&key, key.clone()).await.unwrap();
                    if tx.send(key).is_err() {
                        return;
                    }
                }
            });
        }
        let mut out = std::io::stdout().lock();
        while let Some(key) = rx.recv().await {
            writeln!(out, "acked {key}").unwrap();
            out.flush().unwrap();
        }
    });
    unreachable!("the writers never stop");
}

#[test]
fn acknowledged_writes_survive_sigkill_of_a_node() {
    if let Ok(dir) = std::env::var("MERIDIAN_NODE_CRASH_DIR") {
        let id = NodeIdentity::load(&PathBuf::from(&dir).join("tls")).unwrap();
        child(PathBuf::from(dir).join("data"), id);
    }
    let dir = std::env::temp_dir().join(format!("meridian-node-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = Ca::generate("crash").unwrap();
    let identity = ca.issue("crash", "us-east").unwrap();
    identity.save(&dir.join("tls")).unwrap();
    let mut acked: Vec<String> = Vec::new();
    for round in 0..2 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "acknowledged_writes_survive_sigkill_of_a_node",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MERIDIAN_NODE_CRASH_DIR", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let before = acked.len();
        let started = Instant::now();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(k) = line.strip_prefix("acked ") {
                acked.push(k.to_string());
            }
            if acked.len() - before >= 500 + round * 300
                || started.elapsed() > Duration::from_secs(60)
            {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            acked.len() > before,
            "round {round}: the child acknowledged nothing"
        );
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let node = Node::builder("crash", "us-east", identity)
            .data_dir(dir.join("data"))
            .start()
            .await
            .unwrap();
        for key in &acked {
            let e = node
                .get(key)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged {key} lost"));
            assert_eq!(&e.value[..], key.as_bytes());
        }
        node.shutdown().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(dir);
}
