//! A realistic store, generated: products with valid GTINs from several GS1 country prefixes,
//! base prices and promotions, stock, customers with loyalty cards, click-and-collect orders.
//! Used by `relais demo` (a few thousand rows) and by the benchmarks (millions). Generated, not
//! shipped, so the repository stays small; deterministic, so runs are comparable.

use crate::cards::CardHasher;
use crate::decode::gtin::Gtin14;
use crate::replica::Stream;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// splitmix64: tiny, deterministic and good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items
            .get(self.below(items.len() as u64) as usize)
            .copied()
            .unwrap_or("")
    }
}

/// GS1 prefixes of a few member organisations (France, Germany, UK, Italy, Spain, Netherlands).
const COUNTRY_PREFIXES: [u64; 6] = [300, 400, 500, 800, 840, 871];
const BRANDS: [&str; 12] = [
    "Alpenhof",
    "Bonne Terre",
    "Castello",
    "Dalby",
    "Estrella",
    "Fjord",
    "Granja",
    "Hollandia",
    "Île Verte",
    "Jardin",
    "Kestrel",
    "Lumière",
];
const ITEMS: [(&str, &str, &[&str]); 12] = [
    ("dairy", "Whole Milk", &["1 L", "2 L", "500 ml"]),
    ("dairy", "Greek Yoghurt", &["150 g", "500 g", "1 kg"]),
    ("bakery", "Sourdough Bread", &["400 g", "800 g"]),
    ("produce", "Organic Apples", &["1 kg", "6 pcs"]),
    ("pantry", "Basmati Rice", &["500 g", "1 kg", "5 kg"]),
    (
        "pantry",
        "Extra Virgin Olive Oil",
        &["500 ml", "750 ml", "1 L"],
    ),
    (
        "beverages",
        "Sparkling Water",
        &["500 ml", "1.5 L", "6 x 1.5 L"],
    ),
    (
        "beverages",
        "Arabica Coffee Beans",
        &["250 g", "500 g", "1 kg"],
    ),
    ("frozen", "Garden Peas", &["450 g", "1 kg"]),
    ("household", "Laundry Liquid", &["1 L", "2 L"]),
    ("snacks", "Dark Chocolate 70%", &["100 g", "200 g"]),
    ("personal care", "Shampoo", &["250 ml", "400 ml"]),
];
const FIRST_NAMES: [&str; 16] = [
    "Marie", "Lukas", "Sofia", "Jan", "Emma", "Mateo", "Chloé", "Noah", "Giulia", "Liam", "Lucía",
    "Finn", "Anna", "Hugo", "Sara", "Oskar",
];
const SURNAME_INITIALS: &str = "ABCDEFGHJKLMNPRSTVW";

/// GTIN of the i-th generated product: 100,000 items per company prefix, company prefixes
/// spread over the country prefixes above; always a valid check digit.
pub fn product_gtin(i: u64) -> Option<Gtin14> {
    let company = i / 100_000;
    let item = i % 100_000;
    let country = COUNTRY_PREFIXES[(company % COUNTRY_PREFIXES.len() as u64) as usize];
    // 7919 is prime and coprime to 9000, so company codes never repeat below 9000 companies.
    let company_code = 1000 + (company * 7919) % 9000;
    Gtin14::from_body13(country * 1_000_000_000 + company_code * 100_000 + item)
}

pub fn product_sku(i: u64) -> String {
    format!("SKU-{i:07}")
}

/// The loyalty card number printed on the i-th customer's card.
pub fn customer_card_number(i: u64) -> String {
    format!("9250{i:09}")
}

/// The NFC UID of the i-th customer's contactless card (7-byte ISO 14443 UID, NXP prefix 04).
pub fn customer_nfc_uid(i: u64) -> String {
    format!("04{:012X}", i.wrapping_mul(0x9E37_79B9) & 0xFFFF_FFFF_FFFF)
}

#[derive(Debug, Clone)]
pub struct GeneratedStore {
    pub dir: PathBuf,
    pub files: Vec<(Stream, PathBuf)>,
    pub products: u64,
    pub customers: u64,
}

/// Sizes of a generated store.
#[derive(Debug, Clone, Copy)]
pub struct StoreSize {
    pub products: u64,
    pub customers: u64,
}

/// Write NDJSON snapshots for every stream into `dir`. `now_ms` anchors price windows.
pub fn generate(
    dir: &Path,
    size: StoreSize,
    hasher: &CardHasher,
    now_ms: i64,
) -> std::io::Result<GeneratedStore> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    let path = dir.join("products.ndjson");
    write_products(&path, size.products)?;
    files.push((Stream::Products, path));
    let path = dir.join("prices.ndjson");
    write_prices(&path, size.products, now_ms)?;
    files.push((Stream::Prices, path));
    let path = dir.join("stock.ndjson");
    write_stock(&path, size.products)?;
    files.push((Stream::Stock, path));
    let path = dir.join("customers.ndjson");
    write_customers(&path, size.customers, hasher)?;
    files.push((Stream::Customers, path));
    let path = dir.join("reservations.ndjson");
    write_reservations(&path, size.products)?;
    files.push((Stream::Reservations, path));
    Ok(GeneratedStore {
        dir: dir.to_path_buf(),
        files,
        products: size.products,
        customers: size.customers,
    })
}

