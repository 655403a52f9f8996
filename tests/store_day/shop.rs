//! The store a day runs in, generated from the seed: products with stock baselines, customers
//! with loyalty cards and balances, click-and-collect orders, the tills' tokens and the config.
//! Imported through `relais replica import`, the way central's snapshots arrive.

use crate::common::{self, Store, gtin14};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

pub const PRODUCTS: usize = 300;
pub const CUSTOMERS: usize = 80;
pub const ORDERS: usize = 70;
/// Web orders central assigns to the store to ship (`fulfilment: ship`), after the collect ones.
pub const SHIP_ORDERS: usize = 14;
/// GTIN bodies of the catalogue (indicator 0, so the EAN-13 form is the GTIN-14 without its 0).
const GTIN_BASE: u64 = 400_100_000_000;
/// GTIN bodies no product has: items the replica does not know yet.
const UNKNOWN_BASE: u64 = 499_900_000_000;

pub struct Product {
    pub sku: String,
    /// GTIN-14, as the API answers it.
    pub gtin: String,
    pub baseline: i64,
}

pub struct Customer {
    pub id: String,
    /// The card UID, normalised (upper-case hex, no separators).
    pub card: String,
    pub central_balance: i64,
    /// Central's consent per purpose (marketing, profiling), dated long before the day: `None`
    /// = the customer never chose (no consent).
    pub central_consent: [Option<bool>; 2],
}

/// A coupon of the day: the forms a till may send it in (all one coupon), the identity the
/// agent answers, and whether it can be redeemed once only.
pub struct Coupon {
    pub forms: Vec<String>,
    pub identity: String,
    pub single_use: bool,
}

/// The date of every choice central holds: before anything a till records today.
pub const CENTRAL_CONSENT_AT: &str = "2026-01-05T09:00:00Z";

/// A few coupons, so the day redeems some more than once: plain codes (single-use, any case),
/// serialised GS1 coupons (AI 8110 and 8112; single-use) and one without a serial (not).
fn coupons(seed: u64) -> Vec<Coupon> {
    let mut pool = Vec::new();
    for i in 0..6 {
        let code = format!("DAY{}-{i:02}X", seed % 1000);
        pool.push(Coupon {
            forms: vec![code.clone(), code.to_lowercase()],
            identity: format!("plain:{code}"),
            single_use: true,
        });
    }
    for i in 0..4u64 {
        let serial = format!("{:06}", seed % 1000 * 10 + i);
        let data = format!("061414100012325011000050{serial}");
        pool.push(Coupon {
            forms: vec![
                format!("(8110){data}"),
                format!("]C18110{data}"),
                format!("8110{data}"),
            ],
            identity: format!("gs1:614141:000123:{serial}"),
            single_use: true,
        });
    }
    let serial = format!("{:06}", seed % 997);
    pool.push(Coupon {
        forms: vec![format!("(8112)106141410007770{serial}")],
        identity: format!("gs1:614141:000777:{serial}"),
        single_use: true,
    });
    pool.push(Coupon {
        forms: vec![
            "(8110)0614141000123250110000".to_owned(),
            "]C181100614141000123250110000".to_owned(),
        ],
        identity: "gs1:614141:000123".to_owned(),
        single_use: false,
    });
    pool
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LineStatus {
    Open,
    Picked,
    Cancelled,
    Collected,
}

impl LineStatus {
    pub fn name(self) -> &'static str {
        match self {
            LineStatus::Open => "open",
            LineStatus::Picked => "picked",
            LineStatus::Cancelled => "cancelled",
            LineStatus::Collected => "collected",
        }
    }

    /// `open` and `picked` lines hold stock back from `available`.
    pub fn reserves(self) -> bool {
        matches!(self, LineStatus::Open | LineStatus::Picked)
    }
}

pub struct OrderLine {
    pub line: i64,
    /// Index into `Shop::products`.
    pub product: usize,
    pub qty: i64,
    pub status: LineStatus,
}

pub struct Order {
    pub id: String,
    /// The pickup code (click-and-collect orders only).
    pub code: String,
    pub lines: Vec<OrderLine>,
    /// Shipped from the store (picked, packed, shipped), never handed over at the counter.
    pub ship: bool,
}

impl Order {
    /// Lines handed over at collection: every line not cancelled.
    pub fn live(&self) -> impl Iterator<Item = &OrderLine> {
        self.lines
            .iter()
            .filter(|l| l.status != LineStatus::Cancelled)
    }

    pub fn all_cancelled(&self) -> bool {
        self.live().count() == 0
    }

    /// Central already says every live line was collected (elsewhere, or before this replica).
    pub fn collected_by_central(&self) -> bool {
        !self.all_cancelled() && self.live().all(|l| l.status == LineStatus::Collected)
    }
}

