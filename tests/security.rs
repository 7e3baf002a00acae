//! The client surface's security, tried as operators and clients meet it:
//! HTTPS on the API, with and without client certificates.

mod common;

use common::*;
use std::process::{Command, Output};

/// `meridian` with TLS flags before the command.
fn cli(addr: &str, tls: &[&str], args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--addr")
        .arg(addr)
        .args(tls)
        .args(args)
        .output()
        .expect("run meridian")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_api_serves_https_and_requires_client_certificates_when_told() {
    let root = dir("https");
    let ca = root.join("ca").join("ca.pem");
    let ca = ca.to_str().unwrap();
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let (_a, a) = node(&root, "a", "r1", pa, &[], "[api_tls]\nenabled = true\n");
    let (_b, b) = node(
        &root,
        "b",
        "r2",
        pb,
        &[pa],
        "[api_tls]\nenabled = true\nverify_incoming = true\n",
    );
    assert!(
        a.starts_with("https://") && b.starts_with("https://"),
        "{a} {b}"
    );

    // Server-only TLS: a client trusting the cluster CA reads and writes.
    let o = cli(&a, &["--ca-cert", ca], &["kv", "put", "app/x", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cli(&a, &["--ca-cert", ca], &["kv", "get", "app/x"]);
    assert_eq!(stdout(&o).trim(), "1", "{}", stderr(&o));
    // Plain HTTP to the TLS port is told to use https, and writes nothing.
    let plain = a.replace("https://", "http://");
    let o = cli(&plain, &[], &["kv", "put", "app/x", "2"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("serves HTTPS"), "{}", stderr(&o));
    // A client that does not trust the cluster CA refuses the server.
    let o = cli(&a, &[], &["kv", "get", "app/x"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("TLS"), "{}", stderr(&o));

    // verify_incoming: no client certificate, or one of another CA, is refused.
    let o = cli(&b, &["--ca-cert", ca], &["kv", "get", "app/x"]);
    assert!(!o.status.success(), "no client certificate was accepted");
    assert!(
        stderr(&o).contains("client certificate of its CA"),
        "{}",
        stderr(&o)
    );
    let foreign = root.join("foreign");
    let ok = Command::new(BIN)
        .args(["ca", "init", "--cluster", "other", "--out"])
        .arg(foreign.join("ca"))
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = Command::new(BIN)
        .args(["ca", "issue", "--name", "ops", "--region", "admin", "--ca"])
        .arg(foreign.join("ca"))
        .arg("--out")
        .arg(foreign.join("ops"))
        .status()
        .unwrap();
    assert!(ok.success());
    let (fc, fk) = (foreign.join("ops/node.pem"), foreign.join("ops/node.key"));
    let (fc, fk) = (fc.to_str().unwrap(), fk.to_str().unwrap());
    let o = cli(
        &b,
        &["--ca-cert", ca, "--client-cert", fc, "--client-key", fk],
        &["kv", "get", "app/x"],
    );
    assert!(
        !o.status.success(),
        "a foreign CA's certificate was accepted"
    );
    assert!(
        stderr(&o).contains("refused the client certificate"),
        "{}",
        stderr(&o)
    );
    // A certificate of the cluster CA is accepted; the value has arrived.
    let ops = issue(&root, "ops", "admin");
    let (oc, ok) = (ops.join("node.pem"), ops.join("node.key"));
    let mine = [
        "--ca-cert",
        ca,
        "--client-cert",
        oc.to_str().unwrap(),
        "--client-key",
        ok.to_str().unwrap(),
    ];
    eventually("app/x reaches b over HTTPS", || {
        stdout(&cli(&b, &mine, &["kv", "get", "app/x"])).trim() == "1"
    });
    // verify reaches the other member with the same TLS settings.
    let o = cli(&b, &mine, &["verify"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("2 nodes"), "{}", stdout(&o));
    // The settings also come from the environment.
    let o = Command::new(BIN)
        .args(["--addr", &b, "kv", "get", "app/x"])
        .env("MERIDIAN_CACERT", ca)
        .env("MERIDIAN_CLIENT_CERT", oc.to_str().unwrap())
        .env("MERIDIAN_CLIENT_KEY", ok.to_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "1", "{}", stderr(&o));
}
