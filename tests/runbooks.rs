//! The runbooks in `docs/runbooks/`, run: each fault is made with real
//! processes (a region killed, a partition cut by the fault socket, a store
//! damaged, a clock skewed, a disk filled), then every `meridian` line of the
//! runbook is run in order, section by section, and must give the exit code
//! (and output) its notes say. Every section with commands must be run.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// One command line of a runbook and what it should give.
#[derive(Debug)]
struct Line {
    text: String,
    exit: i32,
    eventually: bool,
    shows: Option<String>,
}

fn runbook_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/runbooks")
        .join(name)
}

/// The `meridian` lines of `name`, per `## ` section, in order.
fn sections(name: &str) -> Vec<(String, Vec<Line>)> {
    let text = std::fs::read_to_string(runbook_path(name)).unwrap();
    let mut out: Vec<(String, Vec<Line>)> = Vec::new();
    let mut in_code = false;
    for l in text.lines() {
        if let Some(h) = l.strip_prefix("## ") {
            out.push((h.trim().to_string(), Vec::new()));
            continue;
        }
        if l.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code || !l.starts_with("meridian ") {
            continue;
        }
        let (cmd, notes) = match l.find(" #") {
            Some(at) => (&l[..at], &l[at + 2..]),
            None => (l, ""),
        };
        let mut line = Line {
            text: cmd.trim().to_string(),
            exit: 0,
            eventually: false,
            shows: None,
        };
        for note in notes.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if let Some(code) = note.strip_prefix("exit ") {
                line.exit = code.trim().parse().unwrap();
            } else if note == "eventually" {
                line.eventually = true;
            } else if let Some(t) = note.strip_prefix("shows ") {
                line.shows = Some(t.trim().to_string());
            } else {
                panic!("{name}: unknown note {note:?} on {l:?}");
            }
        }
        out.last_mut()
            .unwrap_or_else(|| panic!("{name}: a command before any section"))
            .1
            .push(line);
    }
    assert!(!in_code, "{name}: a code block is not closed");
    out
}

/// Runs a runbook section by section, and checks at the end that every
/// section with commands was run.
struct Runbook {
    name: &'static str,
    sections: Vec<(String, Vec<Line>)>,
    run: Vec<String>,
    vars: Vec<(String, String)>,
    env: Vec<(String, String)>,
}

impl Runbook {
    fn new(name: &'static str) -> Runbook {
        let sections = sections(name);
        assert!(
            sections.iter().any(|(_, l)| !l.is_empty()),
            "{name} has no commands"
        );
        Runbook {
            name,
            sections,
            run: Vec::new(),
            vars: Vec::new(),
            env: Vec::new(),
        }
    }

    /// `$name` stands for `value` in the commands.
    fn var(&mut self, name: &str, value: &str) -> &mut Self {
        let name = format!("${name}");
        self.vars.retain(|(n, _)| *n != name);
        self.vars.push((name, value.to_string()));
        // Longer names first: `$BACKUPS` before `$B`.
        self.vars.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        self
    }

