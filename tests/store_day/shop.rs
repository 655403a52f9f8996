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
    pub code: String,
    pub lines: Vec<OrderLine>,
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

    pub fn collectable(&self) -> bool {
        !self.all_cancelled() && !self.collected_by_central()
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
    /// Per product: (order, qty) of each reserving line.
    pub reservations: Vec<Vec<(usize, i64)>>,
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
        });
    }
    let mut reservations = vec![Vec::new(); PRODUCTS];
    for (o, order) in orders.iter().enumerate() {
        for line in &order.lines {
            if line.status.reserves() {
                reservations[line.product].push((o, line.qty));
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
            json!({"customer_id": c.id, "display_name": format!("Customer {}", c.id),
                   "loyalty_balance": c.central_balance, "card_tokens": [token]})
        })
        .collect();
    store.import_ok("customers", "customers.ndjson", &customers);
    let reservations: Vec<Value> = shop
        .orders
        .iter()
        .flat_map(|o| {
            o.lines.iter().map(|l| {
                json!({"order_id": o.id, "line": l.line, "sku": shop.products[l.product].sku,
                       "qty": l.qty, "status": l.status.name(), "pickup_code": o.code})
            })
        })
        .collect();
    store.import_ok("reservations", "reservations.ndjson", &reservations);
    store
}
