//! The `relais` binary: command-line edge. Parses arguments, loads config, maps errors to exit
//! statuses (78 for config errors, as systemd's `RestartPreventExitStatus` expects) and calls
//! the library. `anyhow` lives only here.

use clap::{Parser, Subcommand};
use relais::config::{Config, ConfigError, ConfigSource};
use relais::replica::Stream;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

mod commands;

#[derive(Parser)]
#[command(
    name = "relais",
    version,
    about = "In-store edge agent: devices, offline replica, durable outbox, sync"
)]
struct Cli {
    /// Config file [default: /etc/relais/relais.toml, or built-in defaults when it does not exist]
    #[arg(long, global = true, env = "RELAIS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (storage, local API) until SIGTERM/SIGINT
    Run,
    /// Seed a realistic demo store into a scratch directory, then run the agent on it
    Demo(commands::demo::DemoArgs),
    /// Check or print configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Snapshot import and replica status
    #[command(subcommand)]
    Replica(ReplicaCommand),
    /// Look up a product by barcode or a customer by card, as a till would
    #[command(subcommand)]
    Lookup(LookupCommand),
    /// Inspect the outbox of store facts and telemetry
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// The running agent's alarms
    #[command(subcommand)]
    Alarms(AlarmsCommand),
    /// Decode barcodes (GTIN, GS1, AIM, Digital Link) and EPC tags
    Decode(commands::decode::DecodeArgs),
    /// Store hardware: what is connected, and live decoded reads
    #[command(subcommand)]
    Devices(commands::devices::DevicesCommand),
    /// Check this box and explain each problem with its fix; exit 0 all pass, 1 a warning,
    /// 2 a failure
    Doctor {
        #[arg(long)]
        json: bool,
        /// The account the agent runs as, whose permissions are checked (default: the unit's
        /// User=, else relais)
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Install a provisioning bundle from central ops: identity, broker, certificates, keys,
    /// tokens; exit 78 when the bundle is refused (nothing is written)
    Provision(commands::provision::ProvisionArgs),
    /// The box label: agent id, store, client certificate (subject, issuer, serial, expiry),
    /// pinned ops key ids and broker, with a QR code of them (terminal, --png for the
    /// sticker); exit 78 when the box is not provisioned
    Identity(commands::identity::IdentityArgs),
    /// The agent's journal (`journalctl -u relais`) with tokens, passwords and private keys
    /// redacted, for a technician to read or paste into a ticket
    Logs(commands::logs::LogsArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file; exit 0 when valid, 78 with every problem listed when not
    Validate { path: PathBuf },
    /// Print the effective config (defaults included) as TOML
    Show,
}

#[derive(Subcommand)]
enum ReplicaCommand {
    /// Import an NDJSON snapshot (plain or .gz) of one stream, atomically
    Import {
        #[arg(long, value_enum)]
        stream: Stream,
        path: PathBuf,
        /// Central's version of this snapshot [default: current version + 1]
        #[arg(long)]
        version: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Versions, ages and row counts of every stream
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum LookupCommand {
    /// Product, effective price and stock by EAN-8/UPC-A/EAN-13/GTIN-14.
    /// Exit: 0 found, 3 found but stale, 4 not found, 65 invalid code
    Barcode {
        code: String,
        #[arg(long)]
        json: bool,
    },
    /// Customer and loyalty balance by card number or NFC UID (hashed before lookup).
    /// Exit: 0 found, 3 found but stale, 4 not found, 65 invalid identifier
    Card {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Depth per retention class, oldest unsent age, bytes
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Print the newest events as JSON lines
    Tail {
        /// How many of the newest events
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        /// Keep printing new events as they are recorded
        #[arg(short, long)]
        follow: bool,
    },
    /// Send the dead letters (facts the broker refused) again, once their cause is fixed; run
    /// on the box with sudo (no API token needed)
    Requeue,
}

#[derive(Subcommand)]
enum AlarmsCommand {
    /// Acknowledge a handled alarm (the code as `relais doctor` and /v1/health name it, e.g.
    /// disk_low); run on the box with sudo (no API token needed). Exit 3: no such alarm
    Ack { code: String },
}

fn main() -> ExitCode {
    // One crypto provider for every TLS client of the process (broker, snapshots): ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = dispatch(cli);
    let _ = std::io::stdout().flush();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // A token file that cannot be used is configuration too: restarting will not help.
            if let Some(relais::agent::AgentError::ApiTokens(token_error)) = e.downcast_ref() {
                eprintln!("relais: configuration error:\n{token_error}");
                return ExitCode::from(ConfigError::EXIT_CODE as u8);
            }
            if let Some(config_error) = e.downcast_ref::<ConfigError>() {
                eprintln!("relais: configuration error:\n{config_error}");
                return ExitCode::from(ConfigError::EXIT_CODE as u8);
            }
            // `relais outbox tail | head` closing the pipe is not an error worth a message.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            // Our error messages already carry their cause; printing the chain would repeat it.
            eprintln!("relais: {e}");
            ExitCode::from(1)
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<(Config, ConfigSource)> {
    Ok(Config::load(path)?)
}

pub fn init_logging(config: &Config) -> relais::logging::LogControl {
    relais::logging::init(config)
}

fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let config_path = cli.config.as_deref();
    match cli.command {
        Command::Run => {
            let (config, source) = load_config(config_path)?;
            let log = init_logging(&config);
            log_source(&source);
            commands::run_agent(config, &source, log)?;
            Ok(0)
        }
        Command::Demo(args) => commands::demo::run(args, config_path),
        Command::Config(ConfigCommand::Validate { path }) => {
            Config::load(Some(&path))?;
            println!("{}: valid", path.display());
            Ok(0)
        }
        Command::Config(ConfigCommand::Show) => {
            let (config, source) = load_config(config_path)?;
            let (text, origin) = match &source {
                ConfigSource::File(p) => (std::fs::read_to_string(p)?, p.clone()),
                ConfigSource::BuiltInDefaults => {
                    (String::new(), std::path::PathBuf::from("built-in defaults"))
                }
            };
            let remote = relais::agent::stored_remote_layer(&config);
            println!(
                "# effective config: defaults < {source} < remote {} (the source of each value after it)",
                remote
                    .as_ref()
                    .map_or_else(|| "(none)".to_owned(), |r| format!("v{}", r.version))
            );
            let layered = relais::config::layers::merge(&text, &origin, remote.as_ref())?;
            print!("{}", relais::config::layers::annotated_toml(&layered));
            Ok(0)
        }
        Command::Replica(ReplicaCommand::Import {
            stream,
            path,
            version,
            json,
        }) => {
            let (config, _) = load_config(config_path)?;
            init_logging(&config);
            commands::replica_import(&config, stream, &path, version, json)
        }
        Command::Replica(ReplicaCommand::Status { json }) => {
            let (config, _) = load_config(config_path)?;
            commands::replica_status(&config, json)
        }
        Command::Lookup(LookupCommand::Barcode { code, json }) => {
            let (config, _) = load_config(config_path)?;
            commands::lookup_barcode(&config, &code, json)
        }
        Command::Lookup(LookupCommand::Card { id, json }) => {
            let (config, _) = load_config(config_path)?;
            commands::lookup_card(&config, &id, json)
        }
        Command::Outbox(OutboxCommand::Stats { json }) => {
            let (config, _) = load_config(config_path)?;
            commands::outbox_stats(&config, json)
        }
        Command::Outbox(OutboxCommand::Tail { lines, follow }) => {
            let (config, _) = load_config(config_path)?;
            commands::outbox_tail(&config, lines, follow)
        }
        Command::Outbox(OutboxCommand::Requeue) => {
            let (config, _) = load_config(config_path)?;
            Ok(commands::admin::requeue_dead_letters(&config))
        }
        Command::Alarms(AlarmsCommand::Ack { code }) => {
            let (config, _) = load_config(config_path)?;
            Ok(commands::admin::acknowledge_alarm(&config, &code))
        }
        Command::Decode(args) => commands::decode::run(args),
        Command::Devices(command) => {
            let (config, _) = load_config(config_path)?;
            init_logging(&config);
            commands::devices::run(command, &config)
        }
        // The doctor loads the config itself: an invalid config is one of its findings.
        Command::Doctor { json, user } => commands::doctor::run(config_path, json, user.as_deref()),
        // The global --config names the file the bundle is merged into (created if missing).
        Command::Provision(args) => Ok(commands::provision::run(args, config_path)),
        Command::Identity(args) => {
            let (config, source) = load_config(config_path)?;
            commands::identity::run(&args, &config, &source)
        }
        // A config that does not load must not keep a technician from the logs saying why.
        Command::Logs(args) => commands::logs::run(&args, Config::load(config_path)),
    }
}

fn log_source(source: &ConfigSource) {
    match source {
        ConfigSource::File(p) => tracing::info!(config = %p.display(), "config loaded"),
        ConfigSource::BuiltInDefaults => tracing::info!(
            "no config file at {}: running on built-in defaults (offline, loopback API)",
            relais::config::DEFAULT_CONFIG_PATH
        ),
    }
}
