//! `meridian doc`: read and write documents (JSON that merges field by
//! field, issue 16) through a node's `/v1/doc` API.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use hyper::{Method, StatusCode};
use meridian::api::wire;
use meridian::client::{encode_path, Client};

#[derive(Subcommand)]
pub enum DocCommand {
    /// Print a document's JSON (pretty).
    Get {
        key: String,
        /// Also print its heads and indexes (`{"doc": ..., "heads": [...], ...}`).
        #[arg(long)]
        heads: bool,
        /// The document as it was at these heads (comma-separated, from `--heads`).
        #[arg(long)]
        at: Option<String>,
    },
    /// Write a whole document (a JSON object): the argument, `--file`, or
    /// stdin. Fields left as they were merge with changes made elsewhere.
    Put {
        key: String,
        json: Option<String>,
        #[arg(long, conflicts_with = "json")]
        file: Option<PathBuf>,
        /// Only if the key's modify index is this (0: only if absent).
        #[arg(long)]
        cas: Option<u64>,
    },
    /// Apply an RFC 7386 merge patch (`{"field": value}`; `null` removes a field).
    Patch {
        key: String,
        json: Option<String>,
        #[arg(long, conflicts_with = "json")]
        file: Option<PathBuf>,
        #[arg(long)]
        cas: Option<u64>,
    },
    /// The versions of a document this node kept, each as JSON.
    History {
        key: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn doc(client: &Client, cmd: DocCommand) -> Result<bool> {
    match cmd {
        DocCommand::Get { key, heads, at } => get(client, &key, heads, at).await,
        DocCommand::Put {
            key,
            json,
            file,
            cas,
        } => write(client, Method::PUT, &key, json, file, cas).await,
        DocCommand::Patch {
            key,
            json,
            file,
            cas,
        } => write(client, Method::PATCH, &key, json, file, cas).await,
        DocCommand::History { key, json } => super::kv::history(client, &key, json).await,
    }
}

async fn get(client: &Client, key: &str, heads: bool, at: Option<String>) -> Result<bool> {
    let mut params = Vec::new();
    if heads {
        params.push("heads".to_string());
    }
    if let Some(at) = at {
        params.push(format!("at={at}"));
    }
    let mut path = format!("/v1/doc/{}", encode_path(key));
    if !params.is_empty() {
        path = format!("{path}?{}", params.join("&"));
    }
    let r = client.get(&path).await?;
    if r.status == StatusCode::NOT_FOUND {
        eprintln!("{key}: not found");
        return Ok(false);
    }
    let r = r.ok().with_context(|| key.to_string())?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).context("the answer is not JSON")?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(true)
}

async fn write(
    client: &Client,
    method: Method,
    key: &str,
    json: Option<String>,
    file: Option<PathBuf>,
    cas: Option<u64>,
) -> Result<bool> {
    let body = super::kv::body_of(json, file)?;
    let mut path = format!("/v1/doc/{}", encode_path(key));
    if let Some(c) = cas {
        path = format!("{path}?cas={c}");
    }
    let r = client.request(method, &path, body).await?;
    if r.status == StatusCode::CONFLICT && cas.is_some() {
        eprintln!("{key}: {}", r.error_message());
        return Ok(false);
    }
    let r = r.ok().with_context(|| key.to_string())?;
    let w: wire::DocWritten = serde_json::from_slice(&r.body).context("the answer")?;
    println!("wrote {key} (index {}, stamp {})", w.modify_index, w.stamp);
    Ok(true)
}