pub struct Till {
    pub name: String,
    pub token: String,
}

pub struct Shop {
    pub products: Vec<Product>,
    by_sku: HashMap<String, usize>,
    pub unknown: Vec<String>,
    pub customers: Vec<Customer>,
    pub orders: Vec<Order>,
    pub cap: i64,
    /// `loyalty.earn_per_minor_units`: minor units of a ticket line that earn one point for
    /// the customer it names (rounded down per line); 0: tickets earn nothing.
    pub earn_rule: i64,
    pub tills: Vec<Till>,
    /// The token the oracle's own lookups use (not a till: it posts nothing).
    pub auditor: Till,
    /// Per product: (order, index into its `lines`, qty) of each reserving line.
    pub reservations: Vec<Vec<(usize, usize, i64)>>,
    pub coupons: Vec<Coupon>,
}

impl Shop {
    pub fn product_by_sku(&self, sku: &str) -> Option<usize> {
        self.by_sku.get(sku).copied()
    }

    pub fn unknown_by_gtin(&self, gtin: &str) -> Option<usize> {
        self.unknown.iter().position(|g| g == gtin)
    }
}

fn token(rng: &mut StdRng) -> String {
    (0..40)
        .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
        .collect()
}

/// A store generated from `seed` with `tills` tills; no click-and-collect order hands over more
/// than `max_lines` lines (a hand-over is one movement per line).
pub fn generate(seed: u64, tills: usize, max_lines: usize) -> Shop {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5709_e0da_7000_0001);
    let products: Vec<Product> = (0..PRODUCTS)
        .map(|i| Product {
            sku: format!("SD-{i:04}"),
            gtin: gtin14(GTIN_BASE + i as u64 * 7),
            baseline: if rng.random_bool(0.05) {
                rng.random_range(-6..=0)
            } else {
                rng.random_range(0..=400)
            },
        })
        .collect();
    let by_sku = products
        .iter()
        .enumerate()
        .map(|(i, p)| (p.sku.clone(), i))
        .collect();
    let unknown = (0..40).map(|i| gtin14(UNKNOWN_BASE + i * 13)).collect();
    let customers = (0..CUSTOMERS)
        .map(|i| Customer {
            id: format!("C-{i:04}"),
            card: format!("04{:012X}", rng.random::<u64>() & 0xFFFF_FFFF_FFFF),
            central_balance: if rng.random_bool(0.1) {
                rng.random_range(0..=50)
            } else {
                rng.random_range(100..=20_000)
            },
            central_consent: [
                [None, Some(true), Some(false)][i % 3],
                [None, Some(true)][i % 2],
            ],
        })
        .collect();
    let mut orders = Vec::with_capacity(ORDERS);
    for i in 0..ORDERS {
        let n = rng.random_range(1..=5usize);
        let kind = rng.random_range(0..100);
        let mut lines: Vec<OrderLine> = (0..n)
            .map(|l| {
                let status = match kind {
                    0..50 => LineStatus::Picked,
                    50..70 => *[LineStatus::Open, LineStatus::Picked]
                        .choose(&mut rng)
                        .unwrap_or(&LineStatus::Open),
                    70..85 => *[LineStatus::Picked, LineStatus::Cancelled, LineStatus::Open]
                        .choose(&mut rng)
                        .unwrap_or(&LineStatus::Picked),
                    85..93 => LineStatus::Cancelled,
                    _ => LineStatus::Collected,
                };
                OrderLine {
                    line: l as i64 + 1,
                    product: rng.random_range(0..PRODUCTS),
                    qty: rng.random_range(1..=3),
                    status,
                }
            })
            .collect();
        // The same item twice in one order: two lines, two movements.
        if n >= 2 && rng.random_bool(0.15) {
            lines[1].product = lines[0].product;
        }
        // An order that was to be handed over must keep a live line.
        if (70..85).contains(&kind) && lines.iter().all(|l| l.status == LineStatus::Cancelled) {
            lines[0].status = LineStatus::Picked;
        }
        // At most `max_lines` lines handed over: the others cancelled.
        let mut live = 0;
        for line in &mut lines {
            if line.status != LineStatus::Cancelled {
                live += 1;
                if live > max_lines {
                    line.status = LineStatus::Cancelled;
                }
            }
        }
        orders.push(Order {
            id: format!("WEB-{seed}-{i:03}"),
            code: format!("PU{seed}X{i:03}"),
            lines,
            ship: false,
        });
    }
    for i in 0..SHIP_ORDERS {
        let n = rng.random_range(1..=4usize).min(max_lines);
        let mut lines: Vec<OrderLine> = (0..n)
            .map(|l| OrderLine {
                line: l as i64 + 1,
                product: rng.random_range(0..PRODUCTS),
                qty: rng.random_range(1..=3),
                status: if rng.random_bool(0.1) {
                    LineStatus::Cancelled
                } else {
                    LineStatus::Open
                },
            })
            .collect();
        lines[0].status = LineStatus::Open;
        orders.push(Order {
            id: format!("SHIP-{seed}-{i:03}"),
            code: String::new(),
            lines,
            ship: true,
        });
    }
    let mut reservations = vec![Vec::new(); PRODUCTS];
    for (o, order) in orders.iter().enumerate() {
        for (i, line) in order.lines.iter().enumerate() {
            if line.status.reserves() {
                reservations[line.product].push((o, i, line.qty));
            }
        }
    }
    let tills = (1..=tills)
        .map(|n| Till {
            name: format!("till-{n}"),
            token: token(&mut rng),
        })
        .collect();
    let auditor = Till {
        name: "auditor".to_owned(),
        token: token(&mut rng),
    };
    Shop {
        products,
        by_sku,
        unknown,
        customers,
        orders,
        cap: *[1_500, 3_000, 6_000].choose(&mut rng).unwrap_or(&3_000),
        earn_rule: *[0, 50, 100, 250].choose(&mut rng).unwrap_or(&100),
        tills,
        auditor,
        reservations,
        coupons: coupons(seed),
    }
}

