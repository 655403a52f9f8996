//! `relaisctl`: central-side tools for Relais — build snapshots, publish deltas, ingest events
//! (the reference consumer), and see the fleet. What an integrator starts from.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use relais::central::{self, BrokerLogin};
use relais::config::BrokerUrl;
use relais::replica::Stream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// Publish replica deltas (NDJSON, one delta per line) or a must_refetch to one agent.
    Publish {
        #[command(flatten)]
        broker: BrokerArgs,
        /// STORE/AGENT
        #[arg(long)]
        agent: String,
        /// Deltas to send, in order.
        #[arg(long, conflicts_with = "refetch")]
        deltas: Option<PathBuf>,
        /// Tell the agent to refetch this stream's snapshot.
        #[arg(long, value_enum)]
        refetch: Option<Stream>,
        #[arg(long, requires = "refetch")]
        manifest_url: Option<String>,
        #[arg(long, requires = "refetch")]
        reason: Option<String>,
    },
    /// Reference consumer: every agent's events into a SQLite sink, deduplicated, acknowledged.
    Ingest {
        #[command(flatten)]
        broker: BrokerArgs,
        /// SQLite file for the events.
        #[arg(long)]
        sink: PathBuf,
        /// MQTT client id (the broker keeps this session's queue while the ingest is down).
        #[arg(long, default_value = "relais-ingest")]
        client_id: String,
        /// Do not send the end-to-end `ack` to agents.
        #[arg(long)]
        no_ack: bool,
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
    /// The fleet as the agents last reported it.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
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
            refetch,
            manifest_url,
            reason,
        } => {
            agent
                .parse::<relais::config::AgentId>()
                .with_context(|| format!("--agent {agent:?}"))?;
            let message = match (deltas, refetch) {
                (Some(path), None) => {
                    central::publish::Message::Deltas(central::publish::read_deltas(&path)?)
                }
                (None, Some(stream)) => central::publish::Message::Refetch {
                    stream,
                    manifest_url,
                    reason,
                },
                _ => anyhow::bail!("give --deltas FILE or --refetch STREAM"),
            };
            let sent = central::publish::publish(&broker.login(), &agent, message).await?;
            println!("published {sent} message(s) to {agent}");
        }
        Command::Ingest {
            broker,
            sink,
            client_id,
            no_ack,
            stop_after,
            idle_exit,
            json,
        } => {
            let options = central::ingest::IngestOptions {
                login: broker.login(),
                sink,
                client_id,
                send_acks: !no_ack,
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
                println!(
                    "{} messages, {} events ({} new, {} duplicates), {} refused; sink holds {} events; {:.1} s",
                    report.messages,
                    report.events_received,
                    report.events_new,
                    report.duplicates,
                    report.rejected_messages,
                    report.sink_total,
                    report.seconds
                );
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
