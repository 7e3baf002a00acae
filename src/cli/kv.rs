//! `meridian kv`: read, write, list, watch and roll back keys through a
//! node's API ([`meridian::client`]), each subcommand a function.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Subcommand;
use hyper::Method;
use meridian::api::wire;
use meridian::client::{encode_path, Client, Reply};

use super::{transfer, utc};

#[derive(Subcommand)]
pub enum KvCommand {
    /// Print a key's value (raw bytes to stdout).
    Get {
        key: String,
        /// Print the whole entry as JSON (flags, indexes, base64 value).
        #[arg(long)]
        json: bool,
    },
    /// Write a key: the value from the argument, `--file`, or stdin (no value or `-`).
    Put {
        key: String,
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
        /// Consul flags stored with the value.
        #[arg(long)]
        flags: Option<u64>,
        /// Only if the key's modify index is this (0: only if absent).
        #[arg(long)]
        cas: Option<u64>,
    },
    /// Delete a key, or every key under a prefix with `--recurse`.
    Delete {
        key: String,
        #[arg(long)]
        recurse: bool,
        /// Allow a recursive delete of more keys than the node's recursive_delete_keys_max.
        #[arg(long, requires = "recurse")]
        force: bool,
        /// Only if the key's modify index is this.
        #[arg(long, conflicts_with = "recurse")]
        cas: Option<u64>,
    },
    /// List keys under a prefix (with values when `--values`).
    List {
        #[arg(default_value = "")]
        prefix: String,
        /// Print key = value lines.
        #[arg(long)]
        values: bool,
        #[arg(long)]
        json: bool,
    },
    /// The versions of a key this node kept: index, time, writer, value.
    History {
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Write an earlier version of a key again, as a new write (it replicates and wins).
    Rollback {
        key: String,
        /// The version: its index (from `kv history`) or its stamp.
        #[arg(long)]
        to: String,
    },
    /// Write keys under a prefix to a file (or stdout): json (Consul's export format), yaml, properties.
    Export {
        #[arg(default_value = "")]
        prefix: String,
        /// Default: from --out's extension, else json.
        #[arg(long, value_enum)]
        format: Option<transfer::Format>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write the keys of a json, yaml or properties file (under --prefix); only what differs.
    Import {
        file: PathBuf,
        /// Put the keys under this prefix (yaml and properties: the root of the file).
        #[arg(long, default_value = "")]
        prefix: String,
        /// Default: from the file's extension.
        #[arg(long, value_enum)]
        format: Option<transfer::Format>,
        /// Show what would be added and changed, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print every change under a prefix as it happens (Ctrl-C stops).
    Watch {
        #[arg(default_value = "")]
        prefix: String,
        /// Start after this index (0: replay every current key first).
        #[arg(long, default_value_t = 0)]
        index: u64,
        #[arg(long)]
        json: bool,
    },
}

/// A write's body: the argument (unless `-`), the file, or stdin.
pub(super) fn body_of(value: Option<String>, file: Option<PathBuf>) -> Result<Bytes> {
    Ok(match (value, file) {
        (Some(v), _) if v != "-" => Bytes::from(v),
        (_, Some(f)) => {
            Bytes::from(std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?)
        }
        _ => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("reading stdin")?;
            Bytes::from(b)
        }
    })
}

/// A write's answer: `true` done, `false` its check-and-set failed.
fn written(r: Reply, key: &str) -> Result<bool> {
    let r = r.ok().with_context(|| key.to_string())?;
    Ok(r.body.as_ref() == b"true")
}

pub async fn kv(client: &Client, cmd: KvCommand) -> Result<bool> {
    match cmd {
        KvCommand::Get { key, json } => get(client, &key, json).await,
        KvCommand::Put {
            key,
            value,
            file,
            flags,
            cas,
        } => put(client, &key, value, file, flags, cas).await,
        KvCommand::Delete {
            key,
            recurse,
            force,
            cas,
        } => delete(client, &key, recurse, force, cas).await,
        KvCommand::List {
            prefix,
            values,
            json,
        } => list(client, &prefix, values, json).await,
        KvCommand::Export {
            prefix,
            format,
            out,
        } => transfer::export(client, &prefix, format, out).await,
        KvCommand::Import {
            file,
            prefix,
            format,
            dry_run,
        } => transfer::import(client, &file, &prefix, format, dry_run).await,
        KvCommand::History { key, json } => history(client, &key, json).await,
        KvCommand::Rollback { key, to } => rollback(client, &key, &to).await,
        KvCommand::Watch {
            prefix,
            index,
            json,
        } => watch(client, &prefix, index, json).await,
    }
}

async fn get(client: &Client, key: &str, as_json: bool) -> Result<bool> {
    let Some(e) = client.kv_get(key).await.with_context(|| key.to_string())? else {
        eprintln!("{key}: not found");
        return Ok(false);
    };
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&e)?)?;
    } else {
        out.write_all(&e.value)?;
        if !e.value.ends_with(b"\n") && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            writeln!(out)?;
        }
    }
    Ok(true)
}

