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

/// A client of `api` presenting `token`.
fn client(api: &str, token: Option<&str>) -> meridian::client::Client {
    meridian::client::Client::new(api).unwrap().token(token)
}

fn put_json(c: &meridian::client::Client, path: &str, body: &str) -> meridian::client::Reply {
    rt().block_on(c.request(
        hyper::Method::PUT,
        path,
        bytes::Bytes::from(body.to_string()),
    ))
    .unwrap()
}

fn get(c: &meridian::client::Client, path: &str) -> meridian::client::Reply {
    rt().block_on(c.get(path)).unwrap()
}

fn delete(c: &meridian::client::Client, path: &str) -> meridian::client::Reply {
    rt().block_on(c.request(hyper::Method::DELETE, path, bytes::Bytes::new()))
        .unwrap()
}

fn json(r: &meridian::client::Reply) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// A policy and a token for it, made with the management token `root`;
/// returns the token's (accessor, secret).
fn token_for(c: &meridian::client::Client, name: &str, rules: &str) -> (String, String) {
    let body = serde_json::json!({"Name": name, "Rules": rules}).to_string();
    let r = put_json(c, "/v1/acl/policy", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = serde_json::json!({"Description": name, "Policies": [{"Name": name}]}).to_string();
    let r = put_json(c, "/v1/acl/token", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let t = json(&r);
    (
        t["AccessorID"].as_str().unwrap().to_string(),
        t["SecretID"].as_str().unwrap().to_string(),
    )
}

#[test]
fn acl_tokens_replicate_across_regions_and_hold_every_endpoint_to_their_rules() {
    let root_dir = dir("acl");
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let acl = "[acl]\nenabled = true\n";
    let (_a, a) = node(&root_dir, "a", "r1", pa, &[], acl);
    let (_b, b) = node(&root_dir, "b", "r2", pb, &[pa], acl);
    let anon_a = client(&a, None);

    // Bootstrap: once. Nothing but the probes without a token.
    let r = put_json(&anon_a, "/v1/acl/bootstrap", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let root = json(&r)["SecretID"].as_str().unwrap().to_string();
    assert_eq!(put_json(&anon_a, "/v1/acl/bootstrap", "").status, 403);
    eventually("the bootstrap marker reaches b", || {
        put_json(&client(&b, None), "/v1/acl/bootstrap", "").status == 403
    });
    assert_eq!(put_json(&anon_a, "/v1/kv/app/x", "1").status, 403);
    assert_eq!(get(&anon_a, "/v1/status").status, 403);
    for open in ["/v1/health", "/v1/status/leader", "/v1/agent/self"] {
        assert_eq!(get(&anon_a, open).status, 200, "{open}");
    }
    let root_a = client(&a, Some(&root));
    assert_eq!(get(&root_a, "/v1/status").status, 200);

    // Each rule kind, longest prefix and deny.
    let (app_accessor, app) = token_for(
        &root_a,
        "app",
        r#"key_prefix "app/" { policy = "write" }
key_prefix "app/private/" { policy = "deny" }
key "app/private/shared" { policy = "read" }
key_prefix "names/" { policy = "list" }
key_prefix "ro/" { policy = "read" }"#,
    );
    for (k, v) in [
        ("app/private/secret", "s"),
        ("app/private/shared", "sh"),
        ("names/n1", "hidden"),
        ("ro/r1", "r"),
        ("other", "o"),
    ] {
        assert_eq!(put_json(&root_a, &format!("/v1/kv/{k}"), v).status, 200);
    }
    // A token made in region r1 works in region r2 once it arrives.
    let app_b = client(&b, Some(&app));
    eventually("the app token works in r2", || {
        put_json(&app_b, "/v1/kv/app/x", "1").status == 200
    });
    let app_a = client(&a, Some(&app));
    eventually("app/x reaches r1", || {
        get(&app_a, "/v1/kv/app/x?raw").status == 200
    });
    assert_eq!(
        put_json(&app_a, "/v1/kv/app/private/secret", "x").status,
        403
    );
    assert_eq!(get(&app_a, "/v1/kv/app/private/secret").status, 403);
    assert_eq!(get(&app_a, "/v1/kv/app/private/shared?raw").text(), "sh");
    assert_eq!(
        put_json(&app_a, "/v1/kv/app/private/shared", "x").status,
        403
    );
    assert_eq!(
        get(&app_a, "/v1/kv/names/n1").status,
        403,
        "list is not read"
    );
    assert_eq!(get(&app_a, "/v1/kv/ro/r1?raw").text(), "r");
    assert_eq!(put_json(&app_a, "/v1/kv/ro/r1", "x").status, 403);
    // Documents are held to the same key rules.
    assert_eq!(put_json(&app_a, "/v1/doc/app/d", r#"{"a": 1}"#).status, 200);
    assert_eq!(
        json(&get(&app_a, "/v1/doc/app/d")),
        serde_json::json!({"a": 1})
    );
    assert_eq!(put_json(&root_a, "/v1/doc/ro/d", r#"{"a": 1}"#).status, 200);
    assert_eq!(
        json(&get(&app_a, "/v1/doc/ro/d")),
        serde_json::json!({"a": 1})
    );
    let patch = rt()
        .block_on(app_a.request(
            hyper::Method::PATCH,
            "/v1/doc/ro/d",
            bytes::Bytes::from_static(b"{\"a\": 2}"),
        ))
        .unwrap();
    assert_eq!(patch.status, 403, "{}", patch.text());
    assert_eq!(put_json(&app_a, "/v1/doc/ro/d", r#"{"a": 3}"#).status, 403);
    assert_eq!(get(&app_a, "/v1/doc/app/private/d").status, 403);
    assert_eq!(delete(&app_a, "/v1/doc/ro/d").status, 403);
    assert_eq!(
        json(&get(&root_a, "/v1/doc/ro/d")),
        serde_json::json!({"a": 1})
    );
    assert_eq!(delete(&app_a, "/v1/doc/app/d").status, 200);
    assert_eq!(delete(&root_a, "/v1/doc/ro/d").status, 200);
    let r = put_json(&app_a, "/v1/kv/other", "x");
    assert_eq!(r.status, 403);
    assert!(r.text().starts_with("Permission denied"), "{}", r.text());
    assert!(r.text().contains(&app_accessor), "{}", r.text());
    assert_eq!(get(&app_a, "/v1/status").status, 403, "no operator rule");
    // What verify reads of another member travels over the mesh with the
    // caller's token, and is held to the same rule there.
    assert_eq!(get(&app_a, "/v1/digest?node=b").status, 403);
    let r = get(&root_a, "/v1/digest?node=b");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["name"], "b");
    assert_eq!(
        get(&root_a, "/v1/digest/tree?level=1&parents=0&node=b").status,
        200
    );
    assert_eq!(get(&root_a, "/v1/digest?node=nobody").status, 404);
    let o = Command::new(BIN)
        .args(["--addr", &a, "--token", &root, "verify", "--json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["nodes"][1]["name"], "b", "{doc}");
    assert_eq!(doc["nodes"][1]["mesh"], true, "{doc}");
    assert!(doc["nodes"][1]["root"].is_string(), "{doc}");

    // Recursive reads and key lists are filtered, and say so.
    let wait_for_all = || {
        eventually("every key reached a", || {
            let r = get(&root_a, "/v1/kv/?keys");
            r.status == 200 && json(&r).as_array().unwrap().len() >= 6
        })
    };
    wait_for_all();
    let r = get(&app_a, "/v1/kv/?recurse");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), Some("true"));
    let keys: Vec<String> = json(&r)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["app/private/shared", "app/x", "ro/r1"]);
    let r = get(&app_a, "/v1/kv/?keys");
    let names: Vec<String> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(names, ["app/private/shared", "app/x", "names/n1", "ro/r1"]);
    let r = get(&root_a, "/v1/kv/?recurse");
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), None);
    assert!(
        !r.text().contains("meridian/acl"),
        "ACL entries are not KV entries"
    );

    // A transaction with one forbidden operation writes nothing.
    let txn = r#"[{"KV": {"Verb": "set", "Key": "app/t1", "Value": "MQ=="}},
                  {"KV": {"Verb": "set", "Key": "other", "Value": "Mg=="}}]"#;
    let r = put_json(&app_a, "/v1/txn", txn);
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(json(&r)["Errors"][0]["OpIndex"], 1);
    assert_eq!(json(&r)["Errors"][0]["What"], "Permission denied");
    assert_eq!(get(&root_a, "/v1/kv/app/t1").status, 404);
    assert_eq!(get(&root_a, "/v1/kv/other?raw").text(), "o");
    // get-tree is filtered.
    let r = put_json(
        &app_a,
        "/v1/txn",
        r#"[{"KV": {"Verb": "get-tree", "Key": ""}}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("\"other\"") && r.text().contains("app/x"));
    // A recursive delete needs write on everything under the prefix.
    assert_eq!(delete(&app_a, "/v1/kv/app/?recurse").status, 403);

    // A watch sees only what the token may read.
    rt().block_on(async {
        let mut s = app_a.stream("/v1/watch/?index=0").await.unwrap();
        assert_eq!(s.status, 200);
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let ev = s.next_event().await.unwrap().unwrap();
            let c: serde_json::Value = serde_json::from_str(&ev.data).unwrap();
            seen.push(c["Key"].as_str().unwrap().to_string());
        }
        assert!(
            seen.iter()
                .all(|k| k.starts_with("app/") || k.starts_with("ro/")),
            "{seen:?}"
        );
    });

    // Clients cannot reach the reserved namespace through the KV API, and a
    // recursive delete of everything leaves the ACL state alone.
    assert_eq!(
        put_json(&root_a, "/v1/kv/%01meridian/acl/token/x", "{}").status,
        400
    );
    let r = delete(&root_a, "/v1/kv/?recurse&force");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(put_json(&app_a, "/v1/kv/app/again", "1").status, 200);

    // A token deleted in r1 stops working in r2 once the delete arrives.
    assert_eq!(
        delete(&root_a, &format!("/v1/acl/token/{app_accessor}")).status,
        200
    );
    eventually("the deleted token is refused in r2", || {
        put_json(&app_b, "/v1/kv/app/y", "1").status == 403
    });
    // The anonymous token's rights are the ones its policies give.
    let body =
        serde_json::json!({"Name": "anon", "Rules": "key_prefix \"pub/\" { policy = \"read\" }"})
            .to_string();
    assert_eq!(put_json(&root_a, "/v1/acl/policy", &body).status, 200);
    let body = serde_json::json!({"Policies": [{"Name": "anon"}]}).to_string();
    let r = put_json(
        &root_a,
        "/v1/acl/token/00000000-0000-0000-0000-000000000002",
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(put_json(&root_a, "/v1/kv/pub/p", "p").status, 200);
    assert_eq!(
        get(&client(&a, Some("no-such-token")), "/v1/kv/pub/p?raw").text(),
        "p"
    );
    assert_eq!(get(&anon_a, "/v1/kv/app/again").status, 403);
}

/// An HTTPS receiver on loopback with `cert`/`key`: every request's
/// headers and body, on a channel.
fn https_receiver(
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
) -> (
    u16,
    std::sync::mpsc::Receiver<(hyper::HeaderMap, bytes::Bytes)>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        rt().block_on(async move {
            use http_body_util::BodyExt;
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let tls = meridian::api::tls::ApiTls {
                cert_file: cert,
                key_file: key,
                client_ca_file: None,
                denied: Default::default(),
            }
            .server_config()
            .unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let Ok(stream) = acceptor.accept(tcp).await else {
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let tx = tx.clone();
                            async move {
                                let headers = req.headers().clone();
                                let body = req.into_body().collect().await?.to_bytes();
                                let _ = tx.send((headers, body));
                                Ok::<_, hyper::Error>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::new()),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
    });
    (port, rx)
}

#[test]
fn webhooks_reach_an_https_receiver_signed() {
    let root = dir("webhook-https");
    // The receiver's certificate, from the cluster CA (issued for 127.0.0.1).
    let hook = issue(&root, "hook", "receivers");
    let (port, deliveries) = https_receiver(hook.join("node.pem"), hook.join("node.key"));
    let ca = root.join("ca").join("ca.pem");
    let secret = "webhook-s3cret";
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let cfg = format!(
        "[[webhooks]]\nurl = \"https://127.0.0.1:{port}/hook\"\nca_file = \"{}\"\nsecret = \"{secret}\"\nevents = [\"peer_up\"]\n",
        ca.display()
    );
    let (_a, _) = node(&root, "a", "r1", pa, &[], &cfg);
    let (_b, _) = node(&root, "b", "r2", pb, &[pa], "");
    let (headers, body) = deliveries
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("no delivery over HTTPS");
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["type"], "peer_up", "{event}");
    // The signature, recomputed here from the secret, the timestamp and the body.
    let ts = headers["x-meridian-timestamp"].to_str().unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&body);
    let tag = ring::hmac::sign(&key, &signed);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        headers["x-meridian-signature"].to_str().unwrap(),
        format!("sha256={hex}")
    );
    let age_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - ts.parse::<i64>().unwrap();
    assert!(
        (0..60_000).contains(&age_ms),
        "timestamp {ts} is {age_ms} ms old"
    );
}

#[test]
fn the_audit_log_records_every_accepted_change_and_survives_a_restart() {
    let root_dir = dir("audit");
    let p = free_udp_port();
    let (node_a, a) = node(&root_dir, "a", "r1", p, &[], "[acl]\nenabled = true\n");
    let anon = client(&a, None);
    let r = put_json(&anon, "/v1/acl/bootstrap", "");
    let boot = json(&r);
    let root = boot["SecretID"].as_str().unwrap().to_string();
    let root_accessor = boot["AccessorID"].as_str().unwrap().to_string();
    let c = client(&a, Some(&root));
    let (app_accessor, app) = token_for(&c, "app", r#"key_prefix "app/" { policy = "write" }"#);
    let app_c = client(&a, Some(&app));
    assert_eq!(put_json(&app_c, "/v1/kv/app/a", "1").status, 200);
    assert_eq!(
        put_json(&app_c, "/v1/kv/other", "1").status,
        403,
        "refused: not logged"
    );
    assert_eq!(put_json(&c, "/v1/kv/app/b", "2").status, 200);
    // A failed check-and-set is not a change.
    assert_eq!(
        put_json(&c, "/v1/kv/app/b?cas=1", "3").text().trim(),
        "false"
    );
    assert_eq!(delete(&c, "/v1/kv/app/a").status, 200);
    let txn = r#"[{"KV": {"Verb": "set", "Key": "t/1", "Value": "MQ=="}},
                  {"KV": {"Verb": "get", "Key": "app/b"}},
                  {"KV": {"Verb": "delete", "Key": "t/2"}}]"#;
    assert_eq!(put_json(&c, "/v1/txn", txn).status, 200);
    assert_eq!(delete(&c, "/v1/kv/t/?recurse").status, 200);
    let backup = get(&c, "/v1/backup");
    assert_eq!(backup.status, 200);
    let r = rt()
        .block_on(c.request(hyper::Method::POST, "/v1/restore", backup.body.clone()))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        put_json(&c, "/v1/promote", "").status,
        405,
        "promote is a POST"
    );
    let r = rt()
        .block_on(c.request(hyper::Method::POST, "/v1/promote", bytes::Bytes::new()))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        delete(&c, &format!("/v1/acl/token/{app_accessor}")).status,
        200
    );

    let expected = [
        ("acl-bootstrap", ""),
        ("acl-policy-create", ""),
        ("acl-token-create", ""),
        ("put", "app/a"),
        ("put", "app/b"),
        ("delete", "app/a"),
        ("txn", "t/1"),
        ("delete-tree", "t/"),
        ("restore", ""),
        ("promote", ""),
        ("acl-token-delete", ""),
    ];
    let check = |api: &str, extra: usize| {
        let c = client(api, Some(&root));
        // Only a management token reads the log.
        assert_eq!(get(&client(api, Some(&app)), "/v1/audit").status, 403);
        let records = json(&get(&c, "/v1/audit"));
        let records = records.as_array().unwrap();
        assert_eq!(records.len(), expected.len() + extra, "{records:#?}");
        for (i, ((op, key), r)) in expected.iter().zip(records).enumerate() {
            assert_eq!(r["seq"], i as u64 + 1, "{r}");
            assert_eq!(r["op"], *op, "{r}");
            if !key.is_empty() {
                assert_eq!(r["keys"][0], *key, "{r}");
            }
            assert_eq!(r["region"], "r1");
            assert!(
                r["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{r}"
            );
            assert!(
                !r.to_string().contains(&root) && !r.to_string().contains(&app),
                "a secret in {r}"
            );
        }
        // Who: the app token wrote app/a, the management token the rest.
        assert_eq!(records[3]["accessor"], app_accessor.as_str());
        assert_eq!(records[4]["accessor"], root_accessor.as_str());
        assert_eq!(records[6]["keys"], serde_json::json!(["t/1", "t/2"]));
        assert!(
            records[8]["keys_total"].as_u64().unwrap() >= 3,
            "{}",
            records[8]
        );
        // ?since= pages.
        let after = json(&get(&c, "/v1/audit?since=9"));
        assert_eq!(after.as_array().unwrap()[0]["seq"], 10);
    };
    check(&a, 0);
    drop(node_a);
    let (_node_a, a) = restart(&root_dir, "a");
    check(&a, 0);
    // Numbering goes on after the restart.
    assert_eq!(
        put_json(&client(&a, Some(&root)), "/v1/kv/after", "1").status,
        200
    );
    eventually("the record after the restart is read back", || {
        let r = json(&get(&client(&a, Some(&root)), "/v1/audit?since=11"));
        r.as_array().unwrap().first().map(|r| r["seq"].clone()) == Some(serde_json::json!(12))
    });
}

fn connected_peers(api: &str) -> Vec<String> {
    let s: meridian::api::wire::Status = rt()
        .block_on(client(api, None).get_json("/v1/status"))
        .unwrap();
    s.peers
        .into_iter()
        .filter(|p| p.connected)
        .map(|p| p.name)
        .collect()
}

#[test]
fn a_revoked_certificate_is_refused_in_the_handshake_and_a_name_is_issued_once() {
    let root = dir("revoke");
    let ca = root.join("ca");
    let (pa, pb, pc) = (free_udp_port(), free_udp_port(), free_udp_port());
    let (node_a, a) = node(&root, "a", "r1", pa, &[], "");
    let (_b, _) = node(&root, "b", "r2", pb, &[pa], "");
    let (_c, _) = node(&root, "c", "r3", pc, &[pa], "");
    eventually("a hears b and c", || connected_peers(&a).len() == 2);

    // The CA issues a name once, unless told to issue it again.
    let again = Command::new(BIN)
        .args(["ca", "issue", "--name", "b", "--region", "r2", "--ca"])
        .arg(&ca)
        .arg("--out")
        .arg(root.join("b-again"))
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already issued"),
        "{}",
        stderr(&again)
    );

    // b's key is lost: revoke its certificate; a refuses it from its restart.
    let deny = root.join("deny.txt");
    let o = Command::new(BIN)
        .args(["ca", "revoke", "--name", "b", "--ca"])
        .arg(&ca)
        .arg("--deny-file")
        .arg(&deny)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    drop(node_a);
    let cfg = root.join("a.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = format!("tls_deny_file = \"{}\"\n{text}", deny.display());
    std::fs::write(&cfg, text).unwrap();
    let (_a, a) = restart(&root, "a");
    eventually("a hears c again", || connected_peers(&a) == ["c"]);
    // b keeps redialing; it never gets in.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(connected_peers(&a), ["c"]);
}

/// `verify` over the mesh: every member is asked through the node at
/// `--addr` over its peer connections, so the other APIs need not be
/// reachable (here they announce an address where nothing listens), and
/// `--diff` finds a few differing keys among thousands by the Merkle
/// descent, reading kilobytes where every key's hash would be hundreds.
#[test]
fn verify_and_diff_run_over_the_mesh() {
    use meridian::daemon::{Daemon, DaemonConfig};
    use meridian::net::faults::Faults;
    use meridian::net::tls::Ca;
    use std::net::SocketAddr;

    let root = dir("mesh-verify");
    // The nodes run in this process: their tasks must run between block_ons.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ca = Ca::generate("mesh").unwrap();
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let start = |name: &str, region: &str, seeds: Vec<SocketAddr>| {
        let mut cfg = DaemonConfig {
            name: name.to_string(),
            region: region.to_string(),
            data_dir: root.join(name),
            tls_dir: root.join(name).join("tls"),
            listen: "127.0.0.1:0".parse().unwrap(),
            api: "127.0.0.1:0".parse().unwrap(),
            api_advertise: Some(nowhere),
            seeds,
            ..DaemonConfig::default()
        };
        // No anti-entropy during the test: the divergence stays until healed.
        cfg.sync.ae_interval_ms = 3_600_000;
        let faults = Faults::new();
        let id = ca.issue(name, region).unwrap();
        let d = rt
            .block_on(Daemon::start_with(&cfg, id, Some(faults.clone())))
            .unwrap();
        (d, faults)
    };
    let (a, _fa) = start("a", "us", vec![]);
    let seed = vec![a.node().local_addr()];
    let (b, fb) = start("b", "eu", seed.clone());
    let (c, fc) = start("c", "ap", seed);
    let addr = a.api_url();
    rt.block_on(async {
        for i in 0..3000 {
            a.node().put(&format!("load/{i:05}"), "v").await.unwrap();
        }
    });
    eventually("all three agree", || {
        let v = meridian(&addr, &["verify"]);
        v.status.success() && stdout(&v).contains("all 3 nodes in 3 regions agree")
    });

    // b and c cannot reach each other; a reaches both.
    fb.block(c.node().local_addr());
    fc.block(b.node().local_addr());
    rt.block_on(async {
        for i in 0..3 {
            c.node()
                .put(&format!("only/c/{i}"), "from c")
                .await
                .unwrap();
        }
        b.node().put("load/00042", "changed on b").await.unwrap();
    });
    eventually("a holds c's and b's writes", || {
        rt.block_on(async {
            a.node().get("only/c/2").await.unwrap().is_some()
                && a.node().get("load/00042").await.unwrap().map(|e| e.value)
                    == Some("changed on b".into())
        })
    });

    let v = meridian(&addr, &["verify", "--diff", "--json"]);
    assert_eq!(v.status.code(), Some(1), "{v:?}");
    let doc: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(doc["agree"], false);
    for n in doc["nodes"].as_array().unwrap() {
        assert!(n["root"].is_string(), "every member answered: {n}");
    }
    let mut keys: Vec<&str> = doc["differing_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["load/00042", "only/c/0", "only/c/1", "only/c/2"],
        "{doc}"
    );
    assert_eq!(doc["diff_leaves_truncated"], false);
    // What the descent read, beside what listing every key's hash reads.
    let diff_bytes = doc["diff_bytes"].as_u64().unwrap();
    let all = rt
        .block_on(
            meridian::client::Client::new(&addr)
                .unwrap()
                .get("/v1/hashes"),
        )
        .unwrap();
    println!(
        "verify --diff read {diff_bytes} bytes; /v1/hashes of one node is {} bytes",
        all.body.len()
    );
    assert!(
        diff_bytes > 0 && diff_bytes * 10 < all.body.len() as u64,
        "the diff read {diff_bytes} bytes; every hash is {} bytes",
        all.body.len()
    );
    let text = stdout(&meridian(&addr, &["verify", "--diff"]));
    println!("{text}");
    assert!(text.contains("DIVERGED"), "{text}");
    assert!(
        text.contains("\"from c\""),
        "c's value, read over the mesh: {text}"
    );
    assert!(text.contains("\"changed on b\""), "{text}");

    // Healed: they converge and verify says so.
    fb.heal();
    fc.heal();
    eventually("they agree again", || {
        stdout(&meridian(&addr, &["verify"])).contains("all 3 nodes in 3 regions agree")
    });
    rt.block_on(async {
        for d in [a, b, c] {
            d.shutdown().await.unwrap();
        }
    });
}
