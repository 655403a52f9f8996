//! Command implementations: thin glue from parsed arguments to the library, and the
//! human-readable renderings a technician reads.

pub mod admin;
pub mod decode;
pub mod demo;
pub mod devices;
pub mod doctor;
pub mod identity;
pub mod logs;
pub mod provision;

use relais::agent::{self, DataPaths};
use relais::config::Config;
use relais::outbox::{self, RetentionClass};
use relais::replica::import::{self, Progress};
use relais::replica::lookup::{self, Answer, Freshness};
use relais::replica::{self, Stream};
use relais::storage;
use std::path::Path;

pub const EXIT_FOUND: u8 = 0;
pub const EXIT_STALE: u8 = 3;
pub const EXIT_NOT_FOUND: u8 = 4;
/// EX_DATAERR: the code or identifier itself is invalid.
pub const EXIT_INVALID: u8 = 65;

pub fn run_agent(
    config: Config,
    source: &relais::config::ConfigSource,
    log: relais::logging::LogControl,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("relais-core")
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    let file = match source {
        relais::config::ConfigSource::File(path) => Some(path.clone()),
        relais::config::ConfigSource::BuiltInDefaults => None,
    };
    runtime.block_on(agent::run(
        agent::Launch { config, file, log },
        agent::shutdown_signal(),
        |addr| {
            eprintln!("relais: listening on http://{addr} (Ctrl-C to stop)");
        },
    ))?;
    Ok(())
}

/// Make sure both databases exist at the current schema, for commands that run without the
/// agent. Creating the schema is idempotent and harmless while an agent runs.
fn prepare(config: &Config) -> anyhow::Result<DataPaths> {
    let paths = DataPaths::new(&config.agent.data_dir);
    storage::ensure_data_dir(&paths.dir)?;
    replica::open_writer(&paths.replica)?;
    outbox::writer::migrate_only(&paths.outbox)?;
    Ok(paths)
}

pub fn replica_import(
    config: &Config,
    stream: Stream,
    path: &Path,
    version: Option<u64>,
    json: bool,
) -> anyhow::Result<u8> {
    let paths = prepare(config)?;
    let report = import::import_file(&paths.replica, stream, path, version, Progress::Auto)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "imported {} {} rows in {:.2} s ({:.0} rows/s); {} version {} -> {}",
            report.rows,
            stream,
            report.seconds,
            report.rows_per_s,
            stream,
            report.previous_version,
            report.version
        );
    }
    Ok(0)
}

pub fn replica_status(config: &Config, json: bool) -> anyhow::Result<u8> {
    let paths = prepare(config)?;
    let conn = storage::open_reader(&paths.replica)?;
    let states = replica::stream_states(&conn)?;
    let fresh = lookup::freshness(
        &states,
        &Stream::ALL,
        storage::now_unix_ms(),
        config.replica.stale_after,
    );
    if json {
        println!("{}", serde_json::to_string(&fresh)?);
    } else {
        print_freshness(&fresh);
    }
    Ok(0)
}

/// One purpose's consent for a technician: the choice, where it comes from and when it was made.
fn consent_text(state: &lookup::PurposeState) -> String {
    let (Some(at_ms), Some(source)) = (state.at_ms, state.source) else {
        return "not asked (no consent)".to_owned();
    };
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(at_ms).unwrap_or(0));
    let source = match source {
        relais::domain::consent::ConsentSource::Central => "central",
        relais::domain::consent::ConsentSource::Store => "recorded here",
    };
    format!(
        "{} ({source}, {})",
        if state.granted { "yes" } else { "no" },
        humantime::format_rfc3339_seconds(at)
    )
}

fn print_freshness(fresh: &Freshness) {
    for s in &fresh.streams {
        let age = match s.age_s {
            Some(a) => format!(
                "updated {} ago",
                humantime::format_duration(std::time::Duration::from_secs(a as u64))
            ),
            None => "never loaded".to_string(),
        };
        let flag = if s.stale { "STALE" } else { "fresh" };
        println!("{:<13} v{:<8} {flag:<6} {age}", s.stream.name(), s.version);
    }
}

fn lookup_connection(config: &Config) -> anyhow::Result<rusqlite::Connection> {
    let paths = prepare(config)?;
    Ok(storage::reader_pool_connection(
        &paths.replica,
        &paths.outbox,
    )?)
}

