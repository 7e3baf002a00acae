//! Helpers for tests that run the built `meridian` binary as real processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_meridian");

pub fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("meridian-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A child process killed when dropped, with its stdout lines on a channel.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_with(args, &[], None)
    }

    /// [`Proc::spawn`] with extra environment variables, and optionally
    /// under a wrapper command (such as `faketime`).
    pub fn spawn_with(args: &[&str], env: &[(&str, &str)], wrapper: Option<&[&str]>) -> Proc {
        let mut cmd = match wrapper {
            Some(w) => {
                let mut c = Command::new(w[0]);
                c.args(&w[1..]).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn meridian");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Proc { child, lines }
    }

    /// Lines up to and including the first that contains `marker`.
    pub fn until(&self, marker: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let done = l.contains(marker);
                    seen.push(l);
                    if done {
                        return seen;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {marker:?} within 60 s; saw {seen:#?}");
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn meridian(addr: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--addr")
        .arg(addr)
        .args(args)
        .output()
        .expect("run meridian")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn apis(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("http://127.0.0.1:") || w.starts_with("https://127.0.0.1:"))
        })
        .map(str::to_string)
        .filter(|a| !a.ends_with(":0"))
        .collect::<Vec<_>>()
}

/// `meridian dev` with any free ports; returns it and the API addresses in table order.
pub fn dev(name: &str, regions: usize) -> (Proc, Vec<String>) {
    let (p, addrs, _) = dev_with(name, regions, &[]);
    (p, addrs)
}

/// [`dev`] with more flags; also returns what it printed up to "ready:".
pub fn dev_with(name: &str, regions: usize, extra: &[&str]) -> (Proc, Vec<String>, Vec<String>) {
    let d = dir(name);
    let r = regions.to_string();
    let mut args = vec![
        "dev",
        "--dir",
        d.to_str().unwrap(),
        "--api-port",
        "0",
        "--regions",
        &r,
    ];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args);
    let lines = p.until("ready:");
    let mut addrs = apis(&lines[..lines.iter().position(|l| l.starts_with("Try")).unwrap()]);
    addrs.dedup();
    assert_eq!(addrs.len(), regions, "{lines:#?}");
    (p, addrs, lines)
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `f` until it returns true (60 s at most).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a CA and a node's TLS files with the CLI; returns the node's TLS dir.
pub fn issue(root: &Path, name: &str, region: &str) -> PathBuf {
    let ca = root.join("ca");
    if !ca.join("ca.key").exists() {
        let o = Command::new(BIN)
            .args([
                "ca",
                "init",
                "--cluster",
                "test",
                "--out",
                ca.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    }
    let out = root.join(name).join("tls");
    let o = Command::new(BIN)
        .args([
            "ca",
            "issue",
            "--reissue",
            "--name",
            name,
            "--region",
            region,
            "--ca",
        ])
        .arg(&ca)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    out
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `meridian node --config` with extra TOML; returns it and its API address.
pub fn node(
    root: &Path,
    name: &str,
    region: &str,
    port: u16,
    seeds: &[u16],
    extra: &str,
) -> (Proc, String) {
    node_with(root, name, region, port, seeds, extra, &[], None)
}

/// [`node`] with extra environment variables and an optional wrapper command.
#[allow(clippy::too_many_arguments)]
pub fn node_with(
    root: &Path,
    name: &str,
    region: &str,
    port: u16,
    seeds: &[u16],
    extra: &str,
    env: &[(&str, &str)],
    wrapper: Option<&[&str]>,
) -> (Proc, String) {
    let tls = issue(root, name, region);
    let seeds: Vec<String> = seeds.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let cfg = format!(
        "name = \"{name}\"\nregion = \"{region}\"\ndata_dir = \"{}\"\ntls_dir = \"{}\"\n\
         listen = \"127.0.0.1:{port}\"\napi = \"127.0.0.1:0\"\nseeds = [{}]\n{extra}",
        root.join(name).join("data").display(),
        tls.display(),
        seeds.join(", ")
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, cfg).unwrap();
    let p = Proc::spawn_with(&["node", "--config", path.to_str().unwrap()], env, wrapper);
    let lines = p.until("ready: api");
    let api = apis(&lines).pop().expect("the api address");
    (p, api)
}

/// Starts a node again from the config file `node()` wrote.
pub fn restart(root: &Path, name: &str) -> (Proc, String) {
    restart_with(root, name, &[])
}

/// [`restart`] with extra environment variables.
pub fn restart_with(root: &Path, name: &str, env: &[(&str, &str)]) -> (Proc, String) {
    let path = root.join(format!("{name}.toml"));
    let p = Proc::spawn_with(&["node", "--config", path.to_str().unwrap()], env, None);
    let lines = p.until("ready: api");
    let api = apis(&lines).pop().expect("the api address");
    (p, api)
}

/// A 16 MiB tmpfs mounted on a fresh test directory, unmounted when
/// dropped: a filesystem that fills up. `None` (the test skips) when not
/// root, as mounting needs.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(name: &str) -> Option<Tmpfs> {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let mnt = dir(name);
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount -t tmpfs failed");
        Some(Tmpfs(mnt))
    }

    /// Fills it up to about 1 MiB free; the filler file, to remove later.
    pub fn fill(&self) -> PathBuf {
        let free = {
            let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
            let c = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
            s.f_bavail as u64 * s.f_frsize as u64
        };
        let filler = self.0.join("filler");
        std::fs::write(&filler, vec![0u8; (free - (1 << 20)) as usize]).unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// An npm package (`name@version`, pinned by the caller) installed under
/// the test target directory in `dir`, once; its node_modules.
pub fn npm_package(dir: &str, spec: &str) -> PathBuf {
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir);
    let modules = prefix.join("node_modules");
    let name = spec.rsplit_once('@').map_or(spec, |(n, _)| n);
    if !modules.join(name).join("package.json").exists() {
        let o = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(spec)
            .output()
            .unwrap_or_else(|e| panic!("node and npm are needed to install {spec}: {e}"));
        assert!(
            o.status.success(),
            "npm install {spec}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    modules
}