fn create(path: &Path) -> std::io::Result<BufWriter<std::fs::File>> {
    Ok(BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path)?,
    ))
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

pub fn write_products(path: &Path, n: u64) -> std::io::Result<()> {
    let mut out = create(path)?;
    let mut rng = Rng::new(1);
    for i in 0..n {
        let Some(gtin) = product_gtin(i) else {
            continue;
        };
        let brand = rng.pick(&BRANDS);
        let (category, item, sizes) = ITEMS[(rng.below(ITEMS.len() as u64)) as usize];
        let size = rng.pick(sizes);
        writeln!(
            out,
            r#"{{"gtin":"{gtin}","sku":"{}","name":{},"attributes":{{"brand":{},"category":"{category}","size":"{size}"}}}}"#,
            product_sku(i),
            json_str(&format!("{brand} {item} {size}")),
            json_str(brand),
        )?;
    }
    out.flush()
}

fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn write_prices(path: &Path, n: u64, now_ms: i64) -> std::io::Result<()> {
    const DAY: i64 = 86_400_000;
    let mut out = create(path)?;
    let mut rng = Rng::new(2);
    let since = rfc3339(now_ms - 90 * DAY);
    for i in 0..n {
        let sku = product_sku(i);
        let price = 49 + rng.below(1500) as i64;
        writeln!(
            out,
            r#"{{"sku":"{sku}","price_minor":{price},"currency":"EUR","valid_from":"{since}"}}"#
        )?;
        match rng.below(10) {
            // A running promotion: about 10% of the catalogue.
            0 => writeln!(
                out,
                r#"{{"sku":"{sku}","kind":"promo","promo_id":"WEEK-{w}","price_minor":{p},"currency":"EUR","valid_from":"{from}","valid_to":"{to}"}}"#,
                w = 40 + rng.below(8),
                p = price * 8 / 10,
                from = rfc3339(now_ms - DAY),
                to = rfc3339(now_ms + 6 * DAY),
            )?,
            // A price change already announced for next week.
            1 => writeln!(
                out,
                r#"{{"sku":"{sku}","price_minor":{p},"currency":"EUR","valid_from":"{from}"}}"#,
                p = price + 10,
                from = rfc3339(now_ms + 7 * DAY),
            )?,
            _ => {}
        }
    }
    out.flush()
}

fn write_stock(path: &Path, n: u64) -> std::io::Result<()> {
    let mut out = create(path)?;
    let mut rng = Rng::new(3);
    for i in 0..n {
        writeln!(
            out,
            r#"{{"sku":"{}","on_hand":{},"watermark_seq":0}}"#,
            product_sku(i),
            rng.below(200)
        )?;
    }
    out.flush()
}

fn write_customers(path: &Path, n: u64, hasher: &CardHasher) -> std::io::Result<()> {
    let mut out = create(path)?;
    let mut rng = Rng::new(4);
    let initials: Vec<char> = SURNAME_INITIALS.chars().collect();
    for i in 0..n {
        let first = rng.pick(&FIRST_NAMES);
        let initial = initials
            .get(rng.below(initials.len() as u64) as usize)
            .copied()
            .unwrap_or('A');
        let tier = ["basic", "basic", "silver", "gold"][rng.below(4) as usize];
        let card = hasher.token(&customer_card_number(i)).to_hex();
        let nfc = hasher.token(&customer_nfc_uid(i)).to_hex();
        writeln!(
            out,
            r#"{{"customer_id":"C{i:07}","display_name":"{first} {initial}.","tier":"{tier}","loyalty_balance":{},"loyalty_watermark_seq":0,"card_tokens":["{card}","{nfc}"]}}"#,
            rng.below(5000)
        )?;
    }
    out.flush()
}

fn write_reservations(path: &Path, n: u64) -> std::io::Result<()> {
    let mut out = create(path)?;
    let mut rng = Rng::new(5);
    let orders = (n / 100).max(1);
    for o in 0..orders {
        let lines = 1 + rng.below(3);
        for line in 1..=lines {
            let status = ["open", "open", "picked", "collected"][rng.below(4) as usize];
            writeln!(
                out,
                r#"{{"order_id":"W-{o:06}","line":{line},"sku":"{}","qty":{},"status":"{status}","pickup_code":"PU{o:06}"}}"#,
                product_sku(rng.below(n)),
                1 + rng.below(3)
            )?;
        }
    }
    out.flush()
}

/// What a fresh-counter item's barcode carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreshLabel {
    /// A scale label with the weight in it (French layout `26IIIIIVVVVV`, kg with 3 decimals).
    Weight,
    /// A scale label with the price to pay in it (French layout `21IIIIIVVVVV`, euros).
    Price,
    /// A GS1 DataBar Expanded with (01) a variable-measure GTIN-14, (3103), (17) and (3922).
    DataBar,
}