fn money(minor: i64, currency: &str) -> String {
    let exponent = relais::decode::iso::currency_exponent(currency);
    let Some(scale) = 10i64.checked_pow(exponent).filter(|_| exponent > 0) else {
        return format!("{minor} {currency}");
    };
    format!(
        "{}.{:0width$} {currency}",
        minor / scale,
        (minor % scale).abs(),
        width = exponent as usize
    )
}

/// The "invalid" answer of a lookup: JSON on stdout for scripts, a sentence on stderr for people.
fn invalid_input(json: bool, what: &str, error: &dyn std::fmt::Display) -> u8 {
    if json {
        println!(
            "{}",
            serde_json::json!({"outcome": "invalid", "error": error.to_string()})
        );
    } else {
        eprintln!("{what}: {error}");
    }
    EXIT_INVALID
}

pub fn lookup_barcode(config: &Config, code: &str, json: bool) -> anyhow::Result<u8> {
    let conn = lookup_connection(config)?;
    let looked_up = lookup::decode_code(code).and_then(|decoded| {
        lookup::product_by_scan(
            &conn,
            &decoded,
            &config.scans.rules,
            storage::now_unix_ms(),
            relais::scan::today(),
            config.replica.stale_after,
        )
    });
    let answer = match looked_up {
        Ok(a) => a,
        Err(
            e @ (lookup::LookupError::InvalidCode(_)
            | lookup::LookupError::InvalidBarcode(_)
            | lookup::LookupError::NoGtin),
        ) => {
            return Ok(invalid_input(
                json,
                &format!("invalid barcode {code:?}"),
                &e,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string(&answer)?);
    }
    Ok(match answer {
        Answer::Found(p) => {
            if !json {
                println!("{}  {}  ({})", p.gtin, p.name, p.sku);
                match &p.price {
                    Some(price) => {
                        let was = price
                            .base_price_minor
                            .map(|b| format!(", was {}", money(b, &price.currency)))
                            .unwrap_or_default();
                        let promo = price
                            .promo_id
                            .as_deref()
                            .map(|id| format!(" promo {id}"))
                            .unwrap_or_default();
                        println!(
                            "price    {}{promo}{was}",
                            money(price.price_minor, &price.currency)
                        );
                    }
                    None => println!("price    none in effect now"),
                }
                match &p.stock {
                    Some(s) => println!(
                        "stock    on hand {}, reserved {}, available {}",
                        s.on_hand, s.reserved, s.available
                    ),
                    None => println!("stock    unknown"),
                }
                if let Some(scan) = &p.scan {
                    print_scan(scan);
                }
                print_freshness(&p.freshness);
            }
            if p.freshness.stale {
                EXIT_STALE
            } else {
                EXIT_FOUND
            }
        }
        Answer::NotFound { freshness } => {
            if !json {
                println!("not found: no product with GTIN {code} in the replica");
                print_freshness(&freshness);
            }
            EXIT_NOT_FOUND
        }
    })
}

/// What the scan adds to the product, for a person at the till.
fn print_scan(scan: &relais::scan::ScanFacts) {
    if let Some(charge) = &scan.price_to_charge {
        println!(
            "charge   {} ({})",
            money(charge.amount_minor, &charge.currency),
            charge.source.replace('_', " ")
        );
    }
    if let Some(kg) = &scan.net_weight_kg {
        println!("weight   {kg} kg");
    }
    if let Some(date) = &scan.expiry_date {
        let flag = if scan.expired == Some(true) {
            "  EXPIRED: do not sell"
        } else {
            ""
        };
        println!("expiry   {date}{flag}");
    }
    if let Some(date) = &scan.best_before {
        let flag = if scan.best_before_passed == Some(true) {
            "  passed"
        } else {
            ""
        };
        println!("best before {date}{flag}");
    }
    for (label, value) in [("lot", &scan.lot), ("serial", &scan.serial)] {
        if let Some(v) = value {
            println!("{label:<8} {v}");
        }
    }
}

pub fn lookup_card(config: &Config, id: &str, json: bool) -> anyhow::Result<u8> {
    let conn = lookup_connection(config)?;
    // Read-only: never create a key here, a lookup must not change the box.
    let hasher = relais::cards::CardHasher::load(&config.customers.card_hash_key_file)?;
    let answer = match lookup::customer_by_card(
        &conn,
        &hasher,
        id,
        storage::now_unix_ms(),
        config.replica.stale_after,
    ) {
        Ok(a) => a,
        Err(lookup::LookupError::InvalidCard(e)) => {
            return Ok(invalid_input(json, "invalid card identifier", &e));
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string(&answer)?);
    }
    Ok(match answer {
        Answer::Found(c) => {
            if !json {
                println!(
                    "{}  {}  tier {}",
                    c.customer_id,
                    c.display_name,
                    c.tier.as_deref().unwrap_or("-")
                );
                println!(
                    "loyalty  {} points ({} from central + {} pending local)",
                    c.loyalty.balance, c.loyalty.central_balance, c.loyalty.pending_local
                );
                println!(
                    "consent  marketing {} · profiling {}",
                    consent_text(&c.consent.marketing),
                    consent_text(&c.consent.profiling)
                );
                print_freshness(&c.freshness);
            }
            if c.freshness.stale {
                EXIT_STALE
            } else {
                EXIT_FOUND
            }
        }
        Answer::NotFound { freshness } => {
            if !json {
                println!("not found: no customer with this card in the replica");
                print_freshness(&freshness);
            }
            EXIT_NOT_FOUND
        }
    })
}

pub fn outbox_stats(config: &Config, json: bool) -> anyhow::Result<u8> {
    let paths = prepare(config)?;
    let conn = storage::open_reader(&paths.outbox)?;
    let stats = outbox::stats::read(&conn)?;
    // What the retention keeps and has pruned, per table (docs/privacy.md).
    let retention = outbox::stats::retention(&conn)?;
    let bytes_on_disk = ["", "-wal"]
        .iter()
        .filter_map(|suffix| {
            let mut p = paths.outbox.clone().into_os_string();
            p.push(suffix);
            std::fs::metadata(p).ok().map(|m| m.len())
        })
        .sum::<u64>();
    let now = storage::now_unix_ms();
    if json {
        let value = serde_json::json!({
            "store_fact": stats.store_fact,
            "telemetry": stats.telemetry,
            "last_seq": stats.last_seq,
            "boot": stats.boot,
            "oldest_unsent_store_fact_age_s": stats.oldest_store_fact_age_s(now),
            "bytes_on_disk": bytes_on_disk,
            "retention": retention,
            "history_keep_s": config.outbox.history_keep.as_secs(),
            "keys_keep_s": config.outbox.keys_keep.as_secs(),
            "returns_keep_s": config.outbox.returns_keep.as_secs(),
            "last_fact_seq": stats.last_fact_seq,
            "fact_epoch": stats.fact_epoch,
        });
        println!("{value}");
    } else {
        for class in RetentionClass::ALL {
            let c = stats.class(class);
            let age = c
                .oldest_unsent_ms
                .map(|ms| {
                    humantime::format_duration(std::time::Duration::from_secs(
                        ((now - ms).max(0) / 1000) as u64,
                    ))
                    .to_string()
                })
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<11} depth {:>9}  payload {:>10} B  oldest unsent {age}",
                class.name(),
                c.depth,
                c.bytes
            );
        }
        println!(
            "last seq {}  boot {}  on disk {} B  store facts numbered 1..{} (epoch {})",
            stats.last_seq, stats.boot, bytes_on_disk, stats.last_fact_seq, stats.fact_epoch
        );
        println!(
            "retention: history {}, keys {}, returns {} (then pruned once central has them)",
            humantime::format_duration(config.outbox.history_keep),
            humantime::format_duration(config.outbox.keys_keep),
            humantime::format_duration(config.outbox.returns_keep)
        );
        for table in &retention {
            let oldest = table
                .oldest_kept_ms
                .map(|ms| {
                    humantime::format_duration(std::time::Duration::from_secs(
                        ((now - ms).max(0) / 1000) as u64,
                    ))
                    .to_string()
                })
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<16} rows {:>9}  pruned {:>9}  oldest kept {oldest}",
                table.table, table.rows, table.pruned
            );
        }
    }
    Ok(0)
}

pub fn outbox_tail(config: &Config, lines: usize, follow: bool) -> anyhow::Result<u8> {
    let paths = prepare(config)?;
    let conn = storage::open_reader(&paths.outbox)?;
    let agent = config.agent.id.to_string();
    let mut last = 0u64;
    for event in outbox::stats::newest(&conn, &agent, lines)? {
        last = event.seq;
        println!("{}", serde_json::to_string(&event)?);
    }
    if !follow {
        return Ok(0);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        for event in outbox::stats::after(&conn, &agent, last, 1000)? {
            last = event.seq;
            println!("{}", serde_json::to_string(&event)?);
        }
    }
}
