//! The `meridian` binary: the daemon (`node`), a local cluster (`dev`), the
//! operator commands (`kv`, `status`, `verify`, `health`), the cluster CA
//! (`ca`), shell completions and the deterministic simulation (`sim`).

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use meridian::client::{Client, ClientTls};
use meridian::core::types::NodeId;
use meridian::daemon::{Daemon, DaemonConfig};
use meridian::net::tls::Ca;
use meridian::sim::{run_seed, Sim, SimConfig};

#[derive(Parser)]
#[command(name = "meridian", version, about = "Multi-region configuration sync")]
struct Cli {
    /// The node API the commands talk to.
    #[arg(
        long,
        global = true,
        env = "MERIDIAN_ADDR",
        default_value = "http://127.0.0.1:8500"
    )]
    addr: String,
    #[command(flatten)]
    tls: TlsArgs,
    /// The ACL token sent with every request (or CONSUL_HTTP_TOKEN).
    #[arg(long, global = true, env = "MERIDIAN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Log format of `node` and `dev`.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The CLI's HTTPS settings (for `https://` addresses).
#[derive(clap::Args)]
struct TlsArgs {
    /// The CA the API's certificate must chain to (https:// addresses);
    /// default: the system's trusted roots.
    #[arg(long, global = true, env = "MERIDIAN_CACERT")]
    ca_cert: Option<PathBuf>,
    /// The client certificate to present, for an API with `verify_incoming`.
    #[arg(
        long,
        global = true,
        env = "MERIDIAN_CLIENT_CERT",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(
        long,
        global = true,
        env = "MERIDIAN_CLIENT_KEY",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    /// The name the API's certificate is checked for (default: the host of --addr).
    #[arg(long, global = true, env = "MERIDIAN_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: its peers' QUIC endpoint and its HTTP API.
    Node(NodeArgs),
    /// Run a local cluster of several regions in this process (Ctrl-C stops it).
    Dev {
        /// Regions.
        #[arg(long, default_value_t = 3)]
        regions: usize,
        /// Nodes in each region.
        #[arg(long, default_value_t = 1)]
        nodes_per_region: usize,
        /// Where the CA, certificates and data go (kept between runs).
        #[arg(long, default_value = "meridian-dev")]
        dir: PathBuf,
        /// The first node's API port; the others count up from it (0: any free port).
        #[arg(long, default_value_t = 8500)]
        api_port: u16,
        /// After start, cut the last region off, write on both sides, heal and time the convergence.
        #[arg(long)]
        partition_demo: bool,
        /// Every node posts its events (JSON) to this http:// URL.
        #[arg(long)]
        webhook: Option<String>,
        /// The APIs serve HTTPS with the nodes' certificates (the CA is in DIR/ca/ca.pem).
        #[arg(long)]
        tls: bool,
        /// ACLs on (default policy deny): bootstraps once and prints the management token.
        #[arg(long)]
        acl: bool,
    },
    /// Read and write keys.
    Kv {
        #[command(subcommand)]
        command: cli::KvCommand,
    },
    /// Read and write documents: JSON whose fields merge when regions
    /// change different fields apart.
    Doc {
        #[command(subcommand)]
        command: cli::DocCommand,
    },
    /// The node's members, regions, lag and root.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Every member's conflict log, gathered: writes that replaced a
    /// concurrent write of another region. Exit 1 if a member did not answer.
    Conflicts {
        /// Also ask these API addresses.
        #[arg(long = "node")]
        nodes: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check that every node holds the same data: compares Merkle roots, every member asked
    /// through the node at --addr over the mesh; exit 1 on divergence.
    Verify {
        /// Also check these API addresses (nodes the first one does not know).
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// List the differing keys and each node's value.
        #[arg(long)]
        diff: bool,
        /// Only compare keys under this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Each node first recomputes every record's check and its digest
        /// from the values (O(keys)); damaged records are quarantined.
        #[arg(long)]
        deep: bool,
        #[arg(long)]
        json: bool,
    },
    /// Backups of the node at --addr, and checking backup files.
    Backup {
        #[command(subcommand)]
        command: cli::backup::BackupCommand,
    },
    /// Merge a full backup and its incrementals into every member (CRDT merge: nothing newer is lost).
    Restore {
        /// Backup files (a full one and incrementals, in any order; they are
        /// checked as a chain), or a destination and a point:
        /// `s3://bucket/prefix@latest`, `DIR@latest`, `s3://bucket/prefix@FILE`.
        #[arg(required = true)]
        sources: Vec<String>,
        /// Restore a backup of another cluster (another CA).
        #[arg(long)]
        force: bool,
        /// Only into the node at --addr, not every member.
        #[arg(long)]
        only: bool,
    },
    /// Restore drill: each node's newest chain of scheduled backups in a
    /// backup directory restored into a scratch state and its root checked;
    /// prints the recovery point and time. Exit 1 when a drill fails.
    Drill {
        /// A backup folder (`[backup] dir`) or `s3://bucket[/prefix]`
        /// (credentials, endpoint and region from the `AWS_*` variables).
        #[arg(long, visible_alias = "dir")]
        destination: String,
        /// Only this node's backups (its name).
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Make a standby node active: it accepts client writes from now on (and after restarts).
    Promote,
    /// Who the node at --addr knows: members (servers) with their state,
    /// the edges it serves, and the members the cluster forgot.
    Members {
        #[arg(long)]
        json: bool,
    },
    /// The node at --addr leaves the cluster for good: once the members in
    /// contact hold all its writes, it tells them (they stop counting it for
    /// quorum, partition health and tombstone collection) and shuts down.
    Leave,
    /// Forget a member that is gone for good (by name or node id): it stops
    /// counting for quorum, partition health and tombstone collection on
    /// every member. Refused while it is in contact (run `leave` on it).
    Forget {
        /// The member's name or node id.
        node: String,
    },
    /// The node's health against its thresholds; exit 1 when unhealthy.
    Health {
        #[arg(long)]
        json: bool,
    },
    /// ACL tokens and policies (Consul's ACL API; they replicate to every region).
    Acl {
        #[command(subcommand)]
        command: cli::acl::AclCommand,
    },
    /// The audit log of the node at --addr: accepted changes, who made them, from where.
    Audit {
        #[command(subcommand)]
        command: cli::audit::AuditCommand,
    },
    /// The cluster's certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Measure a local cluster whose regions talk through an injected WAN
    /// delay: propagation, partition repair, HTTP throughput, rebuild.
    Bench(cli::bench::BenchArgs),
    /// Runs some of `meridian bench edges`' edges (started by it).
    #[command(hide = true)]
    BenchEdgesChild {
        #[arg(long)]
        ca: std::path::PathBuf,
        #[arg(long, value_delimiter = ',')]
        seeds: Vec<std::net::SocketAddr>,
        #[arg(long)]
        first: usize,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        edge_delay_ms: u64,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Run the deterministic cluster simulation: random writes, partitions,
    /// crashes, drops and clock skew, checked against an oracle.
    Sim {
        /// How many consecutive seeds to run.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// Replay exactly one seed and print its scenario and report.
        #[arg(long, conflicts_with_all = ["seeds", "first"])]
        seed: Option<u64>,
        /// With --seed: print the story of this key (`*`: of every key)
        /// and every fault, in virtual time, to stderr.
        #[arg(long, requires = "seed")]
        trace: Option<String>,
        /// Break one safety mechanism (`all`: each in turn) and report
        /// the first seed that catches it; with --seed, replay that seed
        /// with the mechanism broken (a build with `--features mutants`
        /// only).
        #[arg(long)]
        mutant: Option<String>,
    },
}

/// `meridian node`: the config file, and flags that override it.
#[derive(clap::Args)]
struct NodeArgs {
    /// The TOML config file (see the README's config reference).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    region: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Directory with node.pem, node.key and ca.pem (`meridian ca issue`).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// UDP address for peers.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address peers should dial when it is not `listen`.
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// TCP address of the HTTP API.
    #[arg(long)]
    api: Option<SocketAddr>,
    /// A peer to join through (repeat for more); replaces the file's seeds.
    #[arg(long = "seed")]
    seeds: Vec<SocketAddr>,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a new CA (ca.pem, ca.key, cluster) in a directory.
    Init {
        /// The cluster's name.
        #[arg(long, default_value = "meridian")]
        cluster: String,
        /// Where to write the CA; refused if a CA is already there.
        #[arg(long, default_value = "ca")]
        out: PathBuf,
    },
    /// Issue a node certificate (node.pem, node.key, ca.pem) signed by the CA.
    Issue {
        /// The node's name (in the certificate's common name).
        #[arg(long)]
        name: String,
        /// The node's region (in the certificate's organizational unit).
        #[arg(long)]
        region: String,
        /// The CA directory made by `ca init`.
        #[arg(long, default_value = "ca")]
        ca: PathBuf,
        /// Where to write the node's files (default: a directory named after the node).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Another DNS name or IP address HTTPS clients reach the node's API by
        /// (repeatable; localhost, 127.0.0.1 and ::1 are always included).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Issue again for a name the CA already issued a certificate for
        /// (revoke the old one with `ca revoke` if its key may be lost).
        /// The new certificate keeps the node id of the previous one.
        #[arg(long)]
        reissue: bool,
        /// The node id to bind the certificate to (16 hex digits): that of
        /// a node that already runs (its data directory's `node.id`).
        /// Default: the previous certificate's when reissuing, else a new one.
        #[arg(long)]
        node_id: Option<String>,
    },
    /// Add a certificate to a deny list (a lost node key): nodes with
    /// `tls_deny_file` set to it refuse that certificate in the handshake.
    Revoke {
        /// The node whose current certificate (the CA's record of it) is revoked.
        #[arg(long, required_unless_present = "cert", conflicts_with = "cert")]
        name: Option<String>,
        /// Or the certificate file itself.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// The CA directory made by `ca init`.
        #[arg(long, default_value = "ca")]
        ca: PathBuf,
        /// The deny list to append to (default: deny.txt in the CA directory).
        #[arg(long)]
        deny_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`meridian kv list | head`), like other CLI tools.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn logging(format: LogFormat, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        Command::Sim {
            mutant: Some(name),
            seeds,
            first,
            seed: None,
            ..
        } => mutants(&name, first, seeds),
        Command::Sim {
            seeds,
            first,
            seed,
            trace,
            mutant,
        } => {
            let mutant = mutant.as_deref().map(parse_mutant).transpose()?;
            Ok(sim(seeds, first, seed, trace, mutant))
        }
        Command::Ca { command } => ca(command).map(|()| true),
        Command::Drill {
            destination,
            node,
            json,
        } => runtime()?.block_on(cli::backup::drill(&destination, node.as_deref(), json)),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "meridian",
                &mut std::io::stdout(),
            );
            Ok(true)
        }
        Command::Bench(mut a) => {
            logging(cli.log_format, "error");
            if !(0.0..=1.0).contains(&a.loss) {
                anyhow::bail!("--loss must be between 0 and 1, got {}", a.loss);
            }
            if a.tiny {
                a.writes = 10;
                a.rate = 100;
                a.keys = 200;
                a.diverged = 20;
                a.clients = 4;
                a.seconds = 0.2;
                a.edges = a.edges.min(20);
            }
            runtime()?.block_on(cli::bench::run(a))
        }
        Command::BenchEdgesChild {
            ca,
            seeds,
            first,
            count,
            edge_delay_ms,
        } => {
            logging(cli.log_format, "error");
            runtime()?.block_on(cli::bench_edges::child(
                ca,
                seeds,
                first,
                count,
                edge_delay_ms,
            ))?;
            Ok(true)
        }
        Command::Node(args) => {
            logging(cli.log_format, "info");
            runtime()?.block_on(node(args))
        }
        Command::Dev {
            regions,
            nodes_per_region,
            dir,
            api_port,
            partition_demo,
            webhook,
            tls,
            acl,
        } => {
            logging(cli.log_format, "warn");
            runtime()?.block_on(cli::dev::run(cli::dev::DevArgs {
                regions,
                nodes_per_region,
                dir,
                api_port,
                partition_demo,
                webhook,
                tls,
                acl,
            }))
        }
        command => {
            logging(cli.log_format, "warn");
            // Consul's variable too, so that scripts written for Consul work.
            let token = cli
                .token
                .clone()
                .or_else(|| std::env::var("CONSUL_HTTP_TOKEN").ok());
            let client =
                Client::with_tls(&cli.addr, client_tls(&cli.tls)?)?.token(token.as_deref());
            runtime()?.block_on(async move {
                match command {
                    Command::Kv { command } => cli::kv(&client, command).await,
                    Command::Doc { command } => cli::doc(&client, command).await,
                    Command::Status { json } => cli::status(&client, json).await,
                    Command::Health { json } => cli::health(&client, json).await,
                    Command::Conflicts { nodes, json } => {
                        cli::conflicts::conflicts(&client, &nodes, json).await
                    }
                    Command::Promote => cli::promote(&client).await,
                    Command::Members { json } => cli::members::members(&client, json).await,
                    Command::Leave => cli::members::leave(&client).await,
                    Command::Forget { node } => cli::members::forget(&client, &node).await,
                    Command::Acl { command } => cli::acl::acl(&client, command).await,
                    Command::Audit { command } => cli::audit::audit(&client, command).await,
                    Command::Backup { command } => cli::backup::run(&client, command).await,
                    Command::Restore {
                        sources,
                        force,
                        only,
                    } => cli::backup::restore(&client, &sources, force, only).await,
                    Command::Verify {
                        nodes,
                        diff,
                        prefix,
                        deep,
                        json,
                    } => cli::verify(&client, &nodes, diff, &prefix, deep, json).await,
                    _ => unreachable!("handled above"),
                }
            })
        }
    }
}

/// The HTTPS settings the TLS flags give; `None` when none is given.
fn client_tls(cli: &TlsArgs) -> Result<Option<std::sync::Arc<ClientTls>>> {
    let given = cli.ca_cert.is_some() || cli.client_cert.is_some() || cli.tls_server_name.is_some();
    if !given {
        return Ok(None);
    }
    let client = cli.client_cert.as_deref().zip(cli.client_key.as_deref());
    let tls = ClientTls::new(
        cli.ca_cert.as_deref(),
        client,
        cli.tls_server_name.as_deref(),
    )?;
    Ok(Some(std::sync::Arc::new(tls)))
}

/// Where a CA keeps its record of the certificate issued for `name`.
fn issued_path(ca: &std::path::Path, name: &str) -> PathBuf {
    ca.join("issued").join(format!("{name}.pem"))
}

/// The SHA-256 fingerprint (hex) of a PEM certificate.
/// A PEM certificate's DER.
fn cert_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|d| d.to_vec())
}