/// A fresh-counter item of the demo store: priced per kg in the replica.
#[derive(Debug, Clone)]
pub struct FreshItem {
    pub sku: &'static str,
    pub name: &'static str,
    pub label: FreshLabel,
    /// The number the item is filed under: the scale label's code with its value zeroed, or
    /// the DataBar's variable-measure GTIN-14.
    pub gtin: Gtin14,
    pub price_per_kg_minor: i64,
}

/// The restricted-circulation GTIN-13 `prefix item value` with its check digit.
pub fn scale_label_gtin(prefix: u64, item: u64, value: u64) -> Option<Gtin14> {
    Gtin14::from_body13(prefix * 10_000_000_000 + (item % 100_000) * 100_000 + value % 100_000)
}

/// The demo store's fresh counter: scale labels in the French layouts (the default
/// `scans.rcn_region`) and fresh food with GS1 DataBar Expanded labels.
pub fn fresh_counter() -> Vec<FreshItem> {
    let items = [
        (
            "PLU-00101",
            "Comté AOP 18 mois (au kg)",
            FreshLabel::Weight,
            101,
            2490,
        ),
        (
            "PLU-00102",
            "Jambon de Bayonne (au kg)",
            FreshLabel::Weight,
            102,
            3290,
        ),
        (
            "PLU-00103",
            "Olives vertes à l'ail (au kg)",
            FreshLabel::Weight,
            103,
            1590,
        ),
        (
            "PLU-00201",
            "Plateau de fromages (prix étiqueté)",
            FreshLabel::Price,
            201,
            0,
        ),
        (
            "FRESH-00301",
            "Filet de saumon frais (au kg)",
            FreshLabel::DataBar,
            301,
            2890,
        ),
        (
            "FRESH-00302",
            "Entrecôte de bœuf (au kg)",
            FreshLabel::DataBar,
            302,
            3450,
        ),
    ];
    items
        .into_iter()
        .filter_map(|(sku, name, label, item, price)| {
            let gtin = match label {
                FreshLabel::Weight => scale_label_gtin(26, item, 0)?,
                FreshLabel::Price => scale_label_gtin(21, item, 0)?,
                // Indicator 9 (variable measure), French company prefix 3001000.
                FreshLabel::DataBar => Gtin14::from_body13(9_300_100_000_000 + item)?,
            };
            Some(FreshItem {
                sku,
                name,
                label,
                gtin,
                price_per_kg_minor: price,
            })
        })
        .collect()
}

/// Add the fresh counter to a generated store's products, prices and stock files.
pub fn append_fresh_counter(store: &GeneratedStore, now_ms: i64) -> std::io::Result<()> {
    let open = |stream: Stream| -> std::io::Result<Option<std::fs::File>> {
        match store.files.iter().find(|(s, _)| *s == stream) {
            Some((_, path)) => std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map(Some),
            None => Ok(None),
        }
    };
    let (Some(mut products), Some(mut prices), Some(mut stock)) = (
        open(Stream::Products)?,
        open(Stream::Prices)?,
        open(Stream::Stock)?,
    ) else {
        return Ok(());
    };
    let since = rfc3339(now_ms - 90 * 86_400_000);
    for item in fresh_counter() {
        writeln!(
            products,
            r#"{{"gtin":"{}","sku":"{}","name":{},"attributes":{{"category":"fresh counter","sold_by":"kg"}}}}"#,
            item.gtin,
            item.sku,
            json_str(item.name)
        )?;
        writeln!(
            prices,
            r#"{{"sku":"{}","price_minor":{},"currency":"EUR","valid_from":"{since}"}}"#,
            item.sku, item.price_per_kg_minor
        )?;
        writeln!(
            stock,
            r#"{{"sku":"{}","on_hand":40,"watermark_seq":0}}"#,
            item.sku
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_gtins_are_valid_and_distinct_across_company_prefixes() {
        let mut seen = std::collections::HashSet::new();
        for i in (0..1_000_000).step_by(997) {
            let g = product_gtin(i).map(|g| g.to_string());
            assert!(g.as_deref().is_some_and(|s| Gtin14::parse(s).is_ok()));
            assert!(seen.insert(g));
        }
    }

    #[test]
    fn fresh_counter_items_are_filed_under_what_their_labels_decode_to() {
        let rules = crate::scan::ScanRules::default();
        for item in fresh_counter() {
            match item.label {
                FreshLabel::Weight => {
                    let label =
                        scale_label_gtin(26, item.gtin.as_u64() / 1_000_000 % 100_000, 1_235);
                    let reading = label
                        .and_then(|g| crate::scan::rcn::read(&rules.rcn_layouts, g))
                        .and_then(Result::ok);
                    assert_eq!(
                        reading.map(|r| r.item_gtin),
                        Some(item.gtin),
                        "{}",
                        item.sku
                    );
                }
                FreshLabel::Price | FreshLabel::DataBar => {}
            }
        }
        assert_eq!(fresh_counter().len(), 6);
    }
}
