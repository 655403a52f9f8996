//! `relaisctl`: central-side tools for Relais — build snapshots, publish deltas, ingest events
//! (the reference consumer), sign and push configuration and commands, and see the fleet. What
//! an integrator starts from.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use relais::central::{self, BrokerLogin};
use relais::config::{AgentId, BrokerUrl};
use relais::fleet::{self, Audience, Command as FleetCommandBody, Draft, LogLevel, SigningKey};
use relais::replica::Stream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

#[path = "relaisctl/ledger_cli.rs"]
mod ledger_cli;

#[derive(Parser)]
#[command(
    name = "relaisctl",
    version,
    about = "Central-side tools for Relais agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct BrokerArgs {
    /// Broker URL: mqtts://HOST:PORT (TLS) or mqtt://HOST:PORT (labs).
    #[arg(long, env = "RELAISCTL_BROKER")]
    broker: BrokerUrl,
    /// MQTT username of the central tools (the broker ACL grants it relais/v1/#).
    #[arg(long, env = "RELAISCTL_USERNAME", default_value = "central")]
    username: String,
    #[arg(long, env = "RELAISCTL_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// CA to verify the broker with (else the system roots).
    #[arg(long, env = "RELAISCTL_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    #[arg(long, env = "RELAISCTL_CERT_FILE", requires = "key_file")]
    cert_file: Option<PathBuf>,
    #[arg(long, env = "RELAISCTL_KEY_FILE", requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// MQTT keep-alive (the broker drops a client silent for 1.5 times this).
    #[arg(long, env = "RELAISCTL_KEEP_ALIVE", default_value = "30s", value_parser = parse_keep_alive)]
    keep_alive: std::time::Duration,
}

fn parse_keep_alive(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    // rumqttc takes no less than 5 s.
    if d < std::time::Duration::from_secs(5) || d > std::time::Duration::from_secs(65_535) {
        return Err("between 5s and 65535s (MQTT counts it in whole seconds)".into());
    }
    Ok(d)
}