async fn put(
    client: &Client,
    key: &str,
    value: Option<String>,
    file: Option<PathBuf>,
    flags: Option<u64>,
    cas: Option<u64>,
) -> Result<bool> {
    let body = body_of(value, file)?;
    let mut params = Vec::new();
    if let Some(f) = flags {
        params.push(format!("flags={f}"));
    }
    if let Some(c) = cas {
        params.push(format!("cas={c}"));
    }
    let mut path = format!("/v1/kv/{}", encode_path(key));
    if !params.is_empty() {
        path = format!("{path}?{}", params.join("&"));
    }
    let r = client.request(Method::PUT, &path, body).await?;
    let index = r.header("X-Consul-Index").unwrap_or("?").to_string();
    if written(r, key)? {
        println!("wrote {key} (index {index})");
        Ok(true)
    } else {
        eprintln!(
            "{key}: check-and-set failed (the key's modify index is not {})",
            cas.unwrap_or(0)
        );
        Ok(false)
    }
}

async fn delete(
    client: &Client,
    key: &str,
    recurse: bool,
    force: bool,
    cas: Option<u64>,
) -> Result<bool> {
    let mut path = format!("/v1/kv/{}", encode_path(key));
    if recurse {
        path.push_str(if force { "?recurse&force" } else { "?recurse" });
    } else if let Some(c) = cas {
        path.push_str(&format!("?cas={c}"));
    }
    let r = client.request(Method::DELETE, &path, Bytes::new()).await?;
    if written(r, key)? {
        println!(
            "deleted {key}{}",
            if recurse { " (recursively)" } else { "" }
        );
        Ok(true)
    } else {
        eprintln!("{key}: check-and-set failed");
        Ok(false)
    }
}

async fn list(client: &Client, prefix: &str, values: bool, as_json: bool) -> Result<bool> {
    let list = client
        .kv_list(prefix)
        .await
        .with_context(|| prefix.to_string())?;
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(true);
    }
    for e in &list {
        if values {
            writeln!(out, "{} = {}", e.key, String::from_utf8_lossy(&e.value))?;
        } else {
            writeln!(out, "{}", e.key)?;
        }
    }
    Ok(true)
}

pub(super) async fn history(client: &Client, key: &str, as_json: bool) -> Result<bool> {
    let list = client.history(key).await.with_context(|| key.to_string())?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(true);
    }
    if list.is_empty() {
        eprintln!("{key}: no versions kept on this node");
        return Ok(false);
    }
    println!(
        "{:>8}  {:<24} {:<20} {:<14} VALUE",
        "INDEX", "TIME (UTC)", "WRITER", "REGION"
    );
    for v in &list {
        let value = if v.deleted {
            "(deleted)".to_string()
        } else {
            let mut t: String = String::from_utf8_lossy(&v.value).chars().take(60).collect();
            if v.value.len() > 60 {
                t.push('…');
            }
            t
        };
        let writer = if v.node_name.is_empty() {
            &v.node
        } else {
            &v.node_name
        };
        println!(
            "{:>8}  {:<24} {:<20} {:<14} {value}",
            v.index,
            utc(v.time),
            writer,
            v.region,
        );
    }
    Ok(true)
}

async fn rollback(client: &Client, key: &str, to: &str) -> Result<bool> {
    let list = client.history(key).await.with_context(|| key.to_string())?;
    let Some(target) = list
        .iter()
        .find(|v| v.index.to_string() == to || v.stamp == to)
    else {
        bail!("{key}: no kept version with index or stamp {to} (see `meridian kv history {key}`)");
    };
    // Check-and-set against the current version: a write that lands
    // meanwhile is not silently overwritten.
    let current = client
        .kv_get(key)
        .await
        .with_context(|| key.to_string())?
        .map_or(0, |e| e.modify_index);
    let path = encode_path(key);
    let r = if target.deleted {
        if current == 0 {
            println!("{key} is already deleted");
            return Ok(true);
        }
        let path = format!("/v1/kv/{path}?cas={current}");
        client.request(Method::DELETE, &path, Bytes::new()).await?
    } else {
        let path = format!("/v1/kv/{path}?cas={current}&flags={}", target.flags);
        client
            .request(Method::PUT, &path, target.value.clone())
            .await?
    };
    let index = r.header("X-Consul-Index").unwrap_or("?").to_string();
    if !written(r, key)? {
        eprintln!(
            "{key} changed while rolling back; look at `meridian kv history {key}` and try again"
        );
        return Ok(false);
    }
    println!(
        "rolled {key} back to the version of index {} (written as a new change, index {index})",
        target.index
    );
    Ok(true)
}

async fn watch(client: &Client, prefix: &str, index: u64, as_json: bool) -> Result<bool> {
    let path = format!("/v1/watch/{}?index={index}", encode_path(prefix));
    let mut s = client.stream(&path).await?;
    if !s.status.is_success() {
        bail!("watch {prefix}: {}", s.status);
    }
    loop {
        let ev = tokio::select! {
            ev = s.next_event() => ev,
            _ = tokio::signal::ctrl_c() => return Ok(true),
        };
        let Some(ev) = ev.map_err(|e| anyhow::anyhow!("watch stream: {e}"))? else {
            eprintln!("the node closed the stream");
            return Ok(false);
        };
        if as_json {
            println!("{}", ev.data);
            continue;
        }
        let c: wire::KvChange = serde_json::from_str(&ev.data)
            .with_context(|| format!("a change the node sent: {}", ev.data))?;
        match c.op {
            wire::Op::Delete => println!("{:>8}  delete {}", ev.id, c.key),
            wire::Op::Put => println!(
                "{:>8}  put    {} = {}",
                ev.id,
                c.key,
                String::from_utf8_lossy(&c.value)
            ),
        }
    }
}
