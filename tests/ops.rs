//! Operations with real processes: backups taken while writing, restored
//! into a fresh cluster with equal roots; incremental chains; corruption
//! and foreign-cluster refusal; scheduled snapshots with retention.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use meridian::client::Client;

fn inspect(file: &Path) -> serde_json::Value {
    let o = std::process::Command::new(BIN)
        .args(["backup", "inspect", "--json"])
        .arg(file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v[0].clone()
}

fn root_of(api: &str) -> String {
    let r = rt()
        .block_on(Client::new(api).unwrap().get("/v1/digest"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["root"].as_str().unwrap().to_string()
}

#[test]
fn backups_taken_while_writing_restore_into_a_fresh_cluster() {
    let root = dir("ops-backup");
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let (_a, a) = node(&root, "a", "us", pa, &[], "");
    let (_b, b) = node(&root, "b", "eu", pb, &[pa], "");
    for i in 0..10 {
        let o = meridian(&a, &["kv", "put", &format!("seed/{i:03}"), "x"]);
        assert!(o.status.success(), "{o:?}");
    }
    // A writer keeps writing through the API while the backups are taken.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, b) = (stop.clone(), written.clone(), b.clone());
        std::thread::spawn(move || {
            rt().block_on(async {
                let c = Client::new(&b).unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let path = format!("/v1/kv/live/{i:06}");
                    let r = c
                        .request(hyper::Method::PUT, &path, "v".into())
                        .await
                        .unwrap();
                    assert_eq!(r.text(), "true");
                    i += 1;
                    written.store(i, Ordering::Relaxed);
                }
            })
        })
    };
    eventually("the writer is going", || {
        written.load(Ordering::Relaxed) > 50
    });
    let full = root.join("full.mbak");
    let o = meridian(&a, &["backup", "create", "--out", full.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    let f = inspect(&full);
    assert_eq!(f["kind"], "full");
    let since = f["index"].as_u64().unwrap();
    eventually("more writes after the full backup", || {
        written.load(Ordering::Relaxed) > f["entries"].as_u64().unwrap() + 50
    });
    let inc = root.join("inc.mbak");
    let o = meridian(
        &a,
        &[
            "backup",
            "create",
            "--since",
            &since.to_string(),
            "--out",
            inc.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let i = inspect(&inc);
    assert_eq!(i["kind"], "incremental");
    assert!(i["entries"].as_u64().unwrap() > 0);
    assert!(i["entries"].as_u64().unwrap() < i["index"].as_u64().unwrap());

    // A fresh cluster of the same CA: the full backup gives the full backup's root on every node.
    let (pc, pd) = (free_udp_port(), free_udp_port());
    let (_c, c) = node(&root, "c", "us", pc, &[], "");
    let (_d, d) = node(&root, "d", "eu", pd, &[pc], "");
    eventually("c and d are connected", || {
        stdout(&meridian(&c, &["status", "--json"])).contains("\"connected\": true")
    });
    let o = meridian(&c, &["restore", full.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(root_of(&c), f["root"].as_str().unwrap());
    assert_eq!(root_of(&d), f["root"].as_str().unwrap());
    // The chain (given in any order) brings both to the incremental's root.
    let o = meridian(
        &c,
        &["restore", inc.to_str().unwrap(), full.to_str().unwrap()],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(root_of(&c), i["root"].as_str().unwrap());
    assert_eq!(root_of(&d), i["root"].as_str().unwrap());
    let v = meridian(&c, &["verify"]);
    assert!(
        stdout(&v).contains("all 2 nodes in 2 regions agree on"),
        "{v:?}"
    );
    // An incremental alone is not a state: refused.
    let o = meridian(&c, &["restore", inc.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");

    // A corrupted copy is caught by inspect and by restore.
    let mut bytes = std::fs::read(&full).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let bad = root.join("bad.mbak");
    std::fs::write(&bad, bytes).unwrap();
    let o = std::process::Command::new(BIN)
        .args(["backup", "inspect"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("INVALID"), "{o:?}");
    assert_eq!(
        meridian(&c, &["restore", bad.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );

    // A node of another cluster (another CA) refuses it unless forced.
    let other = dir("ops-backup-other");
    let (_e, e) = node(&other, "e", "us", free_udp_port(), &[], "");
    let o = meridian(&e, &["restore", full.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("another cluster"), "{o:?}");
    let o = meridian(&e, &["restore", "--force", full.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(root_of(&e), f["root"].as_str().unwrap());
}

#[test]
fn scheduled_snapshots_keep_the_newest() {
    let root = dir("ops-snapshots");
    let snaps = root.join("snaps");
    let extra = format!(
        "[backup]\ndir = \"{}\"\ninterval_ms = 1000\nkeep = 2\n",
        snaps.display()
    );
    let (_a, a) = node(&root, "a", "us", free_udp_port(), &[], &extra);
    assert!(meridian(&a, &["kv", "put", "k", "v"]).status.success());
    let count = || {
        std::fs::read_dir(&snaps)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "mbak"))
                    .count()
            })
            .unwrap_or(0)
    };
    // Two, then a third taken and the oldest removed.
    eventually("two snapshots", || count() == 2);
    let first: Vec<_> = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    eventually("the oldest is replaced", || {
        count() == 2 && !first.iter().all(|p| p.exists())
    });
    for e in std::fs::read_dir(&snaps).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "mbak") {
            let s = inspect(&p);
            assert_eq!(s["entries"], 1);
            assert_eq!(s["root"].as_str().unwrap(), root_of(&a));
        }
    }
}
