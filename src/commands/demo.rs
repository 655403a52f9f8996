//! `relais demo`: a realistic store in a scratch directory, seeded once (idempotent), then the
//! agent runs on it. The newcomer's first command: useful with no broker and no config.

use super::prepare;
use relais::cards::CardHasher;
use relais::config::{Config, ConfigSource};
use relais::demo::{self, StoreSize};
use relais::replica::import::{self, Progress};
use relais::storage;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Scratch data directory for the demo store
    #[arg(long, default_value = "relais-demo")]
    dir: PathBuf,
    /// Number of products to generate
    #[arg(long, default_value_t = 5000)]
    products: u64,
    /// Number of customers to generate
    #[arg(long, default_value_t = 2000)]
    customers: u64,
    /// API address [default: api.listen from the config, 127.0.0.1:8750]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Seed the store and exit without running the agent
    #[arg(long)]
    seed_only: bool,
    /// Sync with this MQTT broker (e.g. mqtt://127.0.0.1:1883) [default: offline]
    #[arg(long)]
    broker: Option<relais::config::BrokerUrl>,
    /// Run without the simulated scanner and NFC reader (by default they scan demo products,
    /// scale labels, fresh food and loyalty cards every few seconds)
    #[arg(long)]
    no_simulated_devices: bool,
}

const SEED_MARKER: &str = "demo-seed.json";
/// `demo::customer_card_number`: "9250" and nine digits.
const DEMO_CARD_PREFIX: &str = "9250";
const DEMO_CARD_LENGTH: usize = 13;

pub fn run(args: DemoArgs, config_path: Option<&Path>) -> anyhow::Result<u8> {
    let (mut config, _source): (Config, ConfigSource) = Config::load(config_path)?;
    let dir = std::path::absolute(&args.dir)?;
    config.agent.data_dir = dir.clone();
    config.customers.card_hash_key_file = dir.join("card-hash.key");
    if let Some(listen) = args.listen {
        config.api.listen = listen;
    }
    if let Some(broker) = args.broker.clone() {
        config.sync.broker = Some(broker);
    }
    let log = crate::init_logging(&config);

    let paths = prepare(&config)?;
    let marker = dir.join(SEED_MARKER);
    let wanted =
        serde_json::json!({"products": args.products, "customers": args.customers, "format": 2});
    let seeded = std::fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v == wanted);
    if seeded {
        eprintln!(
            "relais demo: store already seeded in {} (delete the directory to reseed)",
            dir.display()
        );
    } else {
        eprintln!(
            "relais demo: seeding {} products and {} customers into {}",
            args.products,
            args.customers,
            dir.display()
        );
        let hasher = CardHasher::load_or_create(&config.customers.card_hash_key_file)?;
        let scratch = dir.join("snapshots");
        let store = demo::generate(
            &scratch,
            StoreSize {
                products: args.products,
                customers: args.customers,
            },
            &hasher,
            storage::now_unix_ms(),
        )?;
        demo::append_fresh_counter(&store, storage::now_unix_ms())?;
        for (stream, file) in &store.files {
            let report = import::import_file(&paths.replica, *stream, file, None, Progress::Quiet)?;
            eprintln!(
                "  {:<13} {:>7} rows  version {}",
                stream.name(),
                report.rows,
                report.version
            );
        }
        let _ = std::fs::remove_dir_all(&scratch);
        storage::write_file_atomically(&marker, wanted.to_string().as_bytes(), 0o644)?;
    }
    // The demo customers' loyalty cards, recognised when a scanner reads them.
    config.scans = config
        .scans
        .with_card_prefix("demo-loyalty", DEMO_CARD_PREFIX, DEMO_CARD_LENGTH)
        .map_err(|problems| anyhow::anyhow!("demo card pattern refused: {problems:?}"))?;
    if !args.no_simulated_devices {
        let simulated = relais::devices::simulated::SimulatedDevicesConfig {
            products: args.products,
            customers: args.customers,
            every: None,
        };
        config.devices = config
            .devices
            .with_simulated(&simulated)
            .map_err(|(key, why)| anyhow::anyhow!("{key}: {why}"))?;
    }
    let config_file = dir.join("relais.toml");
    storage::write_file_atomically(&config_file, config.to_toml().as_bytes(), 0o600)?;
    print_try_this(&paths.replica, &config_file, &config)?;
    if args.seed_only {
        return Ok(0);
    }
    super::run_agent(
        config,
        &relais::config::ConfigSource::File(config_file),
        log,
    )?;
    Ok(0)
}

