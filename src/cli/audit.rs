//! `meridian audit tail`: the audit log of the node at `--addr` (accepted
//! changes, who made them and from where), printed for people or as JSON
//! lines; `--follow` keeps printing as records come.

use std::time::Duration;

use anyhow::{Context, Result};
use meridian::api::wire::AuditRecord;
use meridian::client::Client;

use super::utc;

/// How often `--follow` asks for new records.
const FOLLOW_POLL_MS: u64 = 1_000;

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// The last records (or those after --since), then new ones with --follow.
    Tail {
        /// Only records after this sequence number.
        #[arg(long)]
        since: Option<u64>,
        /// How many of the last records, without --since.
        #[arg(long, short = 'n', default_value_t = 20)]
        lines: usize,
        /// Keep printing new records (Ctrl-C stops).
        #[arg(long, short = 'f')]
        follow: bool,
        /// One JSON document per line.
        #[arg(long)]
        json: bool,
    },
}

pub async fn audit(client: &Client, command: AuditCommand) -> Result<bool> {
    let AuditCommand::Tail {
        since,
        lines,
        follow,
        json,
    } = command;
    let mut after = match since {
        Some(s) => s,
        None => last_seq(client).await?.saturating_sub(lines as u64),
    };
    loop {
        let records: Vec<AuditRecord> = client
            .get_json(&format!("/v1/audit?since={after}"))
            .await
            .context("reading the audit log")?;
        for r in &records {
            print(r, json)?;
            after = after.max(r.seq);
        }
        if !follow {
            return Ok(true);
        }
        if records.is_empty() {
            tokio::time::sleep(Duration::from_millis(FOLLOW_POLL_MS)).await;
        }
    }
}

/// The newest record's sequence number (0 when the log is empty), found
/// by reading forward in pages.
async fn last_seq(client: &Client) -> Result<u64> {
    let mut after = 0;
    loop {
        let page: Vec<AuditRecord> = client
            .get_json(&format!("/v1/audit?since={after}"))
            .await
            .context("reading the audit log")?;
        match page.last() {
            Some(r) => after = r.seq,
            None => return Ok(after),
        }
    }
}

fn print(r: &AuditRecord, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    let mut keys = r.keys.join(" ");
    if r.keys_total > r.keys.len() as u64 {
        keys.push_str(&format!(" (+{} more)", r.keys_total - r.keys.len() as u64));
    }
    let who = if r.accessor.is_empty() {
        "-"
    } else {
        &r.accessor
    };
    println!(
        "{:>8}  {}  {:<18} {:<10} token {:<36} from {:<21} {}",
        r.seq,
        utc(r.at_ms),
        r.op,
        r.region,
        who,
        r.remote,
        keys
    );
    Ok(())
}