fn fingerprint_of(pem: &str) -> Result<String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| anyhow::anyhow!("not a PEM certificate"))?;
    Ok(meridian::net::deny::fingerprint_hex(der.as_ref()))
}

async fn node(args: NodeArgs) -> Result<bool> {
    let mut cfg = match &args.config {
        Some(path) => DaemonConfig::load(path)?,
        None => DaemonConfig::default(),
    };
    if let Some(v) = args.name {
        cfg.name = v;
    }
    if let Some(v) = args.region {
        cfg.region = v;
    }
    if let Some(v) = args.data_dir {
        cfg.data_dir = v;
    }
    if let Some(v) = args.tls_dir {
        cfg.tls_dir = v;
    }
    if let Some(v) = args.listen {
        cfg.listen = v;
    }
    if let Some(v) = args.advertise {
        cfg.advertise = Some(v);
    }
    if let Some(v) = args.api {
        cfg.api = v;
    }
    if !args.seeds.is_empty() {
        cfg.seeds = args.seeds;
    }
    let daemon = Daemon::start(&cfg).await?;
    // The line scripts and tests wait for.
    println!(
        "meridian node {} ({}) ready: api {} peers {}",
        cfg.name,
        cfg.region,
        daemon.api_url(),
        daemon.node().local_addr()
    );
    let left = meridian::daemon::left(daemon.node());
    tokio::select! {
        _ = cli::dev::shutdown_signal() => {}
        _ = left => tracing::warn!("this node left the cluster (`meridian leave`)"),
    }
    tracing::info!("shutting down: closing the API, flushing commits, closing peers");
    daemon.shutdown().await?;
    tracing::info!("stopped");
    Ok(true)
}

