//! The convergence simulation: a seeded generator of what a chain's stores and its web shop do,
//! an oracle that sums every accepted operation on its own (no agent or ledger code), the
//! faults, and the final comparison.

use crate::broker::Proxy;
use crate::central::{Central, Engine};
use crate::common::{Agent, Settings, Store, base_price, gtin14, product, write_ndjson};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const STORES: [&str; 3] = ["S1", "S2", "S3"];
const TILLS: [(&str, &str); 4] = [
    ("S1", "till-1"),
    ("S1", "till-2"),
    ("S2", "till-1"),
    ("S3", "till-1"),
];
/// The store cut off from central for a long stretch of the run ("its day offline").
const CUT_STORE: usize = 2;
/// A second store cut off for part of that stretch: two stores offline at once.
const SECOND_CUT_STORE: usize = 1;
const START_STOCK: i64 = 60;
const START_POINTS: i64 = 400;
const EARN_PER_MINOR: i64 = 100;
const OFFLINE_BURN_CAP: i64 = 300;
/// What one customer can be overspent by at most: every till may burn up to its cap of points
/// central has not confirmed, while central lets the web burn what it knows.
const OVERSPEND_BOUND: i64 = TILLS.len() as i64 * OFFLINE_BURN_CAP;

struct Item {
    sku: String,
    gtin: String,
    price: i64,
}

struct Customer {
    id: String,
    card: String,
}

struct SaleRec {
    receipt: String,
    /// (sku, qty, points earned by the line)
    lines: Vec<(String, i64, i64)>,
    returned: Vec<i64>,
    customer: Option<usize>,
}

struct Till {
    store: usize,
    id: String,
    dir: Store,
    agent: Option<Agent>,
    sales: Vec<SaleRec>,
}

impl Till {
    fn agent(&self) -> &Agent {
        self.agent.as_ref().unwrap()
    }
}

#[derive(PartialEq)]
enum OrderState {
    Queued,
    Placed,
    Collected,
    Returned,
}

struct Order {
    id: String,
    code: String,
    store: usize,
    /// (line, sku, qty)
    lines: Vec<(i64, String, i64)>,
    state: OrderState,
}

/// What every operation accepted adds up to.
#[derive(Default)]
struct Oracle {
    stock: BTreeMap<(String, String), i64>,
    reserved: BTreeMap<(String, String), i64>,
    points: BTreeMap<String, i64>,
    /// Single-use coupon → the tills that took it (each till takes a coupon once).
    coupons: BTreeMap<String, Vec<String>>,
}

impl Oracle {
    fn stock(&mut self, store: usize, sku: &str, delta: i64) {
        *self
            .stock
            .entry((STORES[store].to_owned(), sku.to_owned()))
            .or_default() += delta;
    }
    fn reserved(&mut self, store: usize, sku: &str, delta: i64) {
        *self
            .reserved
            .entry((STORES[store].to_owned(), sku.to_owned()))
            .or_default() += delta;
    }
    fn points(&mut self, customer: &str, delta: i64) {
        *self.points.entry(customer.to_owned()).or_default() += delta;
    }
}

pub struct Outcome {
    pub engine: Engine,
    pub seed: u64,
    pub ops: usize,
    pub accepted: BTreeMap<&'static str, u64>,
    pub refused: BTreeMap<String, u64>,
    pub facts_while_cut: u64,
    pub converged_s: f64,
    pub overspend: i64,
    pub worst_customer_overspend: i64,
    pub mismatches: Vec<String>,
}

impl Outcome {
    pub fn summary(&self) -> String {
        let accepted: u64 = self.accepted.values().sum();
        format!(
            "convergence: engine {:?} seed {} ops {} accepted {} {:?} refused {:?} facts_while_cut {} \
             converged_after_s {:.1} loyalty_overspend {} worst_customer_overspend {} (bound {}) \
             mismatches {}",
            self.engine,
            self.seed,
            self.ops,
            accepted,
            self.accepted,
            self.refused,
            self.facts_while_cut,
            self.converged_s,
            self.overspend,
            self.worst_customer_overspend,
            OVERSPEND_BOUND,
            self.mismatches.len()
        )
    }
}