fn print_try_this(replica: &Path, config_file: &Path, config: &Config) -> anyhow::Result<()> {
    let conn = storage::open_reader(replica)?;
    let gtin_where = |sql: &str| -> Option<String> {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .ok()
            .map(|g| format!("{g:014}"))
    };
    let promo = gtin_where(
        "SELECT p.gtin FROM products p JOIN prices pr ON pr.sku = p.sku WHERE pr.kind = 1 ORDER BY p.rowid LIMIT 1",
    );
    // The catalogue's first product, not the fresh counter's scale-label items.
    let plain = gtin_where("SELECT gtin FROM products WHERE sku LIKE 'SKU-%' ORDER BY sku LIMIT 1");
    let promo = promo.unwrap_or_else(|| plain.clone().unwrap_or_default());
    let plain = plain.unwrap_or_default();
    // EAN-13 is what a till actually scans: drop the GTIN-14 leading zero.
    let ean13 = plain.strip_prefix('0').unwrap_or(&plain).to_string();
    let addr = config.api.listen;
    // The binary's real path, so the commands work before `relais` is installed on PATH.
    let bin = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "relais".to_string());
    let cfg = config_file.display();
    println!(
        r#"
Relais demo store is ready. Try, from another terminal:

  # a product by EAN-13, with price, promotion and stock (JSON: add --json)
  {bin} --config {cfg} lookup barcode {ean13}
  {bin} --config {cfg} lookup barcode {promo}
  # a customer by loyalty card number or NFC UID (hashed before lookup)
  {bin} --config {cfg} lookup card {card}
  {bin} --config {cfg} lookup card {uid}

  # the local API
  curl -s http://{addr}/v1/products/{ean13}
  curl -s http://{addr}/v1/customers/by-card/{card}
  # a ticket of two items (send it twice: the retry gets the first answer, nothing counted twice)
  curl -s -X POST http://{addr}/v1/sales -H 'content-type: application/json' \
       -d '{{"client_key":"till-1/r-1","receipt":"R-1","currency":"EUR","lines":[{{"code":"{ean13}","qty":1}},{{"code":"{promo}","qty":2}}]}}'
  curl -s http://{addr}/v1/health

  # a scale label (1.235 kg of Comté at 24.90/kg) and fresh salmon in GS1 DataBar Expanded:
  # the product, and what to charge (`scan.price_to_charge`), its expiry (`scan.expired`)
  {bin} --config {cfg} lookup barcode {scale}
  curl -s 'http://{addr}/v1/products?code={databar}'

  # what is waiting for central
  {bin} --config {cfg} outbox stats
  {bin} --config {cfg} outbox tail
{simulated}"#,
        scale = demo::scale_label_gtin(26, 101, 1_235)
            .map(|g| g.to_string().trim_start_matches('0').to_string())
            .unwrap_or_default(),
        databar = demo::fresh_counter()
            .iter()
            .find(|f| f.label == demo::FreshLabel::DataBar)
            .map(|f| format!("(01){}(3103)000755(3922)2182", f.gtin)
                .replace('(', "%28")
                .replace(')', "%29"))
            .unwrap_or_default(),
        simulated = if config.devices.simulated.is_some() {
            format!(
                "\n  A SIMULATED scanner and NFC reader read every few seconds: watch http://{addr}/\n  (live reads) or `{bin} --config {cfg} devices watch`; --no-simulated-devices turns them off.\n"
            )
        } else {
            String::new()
        },
        card = demo::customer_card_number(0),
        uid = demo::customer_nfc_uid(1),
    );
    Ok(())
}