fn ca(command: CaCommand) -> Result<()> {
    match command {
        CaCommand::Init { cluster, out } => {
            if out.join("ca.key").exists() {
                anyhow::bail!(
                    "{} already holds a CA; refusing to overwrite it",
                    out.display()
                );
            }
            let ca = Ca::generate(&cluster)?;
            ca.save(&out)?;
            let id = meridian::net::tls::cluster_id(&ca.cert_pem)?;
            println!(
                "created the CA of cluster {cluster:?} in {} (cluster id {})",
                out.display(),
                id.0.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            println!(
                "keep {} secret; issue node certificates with `meridian ca issue`",
                out.join("ca.key").display()
            );
            Ok(())
        }
        CaCommand::Issue {
            name,
            region,
            ca,
            out,
            hosts,
            reissue,
            node_id,
        } => {
            let authority =
                Ca::load(&ca).with_context(|| format!("reading the CA in {}", ca.display()))?;
            let record = issued_path(&ca, &name);
            if record.exists() && !reissue {
                anyhow::bail!(
                    "the CA already issued a certificate for {name:?} ({}): a second key for one name \
                     is a second node claiming it. If the old key may be lost, revoke it \
                     (`meridian ca revoke --name {name}`), then pass --reissue",
                    record.display()
                );
            }
            let out = out.unwrap_or_else(|| PathBuf::from(&name));
            let node = match node_id {
                Some(hex) => match u64::from_str_radix(&hex, 16) {
                    Ok(n) if n != 0 && hex.len() == 16 => NodeId(n),
                    _ => anyhow::bail!("--node-id takes a node id: 16 hex digits, not {hex:?}"),
                },
                None => std::fs::read_to_string(&record)
                    .ok()
                    .and_then(|pem| {
                        let der = cert_der(&pem)?;
                        meridian::net::tls::certified_node(&der)
                    })
                    .unwrap_or_else(meridian::net::tls::random_node_id),
            };
            let id = authority.issue_node(&name, &region, node, &hosts)?;
            id.save(&out)?;
            std::fs::create_dir_all(record.parent().expect("inside the CA directory"))?;
            if record.exists() {
                // Keep the previous certificate: it can still be revoked.
                let old = std::fs::read_to_string(&record)?;
                let fp = fingerprint_of(&old)?;
                std::fs::rename(&record, record.with_extension(format!("{}.pem", &fp[..16])))?;
            }
            std::fs::write(&record, &id.cert_pem)?;
            println!(
                "issued {name} ({region}), node id {node}, into {}",
                out.display()
            );
            Ok(())
        }
        CaCommand::Revoke {
            name,
            cert,
            ca,
            deny_file,
        } => {
            let path = match (&name, &cert) {
                (_, Some(c)) => c.clone(),
                (Some(n), None) => issued_path(&ca, n),
                (None, None) => anyhow::bail!("give --name or --cert"),
            };
            let pem = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the certificate {}", path.display()))?;
            let fp = fingerprint_of(&pem)?;
            let deny_file = deny_file.unwrap_or_else(|| ca.join("deny.txt"));
            let listed = std::fs::read_to_string(&deny_file).unwrap_or_default();
            if !listed.contains(&fp) {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&deny_file)
                    .with_context(|| format!("writing {}", deny_file.display()))?;
                writeln!(
                    f,
                    "{fp}  # {}",
                    name.as_deref().unwrap_or(&path.display().to_string())
                )?;
            }
            println!("revoked {fp} in {}", deny_file.display());
            println!(
                "copy it to every node, set tls_deny_file to it, and restart them: they refuse that certificate from then on"
            );
            Ok(())
        }
    }
}