/// A data dir and config for `shop`, its snapshots imported, ready for `relais run`.
pub fn install(shop: &Shop) -> Store {
    let store = Store::new();
    let tokens = store.path("api-tokens");
    let mut text = String::from("# the store's tills, and the oracle's own lookups\n");
    for till in shop.tills.iter().chain(std::iter::once(&shop.auditor)) {
        text.push_str(&format!("{} {}\n", till.name, till.token));
    }
    std::fs::write(&tokens, text).expect("write token file");
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600))
        .expect("chmod token file");
    let config = std::fs::read_to_string(&store.config)
        .expect("read config")
        .replace(
            "listen = \"127.0.0.1:0\"\n",
            &format!(
                "listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\
                 # every till shares 127.0.0.1: the per-address limit must not bite\n\
                 rate_limit_per_client = 1000000\nrate_limit_burst = 1000000\n",
                tokens.display()
            ),
        );
    std::fs::write(
        &store.config,
        format!(
            "{config}\n[loyalty]\noffline_burn_cap = {}\nearn_per_minor_units = {}\n\n\
             [log]\nlevel = \"warn\"\n",
            shop.cap, shop.earn_rule
        ),
    )
    .expect("write config");

    let products: Vec<Value> = shop
        .products
        .iter()
        .map(|p| common::product(&p.gtin, &p.sku, &format!("Store day item {}", p.sku)))
        .collect();
    store.import_ok("products", "products.ndjson", &products);
    let stock: Vec<Value> = shop
        .products
        .iter()
        .map(|p| common::stock(&p.sku, p.baseline))
        .collect();
    store.import_ok("stock", "stock.ndjson", &stock);
    let hasher = relais::cards::CardHasher::new(&common::CARD_KEY);
    let customers: Vec<Value> = shop
        .customers
        .iter()
        .map(|c| {
            let token = hasher
                .token(&relais::cards::normalize_card_id(&c.card).expect("card id"))
                .to_hex();
            let mut row = json!({"customer_id": c.id,
                                 "display_name": format!("Customer {}", c.id),
                                 "loyalty_balance": c.central_balance, "card_tokens": [token],
                                 "marketing": marketing_of(&c.id)});
            for (purpose, choice) in ["marketing", "profiling"].iter().zip(c.central_consent) {
                if let Some(granted) = choice {
                    row["consent"][*purpose] =
                        json!({"granted": granted, "at": CENTRAL_CONSENT_AT});
                }
            }
            row
        })
        .collect();
    store.import_ok("customers", "customers.ndjson", &customers);
    let reservations: Vec<Value> = shop
        .orders
        .iter()
        .flat_map(|o| {
            o.lines.iter().map(|l| {
                if o.ship {
                    json!({"order_id": o.id, "line": l.line, "sku": shop.products[l.product].sku,
                           "qty": l.qty, "status": l.status.name(), "fulfilment": "ship"})
                } else {
                    json!({"order_id": o.id, "line": l.line, "sku": shop.products[l.product].sku,
                           "qty": l.qty, "status": l.status.name(), "pickup_code": o.code})
                }
            })
        })
        .collect();
    store.import_ok("reservations", "reservations.ndjson", &reservations);
    store
}

/// Central's marketing data of a customer: shown only while marketing consent is in effect.
pub fn marketing_of(customer_id: &str) -> Value {
    json!({"segments": [format!("seg-{}", &customer_id[customer_id.len() - 1..])],
           "offers": [{"offer_id": format!("OF-{customer_id}"), "text": "10 % off your next visit"}]})
}
