//! `meridian acl`: the ACL bootstrap, policies and tokens of a cluster,
//! through Consul's ACL API on the node at `--addr` (the change replicates
//! to every region). Printed as Consul's CLI prints them, or as JSON.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use hyper::Method;
use meridian::api::wire::{self, AclPolicy, AclPolicyLink, AclToken};
use meridian::client::{encode_path, Client};

#[derive(clap::Subcommand)]
pub enum AclCommand {
    /// Create the first management token (once per cluster); prints its secret.
    Bootstrap {
        #[arg(long)]
        json: bool,
    },
    /// Policies: rules in Consul's HCL or JSON.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Tokens: a secret linked to policies.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(clap::Subcommand)]
pub enum PolicyCommand {
    /// Create a policy.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// The rules (HCL or JSON); `@FILE` reads them from a file.
        #[arg(long)]
        rules: String,
        #[arg(long)]
        json: bool,
    },
    /// List the policies.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one policy with its rules.
    Read {
        #[arg(long, conflicts_with = "name", required_unless_present = "name")]
        id: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a policy (tokens that link it lose its rules).
    Delete {
        #[arg(long, conflicts_with = "name", required_unless_present = "name")]
        id: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints its secret (shown only here).
    Create {
        #[arg(long, default_value = "")]
        description: String,
        /// A policy to link, by name (repeatable).
        #[arg(long = "policy-name")]
        policy_names: Vec<String>,
        /// A policy to link, by ID (repeatable).
        #[arg(long = "policy-id")]
        policy_ids: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the tokens (secrets hidden).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one token (`--self`: the one given with --token).
    Read {
        #[arg(long, conflicts_with = "self_", required_unless_present = "self_")]
        id: Option<String>,
        #[arg(long = "self")]
        self_: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete a token: it stops working in every region as the delete arrives.
    Delete {
        #[arg(long)]
        id: String,
    },
}

pub async fn acl(client: &Client, command: AclCommand) -> Result<bool> {
    match command {
        AclCommand::Bootstrap { json } => {
            let t: AclToken = client
                .call(Method::PUT, "/v1/acl/bootstrap", None::<&()>)
                .await
                .context("ACL bootstrap")?;
            show_token(&t, json)
        }
        AclCommand::Policy { command } => policy(client, command).await,
        AclCommand::Token { command } => token(client, command).await,
    }
}

async fn policy(client: &Client, command: PolicyCommand) -> Result<bool> {
    match command {
        PolicyCommand::Create {
            name,
            description,
            rules,
            json,
        } => {
            let rules = match rules.strip_prefix('@') {
                Some(file) => std::fs::read_to_string(PathBuf::from(file))
                    .with_context(|| format!("reading the rules from {file}"))?,
                None => rules,
            };
            let req = wire::AclPolicyRequest {
                id: String::new(),
                name,
                description,
                rules,
            };
            let p: AclPolicy = client
                .call(Method::PUT, "/v1/acl/policy", Some(&req))
                .await
                .context("creating the policy")?;
            show_policy(&p, json)
        }
        PolicyCommand::List { json } => {
            let list: Vec<wire::AclPolicyStub> = client
                .call(Method::GET, "/v1/acl/policies", None::<&()>)
                .await
                .context("listing policies")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for p in &list {
                    println!(
                        "{}:\n   ID:          {}\n   Description: {}",
                        p.name, p.id, p.description
                    );
                }
            }
            Ok(true)
        }
        PolicyCommand::Read { id, name, json } => {
            let p = read_policy(client, id, name).await?;
            show_policy(&p, json)
        }
        PolicyCommand::Delete { id, name } => {
            let id = match id {
                Some(id) => id,
                None => read_policy(client, None, name).await?.id,
            };
            let _: bool = client
                .call(
                    Method::DELETE,
                    &format!("/v1/acl/policy/{}", encode_path(&id)),
                    None::<&()>,
                )
                .await
                .context("deleting the policy")?;
            println!("deleted policy {id}");
            Ok(true)
        }
    }
}

async fn read_policy(
    client: &Client,
    id: Option<String>,
    name: Option<String>,
) -> Result<AclPolicy> {
    let path = match (id, name) {
        (Some(id), _) => format!("/v1/acl/policy/{}", encode_path(&id)),
        (None, Some(name)) => format!("/v1/acl/policy/name/{}", encode_path(&name)),
        (None, None) => bail!("give --id or --name"),
    };
    client
        .call(Method::GET, &path, None::<&()>)
        .await
        .context("reading the policy")
}

async fn token(client: &Client, command: TokenCommand) -> Result<bool> {
    match command {
        TokenCommand::Create {
            description,
            policy_names,
            policy_ids,
            json,
        } => {
            let policies = policy_names
                .into_iter()
                .map(|name| AclPolicyLink {
                    id: String::new(),
                    name,
                })
                .chain(policy_ids.into_iter().map(|id| AclPolicyLink {
                    id,
                    name: String::new(),
                }))
                .collect();
            let req = wire::AclTokenRequest {
                description,
                policies,
                ..Default::default()
            };
            let t: AclToken = client
                .call(Method::PUT, "/v1/acl/token", Some(&req))
                .await
                .context("creating the token")?;
            show_token(&t, json)
        }
        TokenCommand::List { json } => {
            let list: Vec<AclToken> = client
                .call(Method::GET, "/v1/acl/tokens", None::<&()>)
                .await
                .context("listing tokens")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(true);
            }
            for t in &list {
                show_token(t, false)?;
                println!();
            }
            Ok(true)
        }
        TokenCommand::Read { id, self_, json } => {
            let path = match id {
                Some(id) if !self_ => format!("/v1/acl/token/{}", encode_path(&id)),
                _ => "/v1/acl/token/self".to_string(),
            };
            let t: AclToken = client
                .call(Method::GET, &path, None::<&()>)
                .await
                .context("reading the token")?;
            show_token(&t, json)
        }
        TokenCommand::Delete { id } => {
            let _: bool = client
                .call(
                    Method::DELETE,
                    &format!("/v1/acl/token/{}", encode_path(&id)),
                    None::<&()>,
                )
                .await
                .context("deleting the token")?;
            println!("deleted token {id}");
            Ok(true)
        }
    }
}

fn show_policy(p: &AclPolicy, json: bool) -> Result<bool> {
    if json {
        println!("{}", serde_json::to_string_pretty(p)?);
        return Ok(true);
    }
    println!("ID:           {}", p.id);
    println!("Name:         {}", p.name);
    println!("Description:  {}", p.description);
    println!("Rules:\n{}", p.rules);
    Ok(true)
}

fn show_token(t: &AclToken, json: bool) -> Result<bool> {
    if json {
        println!("{}", serde_json::to_string_pretty(t)?);
        return Ok(true);
    }
    println!("AccessorID:       {}", t.accessor_id);
    println!("SecretID:         {}", t.secret_id);
    println!("Description:      {}", t.description);
    println!("Local:            {}", t.local);
    println!("Create Time:      {}", t.create_time);
    println!("Policies:");
    for p in &t.policies {
        println!("   {} - {}", p.id, p.name);
    }
    Ok(true)
}