/// `meridian sim --mutant NAME|all`: each mutant over the seeds until one
/// catches it; true when every mutant was caught.
fn mutants(name: &str, first: u64, seeds: u64) -> Result<bool> {
    use meridian::core::mutants::{Mutant, ENABLED};
    use strum::VariantArray;
    if !ENABLED {
        bail!("this build has no mutants: build with `cargo build --release --features mutants`");
    }
    let list: Vec<Mutant> = if name == "all" {
        Mutant::VARIANTS.to_vec()
    } else {
        vec![parse_mutant(name)?]
    };
    let mut all_caught = true;
    for m in list {
        let start = Instant::now();
        let run = meridian::sim::run_mutant(m, first, seeds);
        let secs = start.elapsed().as_secs_f64();
        match run.caught {
            Some(f) => println!(
                "{:<20} caught by seed {} after {} seeds ({secs:.1} s): {}",
                m.as_str(),
                f.seed,
                run.seeds_run,
                f.reason.lines().next().unwrap_or("")
            ),
            None => {
                all_caught = false;
                println!(
                    "{:<20} SURVIVED {} seeds from {first} ({secs:.1} s)",
                    m.as_str(),
                    run.seeds_run
                );
            }
        }
    }
    Ok(all_caught)
}

/// A mutant by name, in a build that has them.
fn parse_mutant(name: &str) -> Result<meridian::core::mutants::Mutant> {
    use meridian::core::mutants::{Mutant, ENABLED};
    use strum::VariantArray;
    if !ENABLED {
        bail!("this build has no mutants: build with `cargo build --release --features mutants`");
    }
    let names: Vec<&str> = Mutant::VARIANTS.iter().map(|m| m.as_str()).collect();
    name.parse()
        .map_err(|_| anyhow::anyhow!("no mutant {name:?}; known: all, {}", names.join(", ")))
}