    /// Runs every command of `section`.
    fn section(&mut self, section: &str) {
        let lines = &self
            .sections
            .iter()
            .find(|(s, _)| s == section)
            .unwrap_or_else(|| panic!("{}: no section {section:?}", self.name))
            .1;
        for line in lines {
            let mut cmd = line.text.clone();
            for (name, value) in &self.vars {
                cmd = cmd.replace(name, value);
            }
            assert!(
                !cmd.contains('$'),
                "{}: {cmd:?} has an unknown variable",
                self.name
            );
            let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let o = std::process::Command::new(BIN)
                    .args(&args)
                    .envs(self.env.iter().map(|(k, v)| (k, v)))
                    .output()
                    .unwrap();
                let out = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                let code = o.status.code().unwrap_or(-1);
                let shown = line.shows.as_ref().is_none_or(|t| out.contains(t.as_str()));
                if code == line.exit && shown {
                    break;
                }
                assert!(
                    line.eventually && Instant::now() < deadline,
                    "{} § {section}: `{cmd}` gave exit {code} (wanted {}{}):\n{out}",
                    self.name,
                    line.exit,
                    line.shows
                        .as_ref()
                        .map_or(String::new(), |t| format!(" showing {t:?}"))
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        self.run.push(section.to_string());
    }

    /// Every section with commands was run.
    fn done(&self) {
        for (s, lines) in &self.sections {
            assert!(
                lines.is_empty() || self.run.contains(s),
                "{}: section {s:?} was not run",
                self.name
            );
        }
    }
}

/// Short health thresholds, so that partitions and lost peers show at once.
const QUICK_HEALTH: &str = "[health]\npartition_ms_max = 1000\npeer_down_ms_max = 1000\n";

fn get(addr: &str, key: &str) -> String {
    stdout(&meridian(addr, &["kv", "get", key]))
        .trim_end()
        .to_string()
}

#[test]
fn region_failure() {
    let mut rb = Runbook::new("region-failure.md");
    let root = dir("rb-region");
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let (a_proc, us) = node(&root, "a", "us", pa, &[], QUICK_HEALTH);
    let standby = format!("role = \"standby\"\n{QUICK_HEALTH}");
    let (_b, eu) = node(&root, "b", "eu", pb, &[pa], &standby);
    assert!(meridian(&us, &["kv", "put", "app/db", "primary"])
        .status
        .success());
    eventually("eu holds us's write", || get(&eu, "app/db") == "primary");
    // eu refuses client writes while a standby.
    assert!(!meridian(&eu, &["kv", "put", "app/x", "1"]).status.success());
    rb.var("US", &us).var("EU", &eu);
    // The whole us region dies.
    drop(a_proc);
    rb.section("Detect");
    rb.section("Decide");
    rb.section("Act");
    assert_eq!(get(&eu, "app/db"), "primary");
    // us comes back as it was.
    let (_a, us) = restart(&root, "a");
    rb.var("US", &us);
    rb.section("When the failed region returns");
    assert_eq!(get(&us, "runbook/failover-check"), "ok");
    rb.done();
}

#[test]
fn partition() {
    let mut rb = Runbook::new("partition.md");
    let root = dir("rb-partition");
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let (a_block, b_block) = (root.join("a.block"), root.join("b.block"));
    let a_env = [("MERIDIAN_FAULT_BLOCK_FILE", a_block.to_str().unwrap())];
    let b_env = [("MERIDIAN_FAULT_BLOCK_FILE", b_block.to_str().unwrap())];
    let (_a, us) = node_with(&root, "a", "us", pa, &[], QUICK_HEALTH, &a_env, None);
    let (_b, eu) = node_with(&root, "b", "eu", pb, &[pa], QUICK_HEALTH, &b_env, None);
    assert!(meridian(&us, &["kv", "put", "app/color", "blue"])
        .status
        .success());
    eventually("eu holds it", || get(&eu, "app/color") == "blue");
    rb.var("US", &us).var("EU", &eu);
    // The WAN splits: each side drops what it sends to the other.
    std::fs::write(&a_block, format!("127.0.0.1:{pb}\n")).unwrap();
    std::fs::write(&b_block, format!("127.0.0.1:{pa}\n")).unwrap();
    rb.section("Detect");
    // Both sides keep taking writes.
    assert!(meridian(&us, &["kv", "put", "app/color", "red"])
        .status
        .success());
    std::thread::sleep(Duration::from_millis(20));
    assert!(meridian(&eu, &["kv", "put", "app/color", "green"])
        .status
        .success());
    assert!(meridian(&eu, &["kv", "put", "app/only-eu", "yes"])
        .status
        .success());
    assert_eq!(get(&us, "app/color"), "red");
    // The network heals.
    std::fs::remove_file(&a_block).unwrap();
    std::fs::remove_file(&b_block).unwrap();
    rb.section("After the heal");
    assert_eq!(get(&us, "app/color"), "green", "the later write wins");
    assert_eq!(get(&us, "app/only-eu"), "yes");
    let conflicts = stdout(&meridian(&us, &["conflicts", "--json"]));
    assert!(conflicts.contains("app/color"), "{conflicts}");
    rb.done();
}

#[test]
fn corruption() {
    let mut rb = Runbook::new("corruption.md");
    let root = dir("rb-corruption");
    let backups = root.join("backups");
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let schedule = format!(
        "[backup]\ndir = \"{}\"\n[[backup.schedule]]\nname = \"full\"\nkind = \"full\"\ninterval_ms = 1000\nkeep = 3\n",
        backups.display()
    );
    let (_a, a) = node(&root, "a", "us", pa, &[], &schedule);
    let b_block = root.join("b.block");
    let b_env = [("MERIDIAN_FAULT_BLOCK_FILE", b_block.to_str().unwrap())];
    let (b_proc, _) = node_with(&root, "b", "eu", pb, &[pa], "", &b_env, None);
    for i in 0..500 {
        let o = meridian(&a, &["kv", "put", &format!("cfg/{i:03}"), "value"]);
        assert!(o.status.success());
    }
    eventually("b holds a's data", || {
        meridian(&a, &["verify"]).status.success()
    });
    eventually("a backup of all of it", || {
        stdout(&meridian(
            &a,
            &[
                "backup",
                "list",
                "--json",
                "--destination",
                backups.to_str().unwrap(),
            ],
        ))
        .contains("\"index\": 500")
    });
    // b's store is damaged while it is stopped, and it comes back while it
    // cannot reach a: it stays without its data until it can.
    assert!(b_proc.terminate().success());
    let path = root.join("b/data/meridian.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let page = bytes.len() / 4096 / 2;
    bytes[page * 4096..(page + 1) * 4096].fill(0);
    std::fs::write(&path, bytes).unwrap();
    std::fs::write(&b_block, format!("127.0.0.1:{pa}\n")).unwrap();
    let (_b, b) = restart_with(&root, "b", &b_env);
    rb.var("A", &a)
        .var("B", &b)
        .var("BACKUPS", backups.to_str().unwrap());
    // Detect runs `health` on b while it is cut off, then `verify --deep`
    // (eventually): b is let through between the two.
    let sections = sections("corruption.md");
    let detect = &sections.iter().find(|(s, _)| s == "Detect").unwrap().1;
    assert!(detect[0].text.contains("health"), "{detect:?}");
    let unblock = {
        let f = b_block.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            std::fs::remove_file(f).unwrap();
        })
    };
    rb.section("Detect");
    unblock.join().unwrap();
    eventually("b has recovered", || {
        meridian(&b, &["health"]).status.success()
    });
    rb.section("Act");
    rb.section("Verify");
    assert_eq!(get(&b, "cfg/499"), "value");
    rb.done();
}

#[test]
fn clock_skew() {
    let mut rb = Runbook::new("clock-skew.md");
    let root = dir("rb-clock");
    let (pa, pb, pc) = (free_udp_port(), free_udp_port(), free_udp_port());
    let (_a, a) = node(&root, "a", "us", pa, &[], "");
    let (_b, _b_api) = node(&root, "b", "eu", pb, &[pa], "");
    // c's clock runs 3 s fast (the bound is 0.5 s).
    let skew = [(meridian::node::CLOCK_SKEW_ENV, "3000")];
    let (c_proc, c) = node_with(&root, "c", "ap", pc, &[pa, pb], "", &skew, None);
    rb.var("A", &a).var("C", &c);
    rb.section("Detect");
    assert!(!meridian(&c, &["kv", "put", "k", "v"]).status.success());
    // The time source is fixed, and c restarted.
    assert!(c_proc.terminate().success());
    let (_c, c) = restart(&root, "c");
    rb.var("C", &c);
    rb.section("Verify");
    assert_eq!(get(&a, "runbook/clock-check"), "ok");
    rb.done();
}

#[test]
fn full_disk() {
    let mut rb = Runbook::new("full-disk.md");
    let Some(tmpfs) = Tmpfs::mount("rb-tmpfs") else {
        return;
    };
    let mnt = tmpfs.0.clone();
    let (_a, a) = node(&mnt, "a", "us", free_udp_port(), &[], "");
    assert!(meridian(&a, &["kv", "put", "runbook/before-full", "ok"])
        .status
        .success());
    let filler = tmpfs.fill();
    // Write until the disk is full.
    let value = "v".repeat(1_000);
    rt().block_on(async {
        let c = meridian::client::Client::new(&a).unwrap();
        for i in 0..20_000 {
            let r = c
                .request(
                    hyper::Method::PUT,
                    &format!("/v1/kv/fill/{i:05}"),
                    value.clone().into(),
                )
                .await
                .unwrap();
            if r.status.as_u16() != 200 {
                assert_eq!(r.status.as_u16(), 507, "{}", r.text());
                return;
            }
        }
        panic!("the disk never filled up");
    });
    rb.var("A", &a);
    rb.section("Detect");
    std::fs::remove_file(&filler).unwrap();
    rb.section("Verify");
    rb.done();
}