impl BrokerArgs {
    fn login(&self) -> BrokerLogin {
        BrokerLogin {
            broker: self.broker.clone(),
            username: self.username.clone(),
            password_file: self.password_file.clone(),
            ca_file: self.ca_file.clone(),
            client_cert_file: self.cert_file.clone(),
            client_key_file: self.key_file.clone(),
            keep_alive: self.keep_alive,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Snapshots for agents to fetch over HTTPS.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Publish replica deltas (NDJSON, one delta per line), a must_refetch, or a heartbeat
    /// ("STREAM is still current at version N") to one agent.
    Publish {
        #[command(flatten)]
        broker: BrokerArgs,
        /// STORE/AGENT
        #[arg(long)]
        agent: String,
        /// Deltas to send, in order.
        #[arg(long, conflicts_with_all = ["refetch", "heartbeat"])]
        deltas: Option<PathBuf>,
        /// Tell the agent this stream is still current at --current-version (its freshness
        /// then counts from now; a version ahead of the agent's makes it refetch).
        #[arg(
            long,
            value_enum,
            conflicts_with = "refetch",
            requires = "current_version"
        )]
        heartbeat: Option<Stream>,
        /// The newest version of the --heartbeat stream central published.
        #[arg(long, requires = "heartbeat")]
        current_version: Option<u64>,
        /// Tell the agent to refetch this stream's snapshot.
        #[arg(long, value_enum)]
        refetch: Option<Stream>,
        #[arg(long, requires = "refetch")]
        manifest_url: Option<String>,
        #[arg(long, requires = "refetch")]
        reason: Option<String>,
    },
    /// Reference consumer: every agent's events into a sink (a SQLite file or a PostgreSQL
    /// database), deduplicated, acknowledged.
    Ingest {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Where the events land: a SQLite file (labs), or postgres://USER@HOST:PORT/DB
        /// (docs/central.md). Workers of one --share group use the same sink.
        #[arg(long, env = "RELAISCTL_SINK")]
        sink: String,
        /// MQTT client id (the broker keeps this session's queue while the ingest is down).
        #[arg(long, default_value = "relais-ingest")]
        client_id: String,
        /// Do not send the end-to-end `ack` to agents.
        #[arg(long)]
        no_ack: bool,
        /// Run as one worker of GROUP: workers started with the same GROUP (and distinct
        /// --client-id) share the agents' messages through MQTT v5 shared subscriptions.
        #[arg(long, value_name = "GROUP")]
        share: Option<String>,
        /// Exit once the sink holds this many events.
        #[arg(long)]
        stop_after: Option<u64>,
        /// Exit after this long without a message, e.g. "30s".
        #[arg(long, value_parser = humantime::parse_duration)]
        idle_exit: Option<Duration>,
        /// Print the final report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// How far central holds each agent's store facts without a gap, from an ingest sink, and
    /// the watermark it may publish (docs/contract.md, "Store facts through N").
    Facts {
        /// The sink written by `relaisctl ingest`: a SQLite file or a postgres:// URL.
        #[arg(long, env = "RELAISCTL_SINK")]
        sink: String,
        #[arg(long)]
        json: bool,
    },
    /// The reference ledger: stock, loyalty and web orders across every store and the web,
    /// sent back to the agents (docs/ledger.md).
    Ledger {
        #[command(subcommand)]
        command: ledger_cli::LedgerCommand,
    },
    /// Write the JSON Schemas of every event payload and wire message, generated from the
    /// agent's own types: DIR/events/{type}.json and DIR/messages/{name}.json (docs/schemas/).
    Schemas {
        /// Directory to write into (docs/schemas in the repository).
        #[arg(long)]
        out: PathBuf,
    },
    /// Load central's side like a chain of stores (docs/central.md).
    Simulate {
        #[command(subcommand)]
        command: SimulateCommand,
    },
    /// The fleet as the agents last reported it.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Create an ops signing key pair: DIR/NAME.key (private, 0600) and DIR/NAME.pub.
    Keygen {
        /// Directory for the two files (created if missing).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "ops")]
        name: String,
    },
    /// Signed configuration documents (docs/fleet.md).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Signed remote commands (docs/fleet.md).
    Cmd {
        #[command(subcommand)]
        command: CmdCommand,
    },
}

// Parsed once per run: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum ConfigCommand {
    /// Sign a TOML file of remote settings for one agent or for every agent ('*').
    Sign {
        /// Ops private key (from `relaisctl keygen`).
        #[arg(long)]
        key: PathBuf,
        /// STORE/AGENT, or '*' for a fleet-wide document.
        #[arg(long)]
        agent: String,
        /// Must be above the version the agent runs (agents refuse downgrades).
        #[arg(long)]
        version: u64,
        /// When the document stops being valid: a duration from now ("30d") or an RFC 3339
        /// time in UTC. Default: never.
        #[arg(long, value_parser = parse_expiry)]
        expires: Option<Expiry>,
        /// The remote settings (TOML).
        file: PathBuf,
        /// Where to write the signed document (JSON); standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Publish a signed config to agents' cfg/desired (retained) and wait for their reports.
    Push {
        #[command(flatten)]
        broker: BrokerArgs,
        /// STORE/AGENT.
        #[arg(
            long,
            required_unless_present = "agents_file",
            conflicts_with = "agents_file"
        )]
        agent: Option<String>,
        /// One STORE/AGENT per line: push to each (a fleet-wide push is one publish per agent).
        #[arg(long)]
        agents_file: Option<PathBuf>,
        /// A document from `relaisctl config sign`.
        #[arg(long, required_unless_present = "key", conflicts_with_all = ["key", "version", "expires", "file"])]
        signed: Option<PathBuf>,
        /// Sign FILE now with this ops key (one document per agent; not the TLS --key-file).
        #[arg(long, requires_all = ["version", "file"])]
        key: Option<PathBuf>,
        #[arg(long)]
        version: Option<u64>,
        #[arg(long, value_parser = parse_expiry)]
        expires: Option<Expiry>,
        /// The remote settings (TOML), with --key.
        file: Option<PathBuf>,
        /// Return once the broker holds the document; do not wait for reports.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the agents' reports.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a signed document as an agent would (signature, audience, expiry).
    Verify {
        /// Public key file(s) the agent pins.
        #[arg(long = "pub", required = true)]
        public_keys: Vec<PathBuf>,
        /// The agent to check for (STORE/AGENT).
        #[arg(long)]
        agent: String,
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum CmdCommand {
    /// Sign a command, publish it on the agent's cmd/req and wait for its cmd/res answer.
    /// Options come before the command: `cmd send --agent S/A --key ops.key self-test`.
    Send {
        #[command(flatten)]
        broker: BrokerArgs,
        /// STORE/AGENT.
        #[arg(long)]
        agent: String,
        /// Ops signing key (from `relaisctl keygen`; not the TLS --key-file).
        #[arg(long)]
        key: PathBuf,
        /// The command's id (its document version); default: Unix time in ms, so ids grow.
        #[arg(long)]
        id: Option<u64>,
        /// How long the signed command stays valid (at most 24h), or an RFC 3339 time.
        #[arg(long, default_value = "10m", value_parser = parse_expiry)]
        expires: Expiry,
        /// How long to wait for the answer.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: CommandArg,
    },
}

#[derive(Subcommand)]
enum CommandArg {
    /// Refetch one replica stream's snapshot.
    Resync {
        #[arg(long, value_enum)]
        stream: Stream,
    },
    /// Run the agent's self-test.
    SelfTest,
    /// Reload firmware profiles.
    ReloadProfiles,
    /// Change the log level for a while.
    SetLogLevel {
        #[arg(long, value_enum)]
        level: LogLevel,
        /// e.g. "30m"; at most 24h.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Duration,
    },
    /// Collect diagnostics and upload them (https only).
    UploadDiagnostics {
        #[arg(long)]
        url: String,
    },
    /// Any command as JSON, e.g. '{"command":"resync","stream":"prices"}'.
    Json { json: String },
}

impl CommandArg {
    fn build(self) -> Result<FleetCommandBody, fleet::FleetError> {
        Ok(match self {
            CommandArg::Resync { stream } => FleetCommandBody::Resync { stream },
            CommandArg::SelfTest => FleetCommandBody::SelfTest {},
            CommandArg::ReloadProfiles => FleetCommandBody::ReloadProfiles {},
            CommandArg::SetLogLevel { level, expires_in } => {
                // Through JSON, so the 24 h limit is checked in one place.
                FleetCommandBody::from_json(
                    &serde_json::json!({
                        "command": "set_log_level",
                        "level": level,
                        "expires_in": humantime::format_duration(expires_in).to_string(),
                    })
                    .to_string(),
                )?
            }
            CommandArg::UploadDiagnostics { url } => {
                FleetCommandBody::UploadDiagnostics { url: url.parse()? }
            }
            CommandArg::Json { json } => FleetCommandBody::from_json(&json)?,
        })
    }
}

/// `--expires`: a duration from now, or an absolute RFC 3339 time.
#[derive(Clone, Copy, Debug)]
enum Expiry {
    In(Duration),
    At(SystemTime),
}

impl Expiry {
    fn at(self, now: SystemTime) -> SystemTime {
        match self {
            Expiry::In(d) => now + d,
            Expiry::At(t) => t,
        }
    }
}

fn parse_expiry(s: &str) -> Result<Expiry, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(Expiry::In(d));
    }
    fleet::parse_time(s).map(Expiry::At).map_err(|_| {
        format!("{s:?}: expected a duration (\"30m\", \"7d\") or an RFC 3339 time in UTC")
    })
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Validate NDJSON files, gzip them and write manifest.json into OUT.
    Build {
        /// Central version of the snapshot.
        #[arg(long)]
        version: u64,
        /// Output directory (served over HTTPS to agents).
        #[arg(long)]
        out: PathBuf,
        /// STREAM=FILE pairs, e.g. products=products.ndjson
        #[arg(required = true, value_parser = parse_input)]
        inputs: Vec<(Stream, PathBuf)>,
    },
}

