//! `relaisctl ledger …`: the reference ledger's commands (docs/ledger.md).

use super::BrokerArgs;
use clap::Subcommand;
use relais::central::ledger::{self, Seed};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[arg(long, env = "RELAISCTL_SINK")]
    sink: String,
    #[arg(long, default_value = "relais-ledger")]
    client_id: String,
    /// Directory of the agents' snapshots, served over HTTPS at --snapshot-base-url.
    #[arg(long, required_unless_present = "apply_only")]
    snapshot_dir: Option<PathBuf>,
    /// HTTPS URL the --snapshot-dir is served at.
    #[arg(long, required_unless_present = "apply_only")]
    snapshot_base_url: Option<String>,
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    interval: Duration,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    heartbeat_every: Duration,
    /// Apply facts only and send agents nothing (--snapshot-* are then unused).
    #[arg(long)]
    apply_only: bool,
    #[arg(long)]
    json: bool,
}

// Parsed once per run: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Load central's baseline: stock lines of a store (STORE=FILE) and customer lines
    /// (snapshot formats). Replaces the figures the files name.
    Seed {
        /// The ingest's database, shared with `relaisctl ingest`: a SQLite file or
        /// postgres://USER@HOST:PORT/DB.
        #[arg(long, env = "RELAISCTL_SINK")]
        sink: String,
        /// STORE=FILE: stock lines (`{"sku","on_hand"}`) of one store; repeatable.
        #[arg(long = "stock", value_name = "STORE=FILE")]
        stock: Vec<String>,
        /// Customer lines (docs/snapshot-format.md "customers").
        #[arg(long)]
        customers: Option<PathBuf>,
    },
    /// Apply central's own operations (web orders, cancellations, web returns, web loyalty,
    /// warehouse receipts, erasures) from an NDJSON file; each `op_id` is applied once.
    Web {
        #[arg(long, env = "RELAISCTL_SINK")]
        sink: String,
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Apply what the ingest holds (once, in fact order) and print the ledger's figures.
    Show {
        #[arg(long, env = "RELAISCTL_SINK")]
        sink: String,
        #[arg(long)]
        json: bool,
    },
    /// Write a snapshot of the ledger's streams for one agent under --out (STORE/AGENT/manifest.json).
    Snapshot {
        #[arg(long, env = "RELAISCTL_SINK")]
        sink: String,
        /// STORE/AGENT.
        #[arg(long)]
        agent: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the ledger: apply ingested facts as they arrive and keep every online agent's
    /// stock, customers and order lines at the ledger's figures.
    Run(RunArgs),
}

pub async fn run(command: LedgerCommand) -> anyhow::Result<()> {
    match command {
        LedgerCommand::Run(args) => run_ledger(args).await,
        // Blocking database work (a PostgreSQL client blocks on a runtime of its own).
        other => tokio::task::block_in_place(|| once(other)),
    }
}

/// The commands that do their work once and return.
fn once(command: LedgerCommand) -> anyhow::Result<()> {
    match command {
        LedgerCommand::Seed {
            sink,
            stock,
            customers,
        } => {
            let mut db = ledger::open(&sink)?;
            for spec in stock {
                let Some((store, path)) = spec.split_once('=') else {
                    anyhow::bail!("--stock {spec:?}: expected STORE=FILE");
                };
                let rows = ledger::seed(
                    &mut db,
                    &Seed::Stock {
                        store: store.to_owned(),
                        path: path.into(),
                    },
                )?;
                println!("stock of {store}: {rows} rows");
            }
            if let Some(path) = customers {
                let rows = ledger::seed(&mut db, &Seed::Customers { path })?;
                println!("customers: {rows} rows");
            }
        }
        LedgerCommand::Web { sink, file, json } => {
            let mut db = ledger::open(&sink)?;
            let report = ledger::web::apply_file(&mut db, &file)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{} operations applied, {} already applied before, {} refused",
                    report.applied,
                    report.already_applied,
                    report.refused.len()
                );
                for refused in &report.refused {
                    println!(
                        "refused {}: {} ({})",
                        refused.op_id, refused.code, refused.reason
                    );
                }
            }
        }
        LedgerCommand::Show { sink, json } => {
            let mut db = ledger::open(&sink)?;
            let applied = ledger::apply_ingested(&mut db)?;
            let figures = ledger::figures(&mut db)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                println!(
                    "applied {} new facts ({} skipped: see ledger_rejects)",
                    applied.facts, applied.rejected
                );
                println!(
                    "{:<16} {:<24} {:>10} {:>10}",
                    "store", "sku", "on_hand", "reserved"
                );
                for (store, sku, on_hand) in &figures.stock {
                    let reserved = figures
                        .reserved
                        .iter()
                        .find(|(s, k, _)| s == store && k == sku)
                        .map_or(0, |r| r.2);
                    println!("{store:<16} {sku:<24} {on_hand:>10} {reserved:>10}");
                }
                println!("{:<24} {:>10}", "customer", "balance");
                for (customer, balance) in &figures.balances {
                    println!("{customer:<24} {balance:>10}");
                }
                if !figures.coupon_duplicates.is_empty() {
                    println!(
                        "single-use coupons taken again (for the issuer's clearing or the store's loss report):"
                    );
                    for d in &figures.coupon_duplicates {
                        println!(
                            "{} by {} (fact {}), first taken by {} (fact {})",
                            d.coupon, d.agent, d.fact_seq, d.first_agent, d.first_fact_seq
                        );
                    }
                }
            }
        }
        LedgerCommand::Snapshot { sink, agent, out } => {
            let mut db = ledger::open(&sink)?;
            ledger::apply_ingested(&mut db)?;
            let version = ledger::downlink::build_snapshot(&mut db, &out, &agent)?;
            println!(
                "{}: version {version}",
                ledger::downlink::snapshot_dir(&out, &agent)
                    .join("manifest.json")
                    .display()
            );
        }
        LedgerCommand::Run(_) => anyhow::bail!("`ledger run` is a loop, not a one-off command"),
    }
    Ok(())
}

async fn run_ledger(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
        broker,
        sink,
        client_id,
        snapshot_dir,
        snapshot_base_url,
        interval,
        heartbeat_every,
        apply_only,
        json,
    } = args;
    let snapshot_base_url = snapshot_base_url.unwrap_or_default();
    if !apply_only && !snapshot_base_url.starts_with("https://") {
        anyhow::bail!(
            "--snapshot-base-url must be https:// (agents fetch snapshots over HTTPS only)"
        );
    }
    let options = ledger::run::LedgerOptions {
        login: broker.login(),
        sink,
        client_id,
        snapshot_root: snapshot_dir.unwrap_or_default(),
        snapshot_base_url,
        interval,
        heartbeat_every,
        apply_only,
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let report = ledger::run::run(options, shutdown).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "ledger: {} facts applied ({} skipped), {} births, {} deltas ({} rows), {} snapshots in {:.1} s; \
             agent commit → ledger commit p50 {} ms, p99 {} ms, max {} ms",
            report.facts_applied,
            report.rejected,
            report.births,
            report.deltas_sent,
            report.rows_sent,
            report.snapshots,
            report.seconds,
            report.commit_to_ledger_ms.p50,
            report.commit_to_ledger_ms.p99,
            report.commit_to_ledger_ms.max
        );
    }
    Ok(())
}
