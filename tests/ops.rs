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
    // A key deleted after the full backup whose tombstone is collected
    // before the incremental: only the incremental's removal list shows it.
    assert!(meridian(&a, &["kv", "delete", "seed/000"]).status.success());
    eventually("a collected the tombstone", || {
        stdout(&meridian(&a, &["status", "--json"])).contains("\"tombstones\": 0")
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

    // A fresh node of the same CA: the full backup gives it the full backup's root.
    let (_g, g) = node(&root, "g", "us", free_udp_port(), &[], "");
    let o = meridian(&g, &["restore", full.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(root_of(&g), f["root"].as_str().unwrap());
    // A fresh cluster: the chain (given in any order) gives every node the
    // incremental's root. (A restore merges: it never deletes, so the chain
    // goes into a fresh cluster, not over the full backup's keys.)
    let (pc, pd) = (free_udp_port(), free_udp_port());
    let (_c, c) = node(&root, "c", "us", pc, &[], "");
    let (_d, d) = node(&root, "d", "eu", pd, &[pc], "");
    eventually("c and d are connected", || {
        stdout(&meridian(&c, &["status", "--json"])).contains("\"connected\": true")
    });
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
    assert_eq!(
        meridian(&c, &["kv", "get", "seed/000"]).status.code(),
        Some(1)
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

/// Tiers of scheduled backups: full and incremental schedules, each with
/// its retention, never leaving an incremental without its full backup;
/// `backup list` shows every point, and `drill` restores the newest chain
/// and checks its root (and fails on a damaged backup).
#[test]
fn tiered_backups_keep_their_chains_and_a_drill_restores_the_newest() {
    let root = dir("ops-tiers");
    let backups = root.join("backups");
    let extra = format!(
        "[backup]\ndir = \"{}\"\n\
         [[backup.schedule]]\nname = \"full\"\nkind = \"full\"\ninterval_ms = 3000\nkeep = 2\n\
         [[backup.schedule]]\nname = \"inc\"\nkind = \"incremental\"\ninterval_ms = 1000\nkeep = 3\n",
        backups.display()
    );
    let (a_proc, a) = node(&root, "a", "us", free_udp_port(), &[], &extra);
    let list = || -> Vec<serde_json::Value> {
        let o = std::process::Command::new(BIN)
            .args(["backup", "list", "--json", "--dir"])
            .arg(&backups)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let mut written = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(meridian(&a, &["kv", "put", &format!("k/{written}"), "v"])
            .status
            .success());
        written += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
        let points = list();
        let of = |schedule: &str| points.iter().filter(|p| p["schedule"] == schedule).count();
        // (The first incrementals build on the full backup of the empty
        // node, index 0: they hold everything, and are full backups.)
        let incs = points.iter().filter(|p| p["full"] == false).count();
        // Retention never leaves an incremental without its full backup;
        // a full backup beyond `keep` stays while one builds on it.
        assert!(points.iter().all(|p| p["restorable"] == true), "{points:?}");
        assert!(of("full") <= 3, "{points:?}");
        assert!(of("inc") <= 3, "{points:?}");
        if of("full") >= 2 && incs >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{points:?}");
    }
    // The drill restores the newest chain: the node's state when it was
    // taken (the node stopped first, so that no backup comes or goes).
    assert!(a_proc.terminate().success());
    let o = std::process::Command::new(BIN)
        .args(["drill", "--json", "--dir"])
        .arg(&backups)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let reports: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["node"], "a");
    assert!(r["keys"].as_u64().unwrap() >= written - 30, "{r}");
    assert!(r["rpo_ms"].as_u64().unwrap() < 10_000, "{r}");
    let text = stdout(
        &std::process::Command::new(BIN)
            .args(["drill", "--dir"])
            .arg(&backups)
            .output()
            .unwrap(),
    );
    println!("{text}");
    assert!(
        text.contains("ok: the restored root is the recorded one"),
        "{text}"
    );
    // A damaged newest backup: the drill says so and fails.
    let newest = r["files"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let path = backups.join(&newest);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let o = std::process::Command::new(BIN)
        .args(["drill", "--node", "a", "--dir"])
        .arg(&backups)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stdout(&o).contains("FAILED"), "{}", stdout(&o));
}

/// After a restart, the first full backup (due, or taken in place of an
/// incremental the node could not make) gets incrementals on top, quiet or
/// not: the node does not take a full backup at every look.
#[test]
fn after_a_restart_incrementals_build_on_the_first_full_backup() {
    let root = dir("ops-restart-inc");
    let backups = root.join("backups");
    let (a_proc, a) = node(&root, "a", "us", free_udp_port(), &[], "");
    for i in 0..20 {
        assert!(meridian(&a, &["kv", "put", &format!("k/{i}"), "v"])
            .status
            .success());
    }
    assert!(a_proc.terminate().success());
    // Restarted with schedules: the daily full backup is due at once, and
    // then incrementals build on it (nothing changes: they are empty).
    let extra = format!(
        "[backup]\ndir = \"{}\"\n\
         [[backup.schedule]]\nname = \"daily\"\nkind = \"full\"\ninterval_ms = 3600000\n\
         [[backup.schedule]]\nname = \"inc\"\nkind = \"incremental\"\ninterval_ms = 1000\nkeep = 100\n",
        backups.display()
    );
    let toml = root.join("a.toml");
    let cfg = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("{cfg}\n{extra}")).unwrap();
    let (_a, _api) = restart(&root, "a");
    let count = |full: bool| {
        std::fs::read_dir(&backups)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.ends_with(".mbak") && n.contains("-full") == full
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    eventually("three incrementals", || count(false) >= 3);
    assert_eq!(count(true), 1, "one full backup, not one at every look");
}

/// Drills on schedule: metrics report the last drill's recovery point and
/// time, and a drill that fails (a damaged backup) makes the node unhealthy.
#[test]
fn a_scheduled_drill_reports_and_a_failed_one_is_unhealthy() {
    let root = dir("ops-drill");
    let backups = root.join("backups");
    let extra = format!(
        "[backup]\ndir = \"{}\"\ndrill_interval_ms = 1000\n\
         [[backup.schedule]]\nname = \"hourly\"\nkind = \"full\"\ninterval_ms = 3600000\n",
        backups.display()
    );
    let (_a, a) = node(&root, "a", "us", free_udp_port(), &[], &extra);
    let metrics = || {
        let r = rt()
            .block_on(Client::new(&a).unwrap().get("/metrics"))
            .unwrap();
        String::from_utf8_lossy(&r.body).into_owned()
    };
    eventually("a drill passed", || {
        metrics().contains("meridian_drill_ok{destination=\"local\"} 1")
    });
    let m = metrics();
    assert!(m.contains("meridian_drill_rto_ms "), "{m}");
    assert!(
        m.contains("meridian_backup_age_ms{schedule=\"hourly\",destination=\"local\"}"),
        "{m}"
    );
    assert!(meridian(&a, &["health"]).status.success());
    // The only backup is damaged: the next drill fails, and says why.
    let file = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "mbak"))
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    eventually("the drill failed", || {
        metrics().contains("meridian_drill_ok{destination=\"local\"} 0")
    });
    let h = meridian(&a, &["health"]);
    assert_eq!(h.status.code(), Some(1));
    assert!(
        stdout(&h).contains("restore drill failed"),
        "{}",
        stdout(&h)
    );
}

#[test]
fn standby_refuses_writes_until_promoted_and_stays_promoted() {
    let root = dir("ops-standby");
    let pa = free_udp_port();
    let ps = free_udp_port();
    let (_a, a) = node(&root, "a", "us", pa, &[], "");
    // a's event stream reports the standby joining.
    let rt = rt();
    let mut events = rt
        .block_on(Client::new(&a).unwrap().stream("/v1/events"))
        .unwrap();
    let (s_proc, s) = node(&root, "s", "eu", ps, &[pa], "role = \"standby\"\n");
    let up = rt.block_on(async {
        loop {
            let e = events.next_event().await.unwrap().unwrap();
            if e.event == "peer_up" {
                return e;
            }
        }
    });
    let doc: serde_json::Value = serde_json::from_str(&up.data).unwrap();
    assert_eq!(
        (doc["peer_name"].as_str(), doc["name"].as_str()),
        (Some("s"), Some("a"))
    );
    assert!(meridian(&a, &["kv", "put", "app/x", "1"]).status.success());
    eventually("the standby replicates", || {
        stdout(&meridian(&s, &["kv", "get", "app/x"])) == "1"
    });
    let o = meridian(&s, &["kv", "put", "app/x", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("standby"),
        "{o:?}"
    );
    let st = stdout(&meridian(&s, &["status", "--json"]));
    assert!(st.contains("\"role\": \"standby\""), "{st}");
    // Failover: promote it, then it takes writes, and they replicate back.
    let o = meridian(&s, &["promote"]);
    assert!(stdout(&o).contains("promoted"), "{o:?}");
    assert!(meridian(&s, &["kv", "put", "app/x", "2"]).status.success());
    eventually("the write replicates to a", || {
        stdout(&meridian(&a, &["kv", "get", "app/x"])) == "2"
    });
    // Still active after a restart, although its config says standby.
    assert!(s_proc.terminate().success());
    let (_s2, s2) = restart(&root, "s");
    assert!(meridian(&s2, &["kv", "put", "app/y", "3"]).status.success());
}

fn status_json(addr: &str) -> serde_json::Value {
    serde_json::from_str(&stdout(&meridian(addr, &["status", "--json"]))).unwrap()
}

/// `[failover]` with three regions: us active, eu then ap standby. When
/// only the link between us and eu is cut (the fault socket), eu does not
/// take over: ap still reaches us. When us is cut off from both, eu takes
/// over after the wait (and records it), ap stays a standby behind it, and
/// writes go on in eu (and in the cut-off us). When the cut heals, every
/// region converges and eu stays active: the promotion does not flap back.
#[test]
fn a_standby_region_takes_over_in_priority_order_when_judged_together() {
    let root = dir("ops-failover");
    let (pu, pe, pa) = (free_udp_port(), free_udp_port(), free_udp_port());
    let failover = "[failover]\npriority = [\"us\", \"eu\", \"ap\"]\nafter_ms = 5000\n";
    let standby = format!("role = \"standby\"\n{failover}");
    let (u_block, e_block, a_block) = (
        root.join("us.block"),
        root.join("eu.block"),
        root.join("ap.block"),
    );
    let u_env = [("MERIDIAN_FAULT_BLOCK_FILE", u_block.to_str().unwrap())];
    let e_env = [("MERIDIAN_FAULT_BLOCK_FILE", e_block.to_str().unwrap())];
    let a_env = [("MERIDIAN_FAULT_BLOCK_FILE", a_block.to_str().unwrap())];
    let (_u, us) = node_with(&root, "u", "us", pu, &[], failover, &u_env, None);
    let (_e, eu) = node_with(&root, "e", "eu", pe, &[pu], &standby, &e_env, None);
    let (_a, ap) = node_with(&root, "a", "ap", pa, &[pu, pe], &standby, &a_env, None);
    eventually("every region reaches every other", || {
        [&us, &eu, &ap]
            .iter()
            .all(|n| status_json(n)["reachable_regions"].as_array().map(Vec::len) == Some(3))
    });
    assert!(meridian(&us, &["kv", "put", "app/db", "us"])
        .status
        .success());
    eventually("eu stands behind the active us", || {
        status_json(&eu)["failover"]
            .as_str()
            .is_some_and(|f| f.contains("an active member of us is reachable"))
    });
    // Only us-eu is cut: eu cannot reach us, ap can. eu must not take over.
    std::fs::write(&u_block, format!("127.0.0.1:{pe}\n")).unwrap();
    std::fs::write(&e_block, format!("127.0.0.1:{pu}\n")).unwrap();
    eventually("eu sees ap still reaching us", || {
        status_json(&eu)["failover"]
            .as_str()
            .is_some_and(|f| f.contains("ap still reaches it"))
    });
    std::thread::sleep(std::time::Duration::from_millis(7_000));
    let st = status_json(&eu);
    assert_eq!(st["role"], "standby", "{st}");
    assert!(!meridian(&eu, &["kv", "put", "app/db", "eu"])
        .status
        .success());
    std::fs::remove_file(&u_block).unwrap();
    std::fs::remove_file(&e_block).unwrap();
    eventually("eu reaches us again", || {
        status_json(&eu)["reachable_regions"]
            .as_array()
            .map(Vec::len)
            == Some(3)
    });
    // us is cut off from both standby regions: eu takes over once us has
    // been out of reach for 5 s (after the contact timeout).
    std::fs::write(&u_block, format!("127.0.0.1:{pe}\n127.0.0.1:{pa}\n")).unwrap();
    std::fs::write(&e_block, format!("127.0.0.1:{pu}\n")).unwrap();
    std::fs::write(&a_block, format!("127.0.0.1:{pu}\n")).unwrap();
    let cut = std::time::Instant::now();
    eventually("eu takes over", || status_json(&eu)["role"] == "active");
    let waited = cut.elapsed();
    assert!(waited >= std::time::Duration::from_secs(5), "{waited:?}");
    assert!(
        status_json(&eu)["failover"]
            .as_str()
            .is_some_and(|f| f.contains("took over from us")),
        "{}",
        status_json(&eu)
    );
    assert!(
        root.join("e/data/promoted").exists(),
        "the promotion is recorded"
    );
    // Writes go on: in eu, and in us, which does not know it was replaced.
    assert!(meridian(&eu, &["kv", "put", "app/eu", "1"])
        .status
        .success());
    assert!(meridian(&us, &["kv", "put", "app/us", "1"])
        .status
        .success());
    eventually("ap takes eu's write", || {
        stdout(&meridian(&ap, &["kv", "get", "app/eu"])) == "1"
    });
    // Its judgement follows eu's view, which comes with each heartbeat.
    eventually("ap sees eu active and reachable", || {
        status_json(&ap)["failover"]
            .as_str()
            .is_some_and(|f| f.contains("an active member of eu is reachable"))
    });
    let st = status_json(&ap);
    assert_eq!(st["role"], "standby", "{st}");
    // The cut heals: every region converges, and eu stays active.
    for f in [&u_block, &e_block, &a_block] {
        std::fs::remove_file(f).unwrap();
    }
    eventually("every region holds both sides' writes", || {
        meridian(&us, &["verify"]).status.success()
            && stdout(&meridian(&eu, &["kv", "get", "app/us"])) == "1"
    });
    std::thread::sleep(std::time::Duration::from_millis(3_000));
    assert_eq!(status_json(&eu)["role"], "active");
    assert_eq!(status_json(&ap)["role"], "standby");
    assert!(meridian(&eu, &["kv", "put", "app/eu", "2"])
        .status
        .success());
}

#[test]
fn a_mass_delete_needs_force() {
    let root = dir("ops-guard");
    let extra = "[limits]\nrecursive_delete_keys_max = 5\n";
    let (_a, a) = node(&root, "a", "us", free_udp_port(), &[], extra);
    for i in 0..10 {
        assert!(meridian(&a, &["kv", "put", &format!("p/{i}"), "v"])
            .status
            .success());
    }
    let o = meridian(&a, &["kv", "delete", "--recurse", "p/"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("recursive_delete_keys_max"),
        "{o:?}"
    );
    assert_eq!(
        stdout(&meridian(&a, &["kv", "list", "p/"])).lines().count(),
        10
    );
    // Within the limit, no force needed; beyond it, with force.
    let o = meridian(&a, &["kv", "delete", "--recurse", "p/1"]);
    assert!(o.status.success(), "{o:?}");
    let o = meridian(&a, &["kv", "delete", "--recurse", "--force", "p/"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&meridian(&a, &["kv", "list", "p/"])), "");
}

#[test]
fn a_wiped_node_is_syncing_and_unhealthy_until_rebuilt() {
    let root = dir("ops-rebuild");
    let pa = free_udp_port();
    let (a_proc, a) = node(&root, "a", "us", pa, &[], "");
    for i in 0..50 {
        assert!(meridian(&a, &["kv", "put", &format!("k/{i}"), "v"])
            .status
            .success());
    }
    // Its only peer is down: the empty node waits, syncing, unhealthy.
    assert!(a_proc.terminate().success());
    let (_w, w) = node(&root, "w", "eu", free_udp_port(), &[pa], "");
    let st = stdout(&meridian(&w, &["status"]));
    assert!(st.contains("syncing"), "{st}");
    let h = meridian(&w, &["health"]);
    assert_eq!(h.status.code(), Some(1));
    assert!(stdout(&h).contains("rebuilding"), "{h:?}");
    // The peer returns: the rebuild completes, and health and roots follow.
    let (_a2, a2) = restart(&root, "a");
    eventually("w is active with a's root", || {
        let s = stdout(&meridian(&w, &["status", "--json"]));
        s.contains("\"state\": \"active\"") && stdout(&meridian(&w, &["verify"])).contains("agree")
    });
    assert_eq!(
        stdout(&meridian(&w, &["kv", "list", "k/"])).lines().count(),
        50
    );
    eventually("w is healthy", || {
        meridian(&w, &["health"]).status.success()
    });
    let _ = a2;
}

#[test]
fn webhooks_receive_partition_and_heal_events_from_a_real_partition() {
    // A receiver for the webhooks.
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        rt().block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(serde_json::from_slice(&body).unwrap());
                        "ok"
                    }
                }),
            );
            axum::serve(l, app).await.unwrap();
        })
    });
    // The dev cluster's partition demo cuts a region off under QUIC (a
    // fault-injecting socket), writes on both sides, and heals.
    let d = dir("ops-webhook");
    let p = Proc::spawn(&[
        "dev",
        "--dir",
        d.to_str().unwrap(),
        "--api-port",
        "0",
        "--regions",
        "2",
        "--partition-demo",
        "--webhook",
        &hook,
    ]);
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let has = |seen: &[serde_json::Value], kind: &str| seen.iter().any(|e| e["type"] == kind);
    while !(has(&seen, "partition_detected") && has(&seen, "partition_healed")) {
        let left = deadline.checked_duration_since(std::time::Instant::now());
        let Some(left) = left else {
            panic!("no partition_detected and partition_healed events; got {seen:#?}");
        };
        if let Ok(e) = rx.recv_timeout(left) {
            seen.push(e);
        }
    }
    let detected = seen
        .iter()
        .find(|e| e["type"] == "partition_detected")
        .unwrap();
    assert!(
        detected["cut_region"].is_string() && detected["name"].is_string(),
        "{detected}"
    );
    // partition_ms runs from detection (the contact timeout) to the
    // reconnection after the heal: tens of ms at least; the false
    // "partitions" of a swapped connection measured 0-1 ms.
    let healed = seen
        .iter()
        .find(|e| e["type"] == "partition_healed")
        .unwrap();
    assert!(
        seen.iter()
            .filter(|e| e["type"] == "partition_healed")
            .all(|e| e["partition_ms"].as_u64().unwrap() >= 50),
        "a partition event without a partition: {seen:#?}"
    );
    assert!(healed["keys_exchanged"].as_u64().unwrap() > 0, "{healed}");
    assert!(healed["partition_ms"].as_u64().unwrap() > 0, "{healed}");
    assert!(healed["converge_ms"].is_u64(), "{healed}");
    // The partition's end was reported too. (Whether the peers' QUIC
    // connections went down meanwhile depends on the cut outlasting the
    // transport's idle timeout: regions are judged by contact, sooner.)
    assert!(has(&seen, "partition_ended"), "{seen:#?}");
    drop(p);
}