#[derive(Subcommand)]
enum SimulateCommand {
    /// Many agents in one process, each on its own MQTT connection speaking the real contract
    /// (birth and Will, numbered store facts, resends until central's ack, facts reports);
    /// prints the latency from each fact's commit to central's ack for it.
    Fleet {
        #[command(flatten)]
        broker: BrokerArgs,
        #[arg(long, default_value_t = 100)]
        agents: usize,
        /// Store facts per second per agent.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Agent ids are PREFIX-00000/till-1, PREFIX-00001/till-1, …
        #[arg(long, default_value = "sim")]
        prefix: String,
        /// Resend a fact central has not acknowledged after this long.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ack_timeout: Duration,
        /// After --duration, how long to wait for the last acks.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        drain: Duration,
        /// Facts committed in the first WARMUP (every agent connecting) are left out of the
        /// steady-state latency (still in `latency_all_ms`).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Store facts each agent holds before it connects (a store back from being offline):
        /// sent at once in batches and resent until acknowledged, which loads the ingest as
        /// fast as it acknowledges (bench/ingest_pg.sh). Agents then connect all at once.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
        backlog: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Online/offline, software, backlog and replica versions of every agent.
    Status {
        #[command(flatten)]
        broker: BrokerArgs,
        #[arg(long)]
        json: bool,
        /// Stop listening after this long without a new state.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        settle: Duration,
    },
}

fn parse_input(s: &str) -> Result<(Stream, PathBuf), String> {
    let (stream, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected STREAM=FILE, e.g. products=products.ndjson"))?;
    let stream = Stream::ALL
        .into_iter()
        .find(|st| st.name() == stream)
        .ok_or_else(|| {
            format!(
                "unknown stream {stream:?}; one of products, prices, stock, customers, reservations"
            )
        })?;
    Ok((stream, PathBuf::from(path)))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RELAISCTL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen { out, name } => {
            let generated = fleet::generate_key_files(&out, &name)?;
            println!(
                "private key: {} (mode 0600; keep it in the ops vault, never on a store box)",
                generated.private_key.display()
            );
            println!("public key:  {}", generated.public_key.display());
            println!("key id:      {}", generated.public.key_id());
            println!();
            println!("Agents accept documents signed with this key once they pin its public key:");
            println!(
                "ship {} in the provisioning bundle and point fleet.ops_public_keys_file at it",
                generated.public_key.display()
            );
            println!("(while rotating, that file lists the old and the new key, one per line):");
            println!("  {}", generated.public.to_line());
        }
        Command::Config { command } => return config_command(command).await,
        Command::Cmd {
            command:
                CmdCommand::Send {
                    broker,
                    agent,
                    key,
                    id,
                    expires,
                    timeout,
                    json,
                    command,
                },
        } => {
            let agent_id: AgentId = agent
                .parse()
                .with_context(|| format!("--agent {agent:?} (a command goes to one agent)"))?;
            let key = SigningKey::read_file(&key)?;
            let body = command.build()?;
            let now = SystemTime::now();
            let lifetime = expires
                .at(now)
                .duration_since(now)
                .map_err(|_| anyhow::anyhow!("--expires is in the past"))?;
            let version = id.unwrap_or_else(|| relais::storage::now_unix_ms().max(1) as u64);
            let draft = Draft::command(
                Audience::Agent(agent_id.clone()),
                version,
                &body,
                now,
                lifetime,
            )?;
            let doc = fleet::sign(&draft, &key)?;
            let outcome =
                central::ops::send_command(&broker.login(), &agent_id, &doc, timeout).await?;
            let code = central::ops::command_exit_code(&outcome);
            if json {
                println!("{}", serde_json::to_string_pretty(&outcome)?);
            }
            match &outcome {
                central::ops::CommandOutcome::Answered { result } => {
                    if !json {
                        println!(
                            "{agent_id}: {} {}: {}",
                            body.name(),
                            result.status.name(),
                            result.message
                        );
                        if let Some(data) = &result.data {
                            println!("{}", serde_json::to_string_pretty(data)?);
                        }
                    }
                }
                central::ops::CommandOutcome::NotSubscribed => eprintln!(
                    "error: nobody subscribes to {agent_id}'s cmd/req: the agent is offline (or runs a version without remote commands). \
                     Commands are not queued; check `relaisctl fleet status` and send it again once the agent is online"
                ),
                central::ops::CommandOutcome::TimedOut => eprintln!(
                    "error: no answer from {agent_id} to command {version} within {}: the agent may be busy or offline \
                     (see `relaisctl fleet status`). The command stays valid until {}; sending it again gives it a new id",
                    humantime::format_duration(timeout),
                    doc.expires_at.as_deref().unwrap_or("?")
                ),
                central::ops::CommandOutcome::Refused { reason } => eprintln!(
                    "error: the broker refused the publish to {agent_id}'s cmd/req ({reason}): check that --username may write relais/v1/#"
                ),
            }
            return Ok(ExitCode::from(code));
        }
        Command::Snapshot {
            command:
                SnapshotCommand::Build {
                    version,
                    out,
                    inputs,
                },
        } => {
            let manifest = tokio::task::spawn_blocking(move || {
                central::snapshot::build(&inputs, version, &out).map(|m| (m, out))
            })
            .await
            .context("snapshot build task")?;
            let (manifest, out) = manifest?;
            for entry in &manifest.streams {
                println!(
                    "{:<13} version {:<8} {:>12} bytes  sha256 {}  {}",
                    entry.stream.name(),
                    entry.version,
                    entry.bytes,
                    entry.sha256,
                    entry.file
                );
            }
            println!("manifest: {}", out.join("manifest.json").display());
        }
        Command::Publish {
            broker,
            agent,
            deltas,
            heartbeat,
            current_version,
            refetch,
            manifest_url,
            reason,
        } => {
            agent
                .parse::<relais::config::AgentId>()
                .with_context(|| format!("--agent {agent:?}"))?;
            let message = match (deltas, refetch, heartbeat.zip(current_version)) {
                (Some(path), None, None) => {
                    central::publish::Message::Deltas(central::publish::read_deltas(&path)?)
                }
                (None, Some(stream), None) => central::publish::Message::Refetch {
                    stream,
                    manifest_url,
                    reason,
                },
                (None, None, Some((stream, version))) => {
                    central::publish::Message::Heartbeat { stream, version }
                }
                _ => anyhow::bail!(
                    "give --deltas FILE, --refetch STREAM, or --heartbeat STREAM --current-version N"
                ),
            };
            let sent = central::publish::publish(&broker.login(), &agent, message).await?;
            println!("published {sent} message(s) to {agent}");
        }
        Command::Ingest {
            broker,
            sink,
            client_id,
            no_ack,
            share,
            stop_after,
            idle_exit,
            json,
        } => {
            if let Some(group) = &share
                && !central::ingest::valid_share_group(group)
            {
                anyhow::bail!(
                    "--share {group:?}: a group name is 1 to 64 letters, digits, '-' or '_'"
                );
            }
            let options = central::ingest::IngestOptions {
                login: broker.login(),
                sink: central::sink::SinkTarget::parse(&sink)?,
                client_id,
                send_acks: !no_ack,
                share_group: share,
                stop_after_events: stop_after,
                idle_exit,
            };
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let report = central::ingest::run(options, shutdown).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let held = report
                    .sink_total
                    .map(|n| format!("; sink holds {n} events"))
                    .unwrap_or_default();
                println!(
                    "{} messages, {} events ({} new, {} duplicates), {} refused{held}; {:.1} s",
                    report.messages,
                    report.events_received,
                    report.events_new,
                    report.duplicates,
                    report.rejected_messages,
                    report.seconds
                );
            }
        }
        Command::Simulate {
            command:
                SimulateCommand::Fleet {
                    broker,
                    agents,
                    rate,
                    duration,
                    prefix,
                    ack_timeout,
                    drain,
                    warmup,
                    backlog,
                    json,
                },
        } => {
            if !central::ingest::valid_share_group(&prefix) {
                anyhow::bail!("--prefix {prefix:?}: 1 to 64 letters, digits, '-' or '_'");
            }
            let report = central::simulate::run(central::simulate::FleetOptions {
                login: broker.login(),
                agents,
                rate,
                duration,
                prefix,
                ack_timeout,
                drain,
                warmup,
                backlog,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{} agents ({} connected) at {}/s each: {} facts committed, {} acknowledged \
                     ({:.0}/s), {} never, {} resent; commit → central ack after the warm-up: \
                     p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    report.agents,
                    report.connected,
                    report.rate_per_agent,
                    report.committed,
                    report.acked,
                    report.acked_per_s,
                    report.unacked,
                    report.resent,
                    report.latency_ms.p50,
                    report.latency_ms.p99,
                    report.latency_ms.max
                );
            }
            if report.unacked > 0 {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Ledger { command } => ledger_cli::run(command).await?,
        Command::Schemas { out } => {
            let written = relais::sync::schemas::write_all(&out)?;
            println!("wrote {} schemas under {}", written.len(), out.display());
        }
        Command::Facts { sink, json } => {
            let target = central::sink::SinkTarget::parse(&sink)?;
            let rows = central::sink::Sink::open(&target, false)
                .await?
                .facts()
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no numbered store fact in {target} yet");
            } else {
                println!(
                    "{:<24} {:>10} {:>10} {:>10} {:>8} {:>12}  state",
                    "agent", "epoch", "held", "reported", "missing", "watermark"
                );
                for r in rows {
                    let state = if r.superseded && r.missing > 0 {
                        "lost: the agent's outbox was replaced"
                    } else if r.superseded {
                        "closed"
                    } else if r.missing > 0 {
                        "waiting for facts"
                    } else if r.reported == 0 {
                        "no report yet"
                    } else {
                        "complete"
                    };
                    println!(
                        "{:<24} {:>10} {:>10} {:>10} {:>8} {:>12}  {state}",
                        r.agent, r.epoch, r.contiguous, r.reported, r.missing, r.watermark_seq
                    );
                }
            }
        }
        Command::Fleet {
            command:
                FleetCommand::Status {
                    broker,
                    json,
                    settle,
                },
        } => {
            let entries =
                central::fleet::collect(&broker.login(), settle, Duration::from_secs(30)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else if entries.is_empty() {
                println!("no agent has reported a state on this broker yet");
            } else {
                print!(
                    "{}",
                    central::fleet::render(&entries, relais::storage::now_unix_ms())
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn config_command(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Sign {
            key,
            agent,
            version,
            expires,
            file,
            out,
        } => {
            let audience: Audience = agent.parse()?;
            let key = SigningKey::read_file(&key)?;
            let doc = sign_config(&key, audience, version, expires, &file)?;
            let text = doc.to_json_pretty() + "\n";
            match out {
                Some(out) => {
                    relais::storage::write_file_atomically(&out, text.as_bytes(), 0o644)
                        .with_context(|| format!("writing {}", out.display()))?;
                    println!(
                        "signed config version {version} for {} with key {} -> {}",
                        doc.agent,
                        doc.key_id,
                        out.display()
                    );
                }
                None => print!("{text}"),
            }
        }
        ConfigCommand::Push {
            broker,
            agent,
            agents_file,
            signed,
            key,
            version,
            expires,
            file,
            no_wait,
            timeout,
            json,
        } => {
            let targets = match (agent, agents_file) {
                (Some(agent), None) if agent == fleet::FLEET_WIDE => anyhow::bail!(
                    "--agent '*' is not a topic: a fleet-wide document is pushed to each agent's own cfg/desired; \
                     list them with --agents-file FILE (one STORE/AGENT per line)"
                ),
                (Some(agent), None) => vec![
                    agent
                        .parse::<AgentId>()
                        .with_context(|| format!("--agent {agent:?}"))?,
                ],
                (None, Some(path)) => central::ops::read_agents_file(&path)?,
                _ => anyhow::bail!("give --agent STORE/AGENT or --agents-file FILE"),
            };
            let docs = match (signed, key, version, file) {
                (Some(path), None, None, None) => {
                    let doc =
                        central::ops::read_signed(&path, fleet::DocumentKind::Config, &targets)?;
                    targets.into_iter().map(|t| (t, doc.clone())).collect()
                }
                (None, Some(key), Some(version), Some(file)) => {
                    // One document per agent rather than one '*' document: each can only
                    // ever be applied by the agent it names.
                    let key = SigningKey::read_file(&key)?;
                    let mut docs = Vec::with_capacity(targets.len());
                    for target in targets {
                        let doc = sign_config(
                            &key,
                            Audience::Agent(target.clone()),
                            version,
                            expires,
                            &file,
                        )?;
                        docs.push((target, doc));
                    }
                    docs
                }
                _ => anyhow::bail!("give --signed DOC.json, or --key KEY --version N FILE.toml"),
            };
            let wait = (!no_wait).then_some(timeout);
            let results = central::ops::push_config(&broker.login(), docs, wait).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                print!("{}", central::ops::render_push(&results, timeout));
            }
            return Ok(ExitCode::from(central::ops::push_exit_code(&results)));
        }
        ConfigCommand::Verify {
            public_keys,
            agent,
            file,
        } => {
            let me: AgentId = agent
                .parse()
                .with_context(|| format!("--agent {agent:?}"))?;
            let mut pinned = Vec::new();
            for path in &public_keys {
                pinned.extend(fleet::read_public_keys(path)?);
            }
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let verified = fleet::verify(&bytes, &pinned, &me, SystemTime::now())?;
            println!(
                "valid {} document version {} for {} (signed by key {}, issued {}{})",
                verified.kind,
                verified.version,
                verified.audience,
                verified.key_id,
                fleet::format_time(verified.issued_at),
                verified
                    .expires_at
                    .map(|t| format!(", expires {}", fleet::format_time(t)))
                    .unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sign FILE (TOML) as a config document. The TOML is only parsed here; the agent validates
/// the settings themselves and reports what it refused.
fn sign_config(
    key: &SigningKey,
    audience: Audience,
    version: u64,
    expires: Option<Expiry>,
    file: &Path,
) -> anyhow::Result<fleet::SignedDocument> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    if let Err(e) = toml::from_str::<toml::Table>(&text) {
        anyhow::bail!("{} is not valid TOML: {e}", file.display());
    }
    let now = SystemTime::now();
    let mut draft = Draft::config(audience, version, text, now);
    draft.expires_at = expires.map(|e| e.at(now));
    Ok(fleet::sign(&draft, key)?)
}