fn sim(
    seeds: u64,
    first: u64,
    seed: Option<u64>,
    trace: Option<String>,
    mutant: Option<meridian::core::mutants::Mutant>,
) -> bool {
    if let Some(seed) = seed {
        println!("{:#?}", SimConfig::from_seed(seed));
        let sim = Sim::new(SimConfig::from_seed(seed))
            .with_trace(trace)
            .with_mutant(mutant);
        return match sim.run() {
            Ok(report) => {
                println!("{report:#?}");
                true
            }
            Err(e) => {
                eprintln!("{e}");
                false
            }
        };
    }
    let start = Instant::now();
    let mut failed = Vec::new();
    let (mut acked, mut partitions, mut crashes) = (0u64, 0u64, 0u64);
    let (mut forgets, mut leaves, mut resyncs) = (0u64, 0u64, 0u64);
    let (mut doc_writes, mut doc_merges) = (0u64, 0u64);
    for s in first..first.saturating_add(seeds) {
        match run_seed(s) {
            Ok(r) => {
                acked += r.writes_acknowledged;
                partitions += r.partitions;
                crashes += r.crashes;
                forgets += r.forgets;
                leaves += r.leaves;
                resyncs += r.resyncs;
                doc_writes += r.doc_writes;
                doc_merges += r.doc_merges;
            }
            Err(e) => {
                eprintln!("{e}");
                failed.push(s);
            }
        }
    }
    println!(
        "{seeds} seeds ({first}..{}) in {:.1} s: {} converged, {} failed; {acked} acknowledged writes, \
         {partitions} partitions, {crashes} crashes, {forgets} members forgotten, {leaves} left, \
         {resyncs} resyncs, {doc_writes} document writes, {doc_merges} document merges",
        first.saturating_add(seeds),
        start.elapsed().as_secs_f64(),
        seeds - failed.len() as u64,
        failed.len()
    );
    if !failed.is_empty() {
        println!("failing seeds: {failed:?} (replay one with `meridian sim --seed N`)");
    }
    failed.is_empty()
}