struct Sim {
    rng: StdRng,
    central: Central,
    proxies: Vec<Proxy>,
    items: Vec<Item>,
    customers: Vec<Customer>,
    tills: Vec<Till>,
    orders: Vec<Order>,
    web_queue: Vec<Value>,
    /// Points of queued web loyalty operations, applied to the oracle unless central refuses.
    web_points: Vec<(String, String, i64)>,
    oracle: Oracle,
    n: u64,
    cut: bool,
    second_cut: bool,
    outcome: Outcome,
}

fn replica_version(agent: &Agent, stream: &str) -> u64 {
    agent.health()["replica"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["stream"] == stream))
        .and_then(|s| s["version"].as_u64())
        .unwrap_or(0)
}

pub fn run(seed: u64, ops: usize, engine: Engine) -> Outcome {
    let mut central = Central::start(engine);
    let items: Vec<Item> = (0..8)
        .map(|i| Item {
            sku: format!("SKU-{i}"),
            gtin: gtin14(400_700_000_000 + i),
            price: 150 + 275 * i as i64,
        })
        .collect();
    let hasher = relais::cards::CardHasher::new(&crate::common::CARD_KEY);
    let customers: Vec<Customer> = (0..6)
        .map(|i| Customer {
            id: format!("C-{i}"),
            card: format!("04A1{i:08X}"),
        })
        .collect();
    let dir = central.tmp.path().to_owned();
    let mut stock_files = Vec::new();
    let mut oracle = Oracle::default();
    for (s, store) in STORES.iter().enumerate() {
        let path = dir.join(format!("stock-{store}.ndjson"));
        let lines: Vec<Value> = items
            .iter()
            .map(|it| json!({"sku": it.sku, "on_hand": START_STOCK}))
            .collect();
        write_ndjson(&path, &lines);
        stock_files.push((store.to_string(), path));
        for it in &items {
            oracle.stock(s, &it.sku, START_STOCK);
            oracle.reserved(s, &it.sku, 0);
        }
    }
    let customer_lines: Vec<Value> = customers
        .iter()
        .map(|c| {
            let token = hasher
                .token(&relais::cards::normalize_card_id(&c.card).unwrap())
                .to_hex();
            json!({"customer_id": c.id, "display_name": format!("Customer {}", c.id),
                   "loyalty_balance": START_POINTS, "card_tokens": [token]})
        })
        .collect();
    let customers_path = dir.join("customers.ndjson");
    write_ndjson(&customers_path, &customer_lines);
    for c in &customers {
        oracle.points(&c.id, START_POINTS);
    }
    central.seed(&stock_files, &customers_path);
    central.start_ingest(0);
    central.start_ingest(1);
    central.start_ledger();

    let proxies: Vec<Proxy> = STORES.iter().map(|_| central.proxy()).collect();
    let products: Vec<Value> = items
        .iter()
        .map(|it| product(&it.gtin, &it.sku, &it.sku))
        .collect();
    let prices: Vec<Value> = items
        .iter()
        .map(|it| base_price(&it.sku, it.price, "2026-01-01T00:00:00Z"))
        .collect();
    let mut tills = Vec::new();
    for (store, id) in TILLS {
        let s = STORES.iter().position(|x| *x == store).unwrap();
        let agent_id = format!("{store}/{id}");
        let dir = Store::for_agent(
            &agent_id,
            Settings {
                sync: format!(
                    "broker = \"{}\"\nca_file = \"{}\"\nsnapshot_url = \"{}\"\nkeep_alive = \"5s\"\nack_timeout = \"8s\"\n\n\
                     [loyalty]\noffline_burn_cap = {OFFLINE_BURN_CAP}\nearn_per_minor_units = {EARN_PER_MINOR}\n",
                    proxies[s].url(),
                    central.https.ca_file.display(),
                    central.https.url(&format!("{agent_id}/manifest.json")),
                ),
                ..Settings::default()
            },
        );
        dir.import_ok("products", "products.ndjson", &products);
        dir.import_ok("prices", "prices.ndjson", &prices);
        let agent = dir.start();
        tills.push(Till {
            store: s,
            id: agent_id,
            dir,
            agent: Some(agent),
            sales: Vec::new(),
        });
    }
    for till in &tills {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !["stock", "customers", "reservations"]
            .iter()
            .all(|s| replica_version(till.agent(), s) >= 1)
        {
            assert!(
                Instant::now() < deadline,
                "{} never got its first snapshot from the ledger\n{}\n{}",
                till.id,
                till.agent().log_text(),
                central.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut sim = Sim {
        rng: StdRng::seed_from_u64(seed),
        central,
        proxies,
        items,
        customers,
        tills,
        orders: Vec::new(),
        web_queue: Vec::new(),
        web_points: Vec::new(),
        oracle,
        n: 0,
        cut: false,
        second_cut: false,
        outcome: Outcome {
            engine,
            seed,
            ops,
            accepted: BTreeMap::new(),
            refused: BTreeMap::new(),
            facts_while_cut: 0,
            converged_s: 0.0,
            overspend: 0,
            worst_customer_overspend: 0,
            mismatches: Vec::new(),
        },
    };
    for i in 0..ops {
        sim.fault(i, ops);
        sim.coupons(i, ops);
        sim.step();
        if i % 6 == 5 {
            sim.flush_web();
        }
        // A till's pace, so that deltas and hand-overs interleave with the trading.
        std::thread::sleep(Duration::from_millis(15));
    }
    sim.flush_web();
    for (store, cut) in [(CUT_STORE, sim.cut), (SECOND_CUT_STORE, sim.second_cut)] {
        if cut {
            sim.proxies[store].blackhole(false);
        }
    }
    sim.cut = false;
    sim.second_cut = false;
    sim.converge();
    sim.outcome.overspend = sim.oracle.points.values().map(|b| (-b).max(0)).sum();
    sim.outcome.worst_customer_overspend = sim
        .oracle
        .points
        .values()
        .map(|b| (-b).max(0))
        .max()
        .unwrap_or(0);
    if sim.outcome.worst_customer_overspend > OVERSPEND_BOUND {
        sim.outcome.mismatches.push(format!(
            "a customer was overspent by {} points, beyond the caps' bound {OVERSPEND_BOUND}",
            sim.outcome.worst_customer_overspend
        ));
    }
    if sim.outcome.mismatches.is_empty() {
        sim.erase_one_customer();
    }
    sim.outcome
}

impl Sim {
    fn key(&mut self) -> String {
        self.n += 1;
        format!("op-{}", self.n)
    }

    fn accepted(&mut self, what: &'static str, till: usize) {
        *self.outcome.accepted.entry(what).or_default() += 1;
        let store = self.tills[till].store;
        if (self.cut && store == CUT_STORE) || (self.second_cut && store == SECOND_CUT_STORE) {
            self.outcome.facts_while_cut += 1;
        }
    }

    /// At fixed points of the run (the random operations stay those of the seed), a single-use
    /// coupon taken at two tills — of two stores, one perhaps cut off, or the two of S1 — and
    /// offered again at the first, which refuses it (the till's own rule). Central flags every
    /// redemption after the first it ingested as a duplicate.
    fn coupons(&mut self, i: usize, ops: usize) {
        for (pct, tills) in [(10, (0, 3)), (30, (2, 3)), (50, (0, 1)), (70, (3, 2))] {
            if i != ops * pct / 100 {
                continue;
            }
            let code = format!("SIM-{pct}");
            for till in [tills.0, tills.1, tills.0] {
                let key = self.key();
                let body = json!({"code": code, "receipt": format!("R-{key}"), "client_key": key});
                let (status, answer) = self.tills[till]
                    .agent()
                    .post_json("/v1/coupons/redeem", &body);
                let takers = self
                    .oracle
                    .coupons
                    .entry(format!("plain:{code}"))
                    .or_default();
                let again = takers.contains(&self.tills[till].id);
                match (status, again) {
                    (201, false) => {
                        takers.push(self.tills[till].id.clone());
                        self.accepted("coupon", till);
                    }
                    (409, true) => self.refused("coupon", &answer),
                    _ => self.outcome.mismatches.push(format!(
                        "coupon {code} at {} (taken there before: {again}): {status} {answer}",
                        self.tills[till].id
                    )),
                }
            }
        }
    }

    fn refused(&mut self, what: &str, answer: &Value) {
        let code = answer["error"]["code"]
            .as_str()
            .or_else(|| answer["code"].as_str())
            .unwrap_or("?");
        *self
            .outcome
            .refused
            .entry(format!("{what}:{code}"))
            .or_default() += 1;
    }

    fn fault(&mut self, i: usize, ops: usize) {
        let at = |pct: usize| i == ops * pct / 100;
        if at(15) {
            eprintln!("fault: store {} cut off from central", STORES[CUT_STORE]);
            self.proxies[CUT_STORE].blackhole(true);
            self.cut = true;
        }
        if at(25) {
            eprintln!("fault: SIGKILL {}", self.tills[1].id);
            if let Some(agent) = self.tills[1].agent.take() {
                agent.kill();
            }
            self.tills[1].agent = Some(self.tills[1].dir.start());
        }
        if at(35) {
            eprintln!("fault: broker restarted");
            self.central.broker.restart();
        }
        if at(45) {
            eprintln!("fault: SIGKILL ingest worker 0");
            self.central.kill_ingest(0);
            self.central.start_ingest(0);
        }
        if at(55) {
            eprintln!("fault: SIGKILL the ledger");
            self.central.kill_ledger();
            self.central.start_ledger();
        }
        if at(65) && self.central.crash_database(Duration::from_secs(3)) {
            eprintln!("fault: PostgreSQL SIGKILLed, down 3 s, restarted (crash recovery)");
        }
        if at(40) {
            eprintln!("fault: store {} cut off too", STORES[SECOND_CUT_STORE]);
            self.proxies[SECOND_CUT_STORE].blackhole(true);
            self.second_cut = true;
        }
        if at(60) && self.second_cut {
            eprintln!("fault over: store {} back online", STORES[SECOND_CUT_STORE]);
            self.proxies[SECOND_CUT_STORE].blackhole(false);
            self.second_cut = false;
        }
        if at(75) && self.cut {
            eprintln!("fault over: store {} back online", STORES[CUT_STORE]);
            self.proxies[CUT_STORE].blackhole(false);
            self.cut = false;
        }
    }

    fn step(&mut self) {
        let till = self.rng.random_range(0..self.tills.len());
        match self.rng.random_range(0..100) {
            0..35 => self.sale(till),
            35..47 => self.return_sale(till),
            47..55 => self.burn(till),
            55..60 => self.movement(till),
            60..70 => self.web_order(),
            70..82 => self.collect(till),
            82..86 => self.return_web_order(till),
            86..95 => self.web_loyalty(),
            _ => self.warehouse_receipt(),
        }
    }

    fn sale(&mut self, till: usize) {
        let n = self.rng.random_range(1..=3);
        let mut picked: Vec<usize> = Vec::new();
        while picked.len() < n {
            let i = self.rng.random_range(0..self.items.len());
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        let customer = self
            .rng
            .random_bool(0.5)
            .then(|| self.rng.random_range(0..self.customers.len()));
        let key = self.key();
        let receipt = format!("R-{}", self.n);
        let mut lines = Vec::new();
        let mut rec = Vec::new();
        for &i in &picked {
            let qty = self.rng.random_range(1..=3);
            let it = &self.items[i];
            lines.push(json!({"sku": it.sku, "qty": qty, "unit_price_minor": it.price}));
            rec.push((it.sku.clone(), qty, qty * it.price / EARN_PER_MINOR));
        }
        let mut body =
            json!({"client_key": key, "receipt": receipt, "currency": "EUR", "lines": lines});
        if let Some(c) = customer {
            body["customer"] = json!({"card": self.customers[c].card});
        }
        let (status, answer) = self.tills[till].agent().post_json("/v1/sales", &body);
        if status != 201 {
            self.outcome.mismatches.push(format!(
                "a sale at {} was refused: {status} {answer}",
                self.tills[till].id
            ));
            return;
        }
        let store = self.tills[till].store;
        for (sku, qty, _) in &rec {
            self.oracle.stock(store, sku, -qty);
        }
        if let Some(c) = customer {
            let earned: i64 = rec.iter().map(|l| l.2).sum();
            if earned > 0 {
                self.oracle.points(&self.customers[c].id.clone(), earned);
            }
            if answer["points_earned"].as_i64().unwrap_or(0) != earned {
                self.outcome.mismatches.push(format!(
                    "sale {receipt}: points_earned {} but the rule gives {earned}",
                    answer["points_earned"]
                ));
            }
        }
        let count = rec.len();
        self.tills[till].sales.push(SaleRec {
            receipt,
            lines: rec,
            returned: vec![0; count],
            customer,
        });
        self.accepted("sale", till);
    }

    fn return_sale(&mut self, till: usize) {
        let open: Vec<(usize, usize)> = self.tills[till]
            .sales
            .iter()
            .enumerate()
            .flat_map(|(s, sale)| {
                sale.lines
                    .iter()
                    .enumerate()
                    .filter(move |(l, line)| sale.returned[*l] < line.1)
                    .map(move |(l, _)| (s, l))
            })
            .collect();
        if open.is_empty() {
            return self.sale(till);
        }
        let (s, l) = open[self.rng.random_range(0..open.len())];
        let key = self.key();
        let sale = &self.tills[till].sales[s];
        let (sku, qty, points) = sale.lines[l].clone();
        let before = sale.returned[l];
        let r = self.rng.random_range(1..=qty - before);
        let body = json!({"client_key": key, "original": {"receipt": sale.receipt},
                          "restock": true,
                          "lines": [{"sku": sku, "qty": r, "original_line": l}]});
        let customer = sale.customer;
        let (status, answer) = self.tills[till].agent().post_json("/v1/returns", &body);
        if status != 201 {
            self.outcome.mismatches.push(format!(
                "a return of {r} of {qty} at {} was refused: {status} {answer}",
                self.tills[till].id
            ));
            return;
        }
        self.oracle.stock(self.tills[till].store, &sku, r);
        self.tills[till].sales[s].returned[l] = before + r;
        if let Some(c) = customer {
            let reversed = points * (before + r) / qty - points * before / qty;
            if reversed > 0 {
                self.oracle.points(&self.customers[c].id.clone(), -reversed);
            }
        }
        self.accepted("return", till);
    }

    fn burn(&mut self, till: usize) {
        let c = self.rng.random_range(0..self.customers.len());
        let points = self.rng.random_range(20..=250);
        let key = self.key();
        let body = json!({"client_key": key, "card": self.customers[c].card, "points": points});
        let (status, answer) = self.tills[till]
            .agent()
            .post_json("/v1/loyalty/burn", &body);
        match status {
            201 => {
                self.oracle.points(&self.customers[c].id.clone(), -points);
                self.accepted("store_burn", till);
            }
            409 => self.refused("store_burn", &answer),
            _ => self
                .outcome
                .mismatches
                .push(format!("a burn answered {status} {answer}")),
        }
    }

    fn movement(&mut self, till: usize) {
        let i = self.rng.random_range(0..self.items.len());
        let qty = self.rng.random_range(1..=10);
        let key = self.key();
        let sku = self.items[i].sku.clone();
        let body = json!({"client_key": key, "kind": "receipt", "sku": sku, "qty": qty});
        let (status, answer) = self.tills[till].agent().post_movement(&body);
        if status != 201 {
            self.outcome
                .mismatches
                .push(format!("a receipt answered {status} {answer}"));
            return;
        }
        self.oracle.stock(self.tills[till].store, &sku, qty);
        self.accepted("store_receipt", till);
    }

    fn web_order(&mut self) {
        let store = self.rng.random_range(0..STORES.len());
        let n = self.rng.random_range(1..=2);
        let mut lines = Vec::new();
        for line in 1..=n {
            let i = self.rng.random_range(0..self.items.len());
            if lines.iter().any(|(_, s, _)| *s == self.items[i].sku) {
                continue;
            }
            lines.push((
                line,
                self.items[i].sku.clone(),
                self.rng.random_range(1..=2),
            ));
        }
        let key = self.key();
        let order = Order {
            id: format!("W-{}", self.n),
            code: format!("PU-{}", self.n),
            store,
            lines,
            state: OrderState::Queued,
        };
        self.web_queue
            .push(json!({"type": "order", "op_id": key, "order_id": order.id,
            "store": STORES[store], "pickup_code": order.code,
            "lines": order.lines.iter().map(|(l, s, q)| json!({"line": l, "sku": s, "qty": q}))
                .collect::<Vec<_>>()}));
        self.orders.push(order);
    }

    fn flush_web(&mut self) {
        let ops = std::mem::take(&mut self.web_queue);
        let refused = self.central.web(&ops);
        for (op_id, customer, points) in std::mem::take(&mut self.web_points) {
            if refused.contains(&op_id) {
                *self
                    .outcome
                    .refused
                    .entry("web_burn:insufficient_points".into())
                    .or_default() += 1;
            } else {
                self.oracle.points(&customer, points);
                *self.outcome.accepted.entry("web_loyalty").or_default() += 1;
            }
        }
        for o in &mut self.orders {
            if o.state == OrderState::Queued {
                o.state = OrderState::Placed;
                for (_, sku, qty) in &o.lines {
                    *self
                        .oracle
                        .reserved
                        .entry((STORES[o.store].to_owned(), sku.clone()))
                        .or_default() += qty;
                }
                *self.outcome.accepted.entry("web_order").or_default() += 1;
            }
        }
    }

    fn collect(&mut self, till: usize) {
        let store = self.tills[till].store;
        let Some(o) = self
            .orders
            .iter()
            .position(|o| o.store == store && o.state == OrderState::Placed)
        else {
            return self.sale(till);
        };
        let code = self.orders[o].code.clone();
        let agent = self.tills[till].agent();
        let (status, _) = agent.get_json(&format!("/v1/pickups/{code}"));
        if status != 200 {
            // Not in this store's replica yet (the ledger's delta is on its way, or the store
            // is cut off): the customer comes back later.
            *self
                .outcome
                .refused
                .entry("collect:not_here_yet".into())
                .or_default() += 1;
            return;
        }
        let key = self.key();
        let (status, answer) = self.tills[till].agent().post_json(
            &format!("/v1/pickups/{code}/prepare"),
            &json!({"client_key": key}),
        );
        if status != 201 && status != 409 {
            self.outcome
                .mismatches
                .push(format!("prepare of {code} answered {status} {answer}"));
            return;
        }
        let key = self.key();
        let (status, answer) = self.tills[till].agent().post_json(
            &format!("/v1/pickups/{code}/collect"),
            &json!({"client_key": key}),
        );
        if status != 201 {
            self.refused("collect", &answer);
            return;
        }
        let lines = self.orders[o].lines.clone();
        for (_, sku, qty) in &lines {
            self.oracle.stock(store, sku, -qty);
            self.oracle.reserved(store, sku, -qty);
        }
        self.orders[o].state = OrderState::Collected;
        self.accepted("collect", till);
    }

    fn return_web_order(&mut self, till: usize) {
        let Some(o) = self
            .orders
            .iter()
            .position(|o| o.state == OrderState::Collected)
        else {
            return self.sale(till);
        };
        let key = self.key();
        let order = &self.orders[o];
        let lines: Vec<Value> = order
            .lines
            .iter()
            .map(|(l, s, q)| json!({"sku": s, "qty": q, "original_line": l}))
            .collect();
        let body = json!({"client_key": key, "origin": {"channel": "web", "order_id": order.id},
                          "restock": true, "reason": "wrong size", "lines": lines});
        let returned = order.lines.clone();
        let (status, answer) = self.tills[till].agent().post_json("/v1/returns", &body);
        if status != 201 {
            self.refused("web_return_in_store", &answer);
            return;
        }
        for (_, sku, qty) in &returned {
            self.oracle.stock(self.tills[till].store, sku, *qty);
        }
        self.orders[o].state = OrderState::Returned;
        self.accepted("web_return_in_store", till);
    }

    fn web_loyalty(&mut self) {
        let c = self.rng.random_range(0..self.customers.len());
        let id = self.customers[c].id.clone();
        // Central checks a web burn against its own figure, which does not know what a store
        // cut off from it has burned meanwhile: the overspend the caps bound.
        let points = if self.rng.random_bool(0.4) {
            self.rng.random_range(10..=300)
        } else {
            -self.rng.random_range(10..=250)
        };
        let key = self.key();
        self.web_queue
            .push(json!({"type": "loyalty", "op_id": key, "customer_id": id, "points": points}));
        self.web_points.push((key, id, points));
    }

    fn warehouse_receipt(&mut self) {
        let store = self.rng.random_range(0..STORES.len());
        let i = self.rng.random_range(0..self.items.len());
        let qty = self.rng.random_range(5..=20);
        let key = self.key();
        let sku = self.items[i].sku.clone();
        self.web_queue.push(
            json!({"type": "receipt", "op_id": key, "store": STORES[store],
                                   "sku": sku, "qty": qty}),
        );
        self.oracle.stock(store, &sku, qty);
        *self
            .outcome
            .accepted
            .entry("warehouse_receipt")
            .or_default() += 1;
    }

    /// Wait until every till has handed over its facts and every figure agrees, or give up
    /// after 120 s with the mismatches of the last comparison.
    fn converge(&mut self) {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(120);
        let mut last = Vec::new();
        while Instant::now() < deadline {
            let drained = self
                .tills
                .iter()
                .all(|t| t.agent().health()["outbox"]["store_fact"]["depth"] == 0);
            if drained {
                last = self.compare();
                if last.is_empty() {
                    self.outcome.converged_s = started.elapsed().as_secs_f64();
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        if last.is_empty() {
            last.push("the tills never handed over every fact".into());
        }
        for till in &self.tills {
            last.push(format!(
                "{} health: outbox {} replica {}",
                till.id,
                till.agent().health()["outbox"]["store_fact"],
                till.agent().health()["replica"]
            ));
        }
        last.push(self.central.logs());
        self.outcome.mismatches.extend(last);
    }

    /// GDPR: a customer erased on central's side is gone from every till within 30 s.
    fn erase_one_customer(&mut self) {
        let gone = self.customers.pop().unwrap();
        let key = self.key();
        self.central
            .web(&[json!({"type": "erase", "op_id": key, "customer_id": gone.id})]);
        self.oracle.points.remove(&gone.id);
        let deadline = Instant::now() + Duration::from_secs(30);
        for till in &self.tills {
            loop {
                let (status, _) = till
                    .agent()
                    .get_json(&format!("/v1/customers/by-card/{}", gone.card));
                if status == 404 {
                    break;
                }
                if Instant::now() > deadline {
                    self.outcome.mismatches.push(format!(
                        "{} still finds erased customer {} ({status})",
                        till.id, gone.id
                    ));
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if self.central.figures()["balances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b[0] == gone.id.as_str())
        {
            self.outcome.mismatches.push(format!(
                "the ledger still lists erased customer {}",
                gone.id
            ));
        }
        *self.outcome.accepted.entry("erasure").or_default() += 1;
    }

    fn compare(&self) -> Vec<String> {
        let mut out = Vec::new();
        let figures = self.central.figures();
        let ledger_stock: BTreeMap<(String, String), i64> = figures["stock"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    (
                        r[0].as_str().unwrap().to_owned(),
                        r[1].as_str().unwrap().to_owned(),
                    ),
                    r[2].as_i64().unwrap(),
                )
            })
            .collect();
        let ledger_reserved: BTreeMap<(String, String), i64> = figures["reserved"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    (
                        r[0].as_str().unwrap().to_owned(),
                        r[1].as_str().unwrap().to_owned(),
                    ),
                    r[2].as_i64().unwrap(),
                )
            })
            .collect();
        // Each single-use coupon: one first redemption, every other one flagged as its
        // duplicate, whichever store central ingested first.
        let mut flagged: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for d in figures["coupon_duplicates"].as_array().unwrap() {
            let entry = flagged
                .entry(d["coupon"].as_str().unwrap().to_owned())
                .or_default();
            entry.0.push(d["agent"].as_str().unwrap().to_owned());
            entry.1.push(d["first_agent"].as_str().unwrap().to_owned());
        }
        for (coupon, takers) in &self.oracle.coupons {
            let (mut again, firsts) = flagged.remove(coupon).unwrap_or_default();
            let first: Vec<&String> = takers.iter().filter(|t| !again.contains(t)).collect();
            again.sort();
            let mut want_again: Vec<String> = takers
                .iter()
                .filter(|t| Some(*t) != first.first().copied())
                .cloned()
                .collect();
            want_again.sort();
            if first.len() != 1
                || again != want_again
                || firsts.iter().any(|f| Some(f) != first.first().copied())
            {
                out.push(format!(
                    "coupon {coupon} taken by {takers:?}: the ledger flags {again:?} as taken again after {firsts:?}"
                ));
            }
        }
        for (coupon, (again, _)) in flagged {
            out.push(format!(
                "coupon {coupon}: flagged {again:?}, taken by no till"
            ));
        }
        let ledger_points: BTreeMap<String, i64> = figures["balances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_i64().unwrap()))
            .collect();
        for (key, want) in &self.oracle.stock {
            let got = ledger_stock.get(key).copied().unwrap_or(0);
            if got != *want {
                out.push(format!("ledger on-hand {key:?}: {got}, oracle {want}"));
            }
            let reserved = self.oracle.reserved.get(key).copied().unwrap_or(0);
            let got = ledger_reserved.get(key).copied().unwrap_or(0);
            if got != reserved {
                out.push(format!("ledger reserved {key:?}: {got}, oracle {reserved}"));
            }
        }
        for (id, want) in &self.oracle.points {
            let got = ledger_points.get(id).copied().unwrap_or(0);
            if got != *want {
                out.push(format!("ledger balance {id}: {got}, oracle {want}"));
            }
        }
        for till in &self.tills {
            let store = STORES[till.store].to_owned();
            for it in &self.items {
                let (_, answer) = till.agent().get_json(&format!("/v1/products/{}", it.gtin));
                let key = (store.clone(), it.sku.clone());
                let on_hand = self.oracle.stock.get(&key).copied().unwrap_or(0);
                let available = on_hand - self.oracle.reserved.get(&key).copied().unwrap_or(0);
                let stock = &answer["stock"];
                // The replica itself holds the ledger's figure: nothing of the till's own is
                // left above the watermark the ledger sent.
                if stock["on_hand"].as_i64() != Some(on_hand)
                    || stock["available"].as_i64() != Some(available)
                    || stock["central_on_hand"].as_i64() != Some(on_hand)
                    || stock["local_movements_after_watermark"] != 0
                {
                    out.push(format!(
                        "{} {}: on_hand {} available {} (central {} + local {}), oracle {on_hand} / {available}",
                        till.id, it.sku, stock["on_hand"], stock["available"],
                        stock["central_on_hand"], stock["local_movements_after_watermark"]
                    ));
                }
            }
            for c in &self.customers {
                let (_, answer) = till
                    .agent()
                    .get_json(&format!("/v1/customers/by-card/{}", c.card));
                let want = self.oracle.points.get(&c.id).copied().unwrap_or(0);
                let loyalty = &answer["loyalty"];
                if loyalty["balance"].as_i64() != Some(want)
                    || loyalty["central_balance"].as_i64() != Some(want)
                    || loyalty["pending_local"] != 0
                {
                    out.push(format!(
                        "{} balance of {}: {} (central {} + pending {}), oracle {want}",
                        till.id,
                        c.id,
                        loyalty["balance"],
                        loyalty["central_balance"],
                        loyalty["pending_local"]
                    ));
                }
            }
        }
        out
    }
}