#[test]
fn history_and_rollback_replicate() {
    let root = dir("ops-history");
    let pa = free_udp_port();
    let (_a, a) = node(&root, "a", "us", pa, &[], "");
    let (_b, b) = node(&root, "b", "eu", free_udp_port(), &[pa], "");
    // One at a time: a replica receives current entries, so writes in quick
    // succession may reach b as only the latest (b's history holds what it received).
    for v in ["v1", "v2", "v3"] {
        assert!(meridian(&a, &["kv", "put", "cfg/mode", v]).status.success());
        eventually("b has it", || {
            stdout(&meridian(&b, &["kv", "get", "cfg/mode"])) == v
        });
    }
    // b kept the replicated versions, with who wrote them.
    let history = |api: &str| -> Vec<serde_json::Value> {
        let o = meridian(api, &["kv", "history", "--json", "cfg/mode"]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    eventually("b has three versions", || history(&b).len() == 3);
    let hb = history(&b);
    assert!(
        hb.iter()
            .all(|v| v["NodeName"] == "a" && v["Region"] == "us"),
        "{hb:#?}"
    );
    let table = stdout(&meridian(&b, &["kv", "history", "cfg/mode"]));
    assert!(table.contains("v1") && table.contains("v3"), "{table}");
    // Roll back on b to the first version: a new write that replicates and wins.
    let first = hb[0]["Index"].as_u64().unwrap().to_string();
    let o = meridian(&b, &["kv", "rollback", "cfg/mode", "--to", &first]);
    assert!(o.status.success(), "{o:?}");
    eventually("a holds the rolled-back value", || {
        stdout(&meridian(&a, &["kv", "get", "cfg/mode"])) == "v1"
    });
    let ha = history(&a);
    assert_eq!(ha.len(), 4, "{ha:#?}");
    assert_eq!(ha[3]["NodeName"], "b");
    // By stamp too, and to a deleted version.
    assert!(meridian(&a, &["kv", "delete", "cfg/mode"]).status.success());
    assert!(meridian(&a, &["kv", "put", "cfg/mode", "v5"])
        .status
        .success());
    let deleted = history(&a)
        .into_iter()
        .find(|v| v["Deleted"] == true)
        .unwrap();
    let o = meridian(
        &a,
        &[
            "kv",
            "rollback",
            "cfg/mode",
            "--to",
            deleted["Stamp"].as_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        meridian(&a, &["kv", "get", "cfg/mode"]).status.code(),
        Some(1)
    );
    // An unknown version is an error that names the way to find one.
    let o = meridian(&a, &["kv", "rollback", "cfg/mode", "--to", "999999"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("kv history"));
}

#[test]
fn import_export_round_trip_in_every_format() {
    let root = dir("ops-transfer");
    let (_a, a) = node(&root, "a", "us", free_udp_port(), &[], "");
    let yaml = root.join("app.yaml");
    std::fs::write(
        &yaml,
        "db:\n  host: db1.internal\n  port: 5432\nfeatures:\n  - search\n",
    )
    .unwrap();
    // A dry run shows what would change and writes nothing.
    let o = meridian(
        &a,
        &[
            "kv",
            "import",
            "--prefix",
            "app",
            "--dry-run",
            yaml.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    assert!(text.contains("+ app/db/host = \"db1.internal\""), "{text}");
    assert!(
        text.contains("dry run: 3 to add, 0 to change, 0 unchanged"),
        "{text}"
    );
    assert_eq!(stdout(&meridian(&a, &["kv", "list", "app/"])), "");
    let o = meridian(
        &a,
        &["kv", "import", "--prefix", "app", yaml.to_str().unwrap()],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&meridian(&a, &["kv", "get", "app/db/port"])), "5432");
    assert!(
        meridian(&a, &["kv", "put", "--flags", "7", "app/flagged", "x"])
            .status
            .success()
    );
    // A sibling whose name starts with the prefix is not under it.
    assert!(meridian(&a, &["kv", "put", "application/x", "no"])
        .status
        .success());
    let before = stdout(&meridian(&a, &["kv", "list", "--json", "app/"]));
    // JSON holds full keys (Consul's format); YAML and properties hold the
    // keys below the prefix.
    for (file, prefix, again) in [
        ("out.json", "app", ""),
        ("out.yaml", "app", "app"),
        ("out.properties", "app", "app"),
    ] {
        let path = root.join(file);
        let o = meridian(
            &a,
            &["kv", "export", prefix, "--out", path.to_str().unwrap()],
        );
        assert!(o.status.success(), "{file}: {o:?}");
        // Unchanged: importing the export changes nothing.
        let o = meridian(
            &a,
            &[
                "kv",
                "import",
                "--prefix",
                again,
                "--dry-run",
                path.to_str().unwrap(),
            ],
        );
        assert!(
            stdout(&o).contains("0 to add, 0 to change"),
            "{file}: {}",
            stdout(&o)
        );
        // Into an empty prefix elsewhere, and back out: the same keys and values.
        let copy = format!("copy-{}", file.replace('.', "-"));
        let into = if again.is_empty() {
            copy.clone()
        } else {
            format!("{copy}/app")
        };
        let o = meridian(
            &a,
            &["kv", "import", "--prefix", &into, path.to_str().unwrap()],
        );
        assert!(o.status.success(), "{file}: {o:?}");
        let listed = stdout(&meridian(
            &a,
            &["kv", "list", "--values", &format!("{copy}/")],
        ));
        let orig = stdout(&meridian(&a, &["kv", "list", "--values", "app/"]));
        let strip = |s: &str, p: &str| {
            s.lines()
                .map(|l| l.trim_start_matches(p).to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strip(&listed, &format!("{copy}/")),
            strip(&orig, ""),
            "{file}"
        );
    }
    for f in ["out.yaml", "out.properties"] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        assert!(!text.contains("lication"), "{f}: {text}");
    }
    // JSON keeps flags too.
    let copied = stdout(&meridian(
        &a,
        &["kv", "get", "--json", "copy-out-json/app/flagged"],
    ));
    assert!(copied.contains("\"Flags\": 7"), "{copied}");
    assert_eq!(
        stdout(&meridian(&a, &["kv", "list", "--json", "app/"])),
        before
    );
    // A malformed file is refused with its name, and nothing is written.
    let bad = root.join("bad.yaml");
    std::fs::write(&bad, "a: [unclosed\n").unwrap();
    let o = meridian(
        &a,
        &["kv", "import", "--prefix", "bad", bad.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bad.yaml"),
        "{o:?}"
    );
}

#[test]
fn a_node_away_longer_than_the_tombstone_horizon_resyncs_instead_of_resurrecting() {
    let root = dir("ops-horizon");
    let short = "[sync]\ntombstone_horizon_ms = 2000\n";
    let pa = free_udp_port();
    let pb = free_udp_port();
    let (_a, a) = node(&root, "a", "us", pa, &[], short);
    let (b_proc, b) = node(&root, "b", "eu", pb, &[pa], short);
    assert!(meridian(&a, &["kv", "put", "gone", "old"]).status.success());
    assert!(meridian(&a, &["kv", "put", "kept", "old"]).status.success());
    eventually("b has both", || {
        stdout(&meridian(&b, &["kv", "list", "--values"])) == "gone = old\nkept = old\n"
    });
    // b goes away; the key is deleted; the tombstone outlives the horizon
    // and is collected by age (b never acknowledged it).
    assert!(b_proc.terminate().success());
    assert!(meridian(&a, &["kv", "delete", "gone"]).status.success());
    eventually("a collected the tombstone by age", || {
        let s = stdout(&meridian(&a, &["status", "--json"]));
        s.contains("\"tombstones\": 0")
    });
    // b returns with the old value: it is told it is stale and resyncs.
    let (_b2, b2) = restart(&root, "b");
    eventually("b dropped the deleted key and agrees with a", || {
        meridian(&b2, &["kv", "get", "gone"]).status.code() == Some(1)
            && stdout(&meridian(&b2, &["verify"])).contains("agree")
    });
    assert_eq!(
        stdout(&meridian(&a, &["kv", "list", "--values"])),
        "kept = old\n"
    );
    assert_eq!(
        stdout(&meridian(&b2, &["kv", "list", "--values"])),
        "kept = old\n"
    );
    let m = rt()
        .block_on(Client::new(&b2).unwrap().get("/metrics"))
        .unwrap()
        .text();
    assert!(m.contains("meridian_resyncs_total 1"), "{m}");
}

/// moto's S3-compatible server (PyPI, pinned in tests/moto-requirements.txt)
/// in a venv under the test target directory, on a free port; killed when
/// dropped.
struct Moto {
    child: std::process::Child,
    endpoint: String,
    python: std::path::PathBuf,
}

impl Moto {
    fn start() -> Moto {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("moto-venv");
        let python = venv.join("bin").join("python");
        let requirements =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto-requirements.txt");
        let marker = venv.join("installed");
        if !marker.exists() {
            let o = std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .output()
                .expect("python3 is needed for the object storage tests");
            assert!(o.status.success(), "python3 -m venv: {o:?}");
            let o = std::process::Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "-r"])
                .arg(&requirements)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "pip install moto: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::fs::write(&marker, "").unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(venv.join("bin").join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            python,
        };
        eventually("moto answers", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        moto
    }

    /// Runs boto3 `code` against the server (`s3` is its client); stdout.
    fn boto(&self, code: &str) -> String {
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='test', aws_secret_access_key='test')\n{code}\n",
            self.endpoint
        );
        let o = std::process::Command::new(&self.python)
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(o.status.success(), "boto3: {o:?}");
        stdout(&o)
    }

    /// The environment the CLI reads an S3 destination's settings from.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ]
    }

    /// `meridian ARGS` with the S3 settings in its environment.
    fn meridian(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(BIN)
            .args(args)
            .envs(self.env())
            .output()
            .unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Scheduled backups go to an S3-compatible bucket and a local folder at
/// once: a backup larger than a part is uploaded in parts, each is checked
/// where it landed, `backup list` and `drill` read the bucket, and
/// `restore s3://…@latest` rebuilds a fresh node with the recorded root.
/// When the bucket's server is gone, the folder keeps its backups, the
/// bucket's failures are counted, and health names the bucket.
#[test]
fn backups_go_to_object_storage_and_restore_from_it() {
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='meridian-us')");
    let root = dir("ops-s3");
    let local = root.join("local-backups");
    let extra = format!(
        "[backup]\ndrill_interval_ms = 1000\n\
         [[backup.destination]]\nname = \"bucket\"\nurl = \"s3://meridian-us/us/a\"\n\
         endpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"test\"\n\
         secret_access_key = \"test\"\nallow_http = true\npart_bytes = 5242880\n\
         [[backup.destination]]\nname = \"folder\"\nurl = \"{}\"\n\
         [[backup.schedule]]\nname = \"full\"\nkind = \"full\"\ninterval_ms = 4000\nkeep = 2\n\
         [[backup.schedule]]\nname = \"inc\"\nkind = \"incremental\"\ninterval_ms = 1000\nkeep = 3\nbase = \"full\"\n",
        moto.endpoint,
        local.display()
    );
    let (mut a_proc, a) = node(&root, "a", "us", free_udp_port(), &[], &extra);
    // 64 values of 100 KiB: a full backup over one 5 MiB part.
    rt().block_on(async {
        let c = Client::new(&a).unwrap();
        for i in 0..64u32 {
            let value: Vec<u8> = (0..100 * 1024u32)
                .map(|j| (j.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8)
                .collect();
            let r = c
                .request(
                    hyper::Method::PUT,
                    &format!("/v1/kv/big/{i:03}"),
                    value.into(),
                )
                .await
                .unwrap();
            assert_eq!(r.text(), "true");
        }
    });
    let list = |location: &str| -> Vec<serde_json::Value> {
        let o = moto.meridian(&["backup", "list", "--json", "--destination", location]);
        assert!(o.status.success(), "{o:?}");
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let bucket = "s3://meridian-us/us/a";
    eventually(
        "a full backup of the 64 values and an incremental on top in the bucket",
        || {
            let l = list(bucket);
            let full = l
                .iter()
                .any(|p| p["full"] == true && p["index"].as_u64() >= Some(64));
            full && l
                .iter()
                .any(|p| p["full"] == false && p["restorable"] == true)
        },
    );
    // The same in the folder.
    let in_folder = list(local.to_str().unwrap());
    assert!(in_folder.iter().any(|p| p["full"] == true), "{in_folder:?}");
    // The big full backup went up in parts: S3 says so in its ETag.
    let fulls: Vec<String> = list(bucket)
        .iter()
        .filter(|p| p["full"] == true && p["index"].as_u64() >= Some(64))
        .map(|p| p["file"].as_str().unwrap().to_string())
        .collect();
    let etag = moto.boto(&format!(
        "print(s3.head_object(Bucket='meridian-us', Key='us/a/{}')['ETag'])",
        fulls[0]
    ));
    assert!(etag.trim().trim_matches('"').ends_with("-2"), "{etag}");
    // A drill of the bucket, by hand and on schedule.
    let o = moto.meridian(&["drill", "--json", "--destination", bucket]);
    assert!(o.status.success(), "{o:?}");
    let reports: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(reports[0]["ok"], true, "{reports:?}");
    assert_eq!(reports[0]["keys"], 64);
    let metrics = || {
        let r = rt()
            .block_on(Client::new(&a).unwrap().get("/metrics"))
            .unwrap();
        String::from_utf8_lossy(&r.body).into_owned()
    };
    eventually("both destinations drilled on schedule", || {
        let m = metrics();
        m.contains("meridian_drill_ok{destination=\"bucket\"} 1")
            && m.contains("meridian_drill_ok{destination=\"folder\"} 1")
    });
    assert!(meridian(&a, &["health"]).status.success());

    // Restore the bucket's newest chain into a fresh node of the cluster.
    let before = root_of(&a);
    let (_g, g) = node(&root, "g", "us", free_udp_port(), &[], "");
    let o = std::process::Command::new(BIN)
        .args(["--addr", &g, "restore", &format!("{bucket}@latest")])
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).contains("fetched s3://meridian-us/us/a/"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        root_of(&g),
        before,
        "the restored root is a's (no write since)"
    );
    // A named point that is not there.
    let o = std::process::Command::new(BIN)
        .args(["--addr", &g, "restore", &format!("{bucket}@nothing.mbak")])
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("holds no backup"),
        "{o:?}"
    );

    // The bucket's server goes away: the folder keeps taking backups, the
    // bucket's failures are counted and health names it.
    let killed = std::process::Command::new("kill")
        .args(["-9", &moto.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let failures = |m: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with("meridian_backup_failures_total{destination=\"bucket\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    eventually("failures at the bucket are counted", || {
        failures(&metrics()) > 0
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let h = meridian(&a, &["health"]);
        let last = stdout(&h);
        if h.status.code() == Some(1)
            && last.contains("\"inc\" at destination \"bucket\"")
            && !last.contains("destination \"folder\"")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never named the stale bucket alone:\n{last}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let newest_in_folder = |l: &[serde_json::Value]| {
        l.iter()
            .filter_map(|p| p["taken_ms"].as_u64())
            .max()
            .unwrap_or(0)
    };
    let seen = newest_in_folder(&list(local.to_str().unwrap()));
    eventually("the folder still takes backups", || {
        newest_in_folder(&list(local.to_str().unwrap())) > seen
    });
    let _ = a_proc.child.kill();
}
