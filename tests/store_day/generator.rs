//! The day's operations, one per till and round, each with the answer the oracle predicts.
//!
//! Every operation of a round is sent at the same moment from its own till, so the order the
//! agent sees them in is unknown: a round is built so that its predictions do not depend on it.
//! Stock changes add up whatever the order, so tills share SKUs freely, except that a SKU being
//! counted is touched by nothing else in that round (a count's `expected` is on-hand when it
//! is recorded). A customer and a pickup order are used by one till per round — except in the
//! deliberate contention rounds: N tills burn the same points from one balance (how many win
//! does not depend on the order), tills earn and burn from one balance within what it allows
//! (all win), K tills hand over one order or redeem one single-use coupon (one wins), one till
//! counts items the others sell and return. The answers' seqs then give the order the writer
//! took, and each answer must be the one that order implies (`balance_after`, a count's
//! `expected`).

use crate::model::{Effect, Model, Route, Scope, SoldLine, SoldTicket};
use crate::shop::Shop;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::time::Duration;

/// Web orders: hand-overs (whole and partial), lines prepared here, ship-from-store steps.
#[path = "generator_orders.rs"]
mod orders;
#[path = "returns.rs"]
mod returns;

/// What the agent must answer.
#[derive(Clone, Debug)]
pub enum Expect {
    /// 201 with these answer fields (a `null` here also accepts the field being absent).
    Created(Value),
    /// 200, `replayed: true` and otherwise exactly this first answer.
    Replay(Value),
    /// This error: status, `error.code`, `error.field` when given, `error.details` ⊇ details.
    Error {
        status: u16,
        code: String,
        field: Option<String>,
        details: Value,
    },
    /// Tills earning and burning points of one customer at the same moment. The writer takes
    /// them in some order, which the answers' seqs tell: in that order each success is allowed
    /// and its `balance_after` is the balance after it. Exactly `successes` succeed; the
    /// others get `refusal` (a burn race: every till burns the same points).
    LoyaltyRace {
        customer: usize,
        balance: i64,
        burned: i64,
        cap: i64,
        successes: usize,
        refusal: Option<Box<Expect>>,
    },
    /// A count while other tills sell and return the counted items: `expected` is on-hand
    /// before the round plus every fact of the round with a smaller seq (`before`: product,
    /// on-hand before the round, counted).
    CountRace { before: Vec<(usize, i64, i64)> },
    /// K tills taking one thing at once (handing over one order, redeeming one single-use
    /// coupon): exactly one 201 with `answer`, the others 409 `refused`, whose `details.seq`,
    /// when they carry one, is the winner's.
    CollectRace { answer: Value, refused: String },
}

impl Expect {
    fn error(status: u16, code: &str, field: Option<&str>, details: Value) -> Expect {
        Expect::Error {
            status,
            code: code.to_owned(),
            field: field.map(str::to_owned),
            details,
        }
    }

    /// Judged with the other operations of its race, not alone.
    pub fn is_race(&self) -> bool {
        matches!(
            self,
            Expect::LoyaltyRace { .. } | Expect::CollectRace { .. } | Expect::CountRace { .. }
        )
    }
}

/// One request of the day.
#[derive(Clone, Debug)]
pub struct Op {
    pub till: usize,
    pub path: String,
    /// The request as JSON (what a replay must match)…
    pub body: Value,
    /// …and the bytes sent (a retry may be formatted differently).
    pub raw: String,
    /// The key's scope, when the request carries one.
    pub scope: Option<Scope>,
    /// The key sent as an `Idempotency-Key` header instead of in the body.
    pub header_key: Option<String>,
    pub expect: Expect,
    /// What the fact does if the agent records it.
    pub effect: Effect,
    /// Send once with this timeout (dropping the connection before the answer), then retry.
    pub first_timeout: Option<Duration>,
    /// The kind of operation, for the report.
    pub label: String,
}

impl Op {
    pub fn describe(&self, tills: &[crate::shop::Till]) -> String {
        let mut raw = self.raw.clone();
        if raw.len() > 700 {
            raw.truncate(700);
            raw.push('…');
        }
        let header = self
            .header_key
            .as_ref()
            .map(|k| format!("(Idempotency-Key: {k}) "))
            .unwrap_or_default();
        format!(
            "{} [{}] POST {} {header}{}",
            tills[self.till].name, self.label, self.path, raw
        )
    }

    /// Send the key as an `Idempotency-Key` header, the body without it.
    pub fn key_in_header(&mut self) {
        if let Some(key) = self.body["client_key"].as_str() {
            self.header_key = Some(key.to_owned());
            self.raw = without_key(&self.body).to_string();
        }
    }
}

pub struct Knobs {
    pub tills: usize,
    pub max_lines: usize,
    /// Generate the target idempotency rules' cases: a key reused with another body (422), by
    /// another till or on another route (a different fact).
    pub scoped_keys: bool,
}

/// What the ops of one round already use.
#[derive(Default)]
struct Locks {
    /// Products a count reads: nothing else may touch them this round.
    counted: HashSet<usize>,
    /// Products some operation moves this round.
    touched: HashSet<usize>,
    customers: HashSet<usize>,
    orders: HashSet<usize>,
    /// Coupons redeemed this round (one till each: a second redemption's answer depends on
    /// which came first).
    coupons: HashSet<usize>,
    /// Originals (receipts, web orders) a return names this round: what is left of them
    /// depends on every return before.
    originals: HashSet<String>,
    /// Products counted in a count race: the other tills sell and return them on purpose.
    raced: Vec<usize>,
}

#[derive(Clone, Copy, PartialEq)]
enum Item {
    Known(usize),
    Unknown(usize),
}

pub struct Generator<'a> {
    shop: &'a Shop,
    knobs: &'a Knobs,
    rng: StdRng,
    next_key: u64,
}

fn without_key(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("client_key");
    }
    body
}

/// The same JSON with its members in reverse order and pretty-printed: semantically equal.
pub fn reformatted(body: &Value) -> String {
    match body.as_object() {
        Some(map) => {
            let members: Vec<String> = map
                .iter()
                .rev()
                .map(|(k, v)| format!("  {}: {}", Value::String(k.clone()), v))
                .collect();
            format!("{{\n{}\n}}", members.join(",\n"))
        }
        None => body.to_string(),
    }
}

impl<'a> Generator<'a> {
    pub fn new(shop: &'a Shop, knobs: &'a Knobs, seed: u64) -> Generator<'a> {
        Generator {
            shop,
            knobs,
            rng: StdRng::seed_from_u64(seed),
            next_key: 0,
        }
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    fn key(&mut self, till: usize, route: Route) -> String {
        self.next_key += 1;
        format!(
            "{}/{}/{}",
            self.shop.tills[till].name,
            route.short(),
            self.next_key
        )
    }

    /// The operations of one round, `ops[i]` sent by till `i`.
    pub fn round(&mut self, model: &Model, allow_race: bool) -> Vec<Op> {
        let mut locks = Locks::default();
        let tills = self.knobs.tills;
        let mut ops: Vec<Option<Op>> = vec![None; tills];
        let mut racing = false;
        if allow_race && self.rng.random_bool(0.1) {
            let race = match self.rng.random_range(0..5) {
                0 => self.burn_race(model, &mut locks),
                1 => self.loyalty_race(model, &mut locks),
                2 => self.collect_race(model, &mut locks),
                3 => self.coupon_race(model, &mut locks),
                _ => self.count_race(model, &mut locks),
            };
            for op in race.into_iter().flatten() {
                racing = true;
                let till = op.till;
                ops[till] = Some(op);
            }
        }
        for (till, slot) in ops.iter_mut().enumerate() {
            if slot.is_none() {
                let mut op = self.normal(model, &mut locks, till);
                // A race is judged by the seqs of every fact of its round: all answered.
                if !racing && self.rng.random_bool(0.06) {
                    op.first_timeout =
                        Some(Duration::from_micros(self.rng.random_range(300..6000)));
                }
                if op.scope.is_some()
                    && !op.label.starts_with("invalid")
                    && self.rng.random_bool(0.08)
                {
                    op.key_in_header();
                }
                *slot = Some(op);
            }
        }
        ops.into_iter().flatten().collect()
    }

    fn normal(&mut self, model: &Model, locks: &mut Locks, till: usize) -> Op {
        let scoped = self.knobs.scoped_keys;
        let pick = self.rng.random_range(0..100);
        let op = match pick {
            0..28 => Some(self.sale(model, locks, till)),
            28..34 => self.coupon(model, locks, till),
            34..43 => Some(self.ret(model, locks, till)),
            43..50 => self.collect(model, locks, till),
            50..56 => self.count(model, locks, till),
            56..64 => self.earn(model, locks, till),
            64..72 => self.burn(model, locks, till),
            72..79 => self.retry(model, till),
            79..82 if scoped => self.new_body(model, locks, till),
            82..84 if scoped => self.other_till_key(model, locks, till),
            84..86 if scoped => self.other_route_key(model, locks, till),
            86..89 => self.unused_key(model, locks, till),
            89..95 => Some(self.invalid(till)),
            95..97 => self.consent(locks, till),
            97..98 => self.prepare(model, locks, till),
            98..100 => self.ship(model, locks, till),
            _ => None,
        };
        op.unwrap_or_else(|| self.sale(model, locks, till))
    }

    /// A fresh fact of `route` (None when nothing fits this round).
    fn fresh(&mut self, model: &Model, locks: &mut Locks, till: usize, route: Route) -> Option<Op> {
        match route {
            Route::Sale => Some(self.sale(model, locks, till)),
            Route::Return => Some(self.ret(model, locks, till)),
            Route::Collect => self.collect(model, locks, till),
            Route::Count => self.count(model, locks, till),
            Route::Earn => self.earn(model, locks, till),
            Route::Burn => self.burn(model, locks, till),
            Route::Consent => self.consent(locks, till),
            Route::Coupon => self.coupon(model, locks, till),
            Route::Prepare => self.prepare(model, locks, till),
            Route::Ship => self.ship(model, locks, till),
        }
    }

    fn op(&self, till: usize, route: Route, path: &str, body: Value, expect: Expect) -> Op {
        let scope = body["client_key"].as_str().map(|key| Scope {
            till,
            route,
            key: key.to_owned(),
        });
        Op {
            till,
            path: path.to_owned(),
            raw: body.to_string(),
            body,
            scope,
            header_key: None,
            expect,
            effect: Effect::default(),
            first_timeout: None,
            label: route.short().to_owned(),
        }
    }

    /// Replace the op's key (the body and the scope).
    fn with_key(mut op: Op, key: &str, label: &str) -> Op {
        op.body["client_key"] = json!(key);
        op.raw = op.body.to_string();
        if let Some(scope) = &mut op.scope {
            scope.key = key.to_owned();
        }
        op.label = label.to_owned();
        op
    }

    // ---------------------------------------------------------------------------------------
    // Items and lines

    /// A product no count reads this round (which this op will then move).
    fn movable(&mut self, locks: &mut Locks) -> usize {
        if !locks.raced.is_empty() && self.rng.random_bool(0.3) {
            let i = self.rng.random_range(0..locks.raced.len());
            return locks.raced[i];
        }
        loop {
            let p = self.rng.random_range(0..self.shop.products.len());
            if !locks.counted.contains(&p) {
                locks.touched.insert(p);
                return p;
            }
        }
    }

    fn qty(&mut self) -> i64 {
        match self.rng.random_range(0..100) {
            0..75 => 1,
            75..95 => self.rng.random_range(2..=5),
            _ => self.rng.random_range(6..=50),
        }
    }

    fn line_count(&mut self, most: usize) -> usize {
        let most = most.min(self.knobs.max_lines).max(1);
        let n = match self.rng.random_range(0..100) {
            0..35 => 1,
            35..80 => self.rng.random_range(2..=6),
            _ => self.rng.random_range(7..=30),
        };
        n.min(most)
    }

    /// The item a line names, and how (`sku`, GTIN-14 or EAN-13 `code`).
    fn name_item(&mut self, item: Item) -> (&'static str, String) {
        let gtin = match item {
            Item::Known(p) => {
                if self.rng.random_bool(0.5) {
                    return ("sku", self.shop.products[p].sku.clone());
                }
                &self.shop.products[p].gtin
            }
            Item::Unknown(u) => &self.shop.unknown[u],
        };
        if self.rng.random_bool(0.5) {
            ("code", gtin.clone())
        } else {
            ("code", gtin[1..].to_owned())
        }
    }

    /// `n` items for a ticket: mostly known, some the replica does not know, some twice.
    fn items(&mut self, locks: &mut Locks, n: usize) -> Vec<(Item, i64)> {
        let mut items: Vec<(Item, i64)> = Vec::with_capacity(n);
        for i in 0..n {
            let item = if i > 0 && self.rng.random_bool(0.12) {
                // The same item again in the same ticket: its own line, its own movement.
                items[self.rng.random_range(0..i)].0
            } else if self.rng.random_bool(0.08) {
                Item::Unknown(self.rng.random_range(0..self.shop.unknown.len()))
            } else {
                Item::Known(self.movable(locks))
            };
            let qty = self.qty();
            items.push((item, qty));
        }
        items
    }

    /// The lines of `items` as a till sends them (by SKU or barcode, prices when `priced`), and
    /// as the answer must show them.
    fn render(&mut self, items: &[(Item, i64)], priced: bool) -> (Vec<Value>, Vec<Value>) {
        let price_mode = self.rng.random_range(0..10);
        let mut request = Vec::with_capacity(items.len());
        let mut answer = Vec::with_capacity(items.len());
        for &(item, qty) in items {
            let price = match price_mode {
                _ if !priced => None,
                0..6 => Some(self.rng.random_range(0..=99_999i64)),
                6..8 => None,
                _ => self
                    .rng
                    .random_bool(0.5)
                    .then(|| self.rng.random_range(0..=99_999i64)),
            };
            let (field, name) = self.name_item(item);
            let mut line = Map::new();
            line.insert(field.into(), json!(name));
            line.insert("qty".into(), json!(qty));
            if let Some(p) = price {
                line.insert("unit_price_minor".into(), json!(p));
            }
            request.push(Value::Object(line));
            let (sku, gtin) = match item {
                Item::Known(p) => (
                    json!(self.shop.products[p].sku),
                    &self.shop.products[p].gtin,
                ),
                Item::Unknown(u) => (Value::Null, &self.shop.unknown[u]),
            };
            answer.push(json!({"sku": sku, "gtin": gtin, "qty": qty,
                               "unit_price_minor": price, "stock_applied": matches!(item, Item::Known(_))}));
        }
        (request, answer)
    }

    /// Part of a ticket sold earlier (by any till): (items with the quantities returned, its
    /// receipt).
    fn sold(&mut self, model: &Model, locks: &mut Locks) -> Option<(Vec<(Item, i64)>, Value)> {
        let sales: Vec<&Scope> = model
            .recorded
            .iter()
            .filter(|s| s.route == Route::Sale)
            .collect();
        let sale = &model.keys[*sales.choose(&mut self.rng)?];
        let mut items = Vec::new();
        for line in sale.answer["lines"].as_array()? {
            let item = match line["sku"].as_str() {
                Some(sku) => Item::Known(self.shop.product_by_sku(sku)?),
                None => Item::Unknown(self.shop.unknown_by_gtin(line["gtin"].as_str()?)?),
            };
            if let Item::Known(p) = item
                && locks.counted.contains(&p)
            {
                continue;
            }
            if self.rng.random_bool(0.6) {
                let qty = self.rng.random_range(1..=line["qty"].as_i64()?.max(1));
                items.push((item, qty));
            }
        }
        items.truncate(self.knobs.max_lines);
        if items.is_empty() {
            return None;
        }
        for (item, _) in &items {
            if let Item::Known(p) = item {
                locks.touched.insert(*p);
            }
        }
        Some((items, sale.body["receipt"].clone()))
    }

    /// Part of a click-and-collect order handed over earlier, brought back to the store.
    fn collected(&mut self, model: &Model, locks: &mut Locks) -> Option<(Vec<(Item, i64)>, usize)> {
        let shop = self.shop;
        let orders: Vec<usize> = (0..shop.orders.len())
            .filter(|o| model.collected[*o] || shop.orders[*o].collected_by_central())
            .collect();
        let order = *orders.choose(&mut self.rng)?;
        let mut items = Vec::new();
        for line in shop.orders[order].live() {
            if !locks.counted.contains(&line.product) && self.rng.random_bool(0.7) {
                items.push((
                    Item::Known(line.product),
                    self.rng.random_range(1..=line.qty),
                ));
            }
        }
        items.truncate(self.knobs.max_lines);
        if items.is_empty() {
            return None;
        }
        for (item, _) in &items {
            if let Item::Known(p) = item {
                locks.touched.insert(*p);
            }
        }
        Some((items, order))
    }

    // ---------------------------------------------------------------------------------------
    // Facts

    fn sale(&mut self, model: &Model, locks: &mut Locks, till: usize) -> Op {
        let n = self.line_count(30);
        let items = self.items(locks, n);
        let (request, mut answer) = self.render(&items, true);
        let total: Option<i64> = request
            .iter()
            .map(|l| {
                l["unit_price_minor"]
                    .as_i64()
                    .map(|p| p * l["qty"].as_i64().unwrap_or(0))
            })
            .sum();
        let key = self.key(till, Route::Sale);
        let mut body = json!({"client_key": key, "lines": request.clone()});
        let receipt = self
            .rng
            .random_bool(0.7)
            .then(|| format!("R-{}", self.next_key));
        if let Some(receipt) = &receipt {
            body["receipt"] = json!(receipt);
        }
        // A loyalty card scanned at the till (or the account named): the ticket is the
        // customer's, and earns them points by the store's rule; one till per customer and
        // round, since the answer shows the balance after.
        let customer = if self.rng.random_bool(0.3) {
            self.customer(locks)
        } else {
            None
        };
        if let Some(c) = customer {
            let (field, who) = self.who(c);
            body["customer"] = json!({ field: who });
        }
        if self.rng.random_bool(0.5) {
            body["currency"] = json!("EUR");
        }
        // One point per `earn_rule` minor units of each priced line, rounded down per line.
        let rule = self.shop.earn_rule;
        let points: Vec<i64> = request
            .iter()
            .map(|l| match (customer, l["unit_price_minor"].as_i64()) {
                (Some(_), Some(price)) if rule > 0 => price * l["qty"].as_i64().unwrap_or(0) / rule,
                _ => 0,
            })
            .collect();
        let earned: i64 = points.iter().sum();
        let earns = customer.is_some() && rule > 0;
        for (line, p) in answer.iter_mut().zip(&points) {
            line["points"] = if earns { json!(p) } else { Value::Null };
        }
        let expected = match customer {
            Some(c) => json!({"lines": answer, "total_minor": total,
                "customer_id": self.shop.customers[c].id,
                "points_earned": if earns { json!(earned) } else { Value::Null },
                "balance_after": model.balance(self.shop, c) + earned}),
            None => json!({"lines": answer, "total_minor": total, "customer_id": null,
                "points_earned": null, "balance_after": null}),
        };
        let mut op = self.op(
            till,
            Route::Sale,
            "/v1/sales",
            body,
            Expect::Created(expected),
        );
        op.effect.stock = items
            .iter()
            .filter_map(|(item, qty)| match item {
                Item::Known(p) => Some((*p, -qty)),
                Item::Unknown(_) => None,
            })
            .collect();
        if let Some(c) = customer
            && earned > 0
        {
            op.effect.points = Some((c, earned));
        }
        // Now and then a till reuses the receipt of a ticket already recorded: receipts are
        // unique per agent (returns find a ticket by it), so the sale is refused, nothing moves.
        if receipt.is_some()
            && self.rng.random_bool(0.03)
            && let Some(first) = model.receipts.choose(&mut self.rng)
        {
            op.body["receipt"] = json!(first);
            op.raw = op.body.to_string();
            op.expect = Expect::error(409, "receipt_reused", None, json!({"receipt": first}));
            op.effect = Effect::default();
            op.label = "sale reusing a receipt".to_owned();
            return op;
        }
        if let Some(receipt) = receipt {
            let lines = items
                .iter()
                .zip(&points)
                .map(|((item, qty), p)| SoldLine {
                    product: match item {
                        Item::Known(p) => Some(*p),
                        Item::Unknown(_) => None,
                    },
                    gtin: match item {
                        Item::Known(p) => self.shop.products[*p].gtin.clone(),
                        Item::Unknown(u) => self.shop.unknown[*u].clone(),
                    },
                    qty: *qty,
                    points: *p,
                })
                .collect();
            op.effect.sold = Some((receipt, SoldTicket { customer, lines }));
        }
        op
    }

    fn ret(&mut self, model: &Model, locks: &mut Locks, till: usize) -> Op {
        if self.rng.random_bool(0.5)
            && let Some(op) = self.named_return(model, locks, till)
        {
            return op;
        }
        let source = self.rng.random_range(0..100);
        let key = self.key(till, Route::Return);
        let mut origin = None;
        let mut receipt = Value::Null;
        let from_sale = if source < 40 {
            self.sold(model, locks)
        } else {
            None
        };
        let from_order = if (40..60).contains(&source) {
            self.collected(model, locks)
        } else {
            None
        };
        let items = if let Some((items, sold_on)) = from_sale {
            // A store sale brought back: the receipt it was sold on, sometimes as its origin.
            if self.rng.random_bool(0.5) {
                // The API refuses `null` (leave a field out instead), as a careful till does.
                origin = Some(if sold_on.is_null() {
                    json!({"channel": "store"})
                } else {
                    json!({"channel": "store", "order_id": sold_on})
                });
            } else {
                receipt = sold_on;
            }
            items
        } else if let Some((items, order)) = from_order {
            // A web order collected here, returned in store: cross-channel.
            origin = Some(json!({"channel": "web", "order_id": self.shop.orders[order].id}));
            items
        } else {
            let n = self.line_count(8);
            origin = match self.rng.random_range(0..100) {
                0..60 => None,
                60..92 => Some(
                    json!({"channel": "web", "order_id": format!("WEB-ONLINE-{}", self.next_key)}),
                ),
                _ => Some(json!({"channel": "app", "order_id": format!("APP-{}", self.next_key)})),
            };
            self.items(locks, n)
        };
        let (request, mut answer) = self.render(&items, false);
        let restock = self.rng.random_bool(0.75);
        let mut body = json!({"client_key": key, "lines": request});
        if let Some(origin) = &origin {
            body["origin"] = origin.clone();
        }
        if !receipt.is_null() {
            body["receipt"] = receipt;
        }
        let channel = origin
            .as_ref()
            .and_then(|o| o["channel"].as_str().map(str::to_owned));
        if !restock || self.rng.random_bool(0.3) {
            body["restock"] = json!(restock);
        }
        if self.rng.random_bool(0.4) {
            body["reason"] = json!("changed mind");
        }
        if !restock {
            for line in &mut answer {
                line["stock_applied"] = json!(false);
            }
        }
        let cross = matches!(channel.as_deref(), Some("web") | Some("app"));
        // Now and then a receipt from another store's till, line by line: this agent never
        // recorded it, so the return is recorded unchecked and central decides.
        if !cross && body.get("receipt").is_none() && self.rng.random_bool(0.15) {
            body["original"] = json!({"receipt": format!("R-ELSEWHERE-{}", self.next_key)});
            if let Some(lines) = body["lines"].as_array_mut() {
                for (i, line) in lines.iter_mut().enumerate() {
                    line["original_line"] = json!(i);
                }
            }
        }
        let mut op = self.op(
            till,
            Route::Return,
            "/v1/returns",
            body,
            Expect::Created(
                json!({"lines": answer, "cross_channel": cross, "restocked": restock,
                                   "original_checked": false, "points_reversed": null}),
            ),
        );
        if restock {
            op.effect.stock = items
                .iter()
                .filter_map(|(item, qty)| match item {
                    Item::Known(p) => Some((*p, *qty)),
                    Item::Unknown(_) => None,
                })
                .collect();
        }
        op
    }

    fn count(&mut self, model: &Model, locks: &mut Locks, till: usize) -> Option<Op> {
        let shop = self.shop;
        let k = self.rng.random_range(1..=6usize).min(self.knobs.max_lines);
        let mut chosen: Vec<usize> = Vec::with_capacity(k);
        for _ in 0..k * 4 {
            if chosen.len() == k {
                break;
            }
            let p = self.rng.random_range(0..shop.products.len());
            if !locks.touched.contains(&p) && !locks.counted.contains(&p) && !chosen.contains(&p) {
                chosen.push(p);
            }
        }
        if chosen.is_empty() {
            return None;
        }
        let apply = self.rng.random_bool(0.8);
        let mut counts = Vec::new();
        let mut items = Vec::new();
        let mut effect = Effect::default();
        for &p in &chosen {
            locks.counted.insert(p);
            locks.touched.insert(p);
            let expected = model.on_hand[p];
            let counted = if self.rng.random_bool(0.25) {
                expected.max(0)
            } else {
                (expected + self.rng.random_range(-6..=6)).max(0)
            };
            if counted >= 2 && self.rng.random_bool(0.15) {
                // The item on two shelves: two lines, summed into one item.
                let first = self.rng.random_range(1..counted);
                for part in [first, counted - first] {
                    let (field, name) = self.name_item(Item::Known(p));
                    counts.push(json!({field: name, "counted": part}));
                }
            } else {
                let (field, name) = self.name_item(Item::Known(p));
                counts.push(json!({field: name, "counted": counted}));
            }
            let delta = counted - expected;
            items.push(
                json!({"sku": shop.products[p].sku, "gtin": shop.products[p].gtin,
                              "counted": counted, "expected": expected, "delta": delta,
                              "watermark_seq": 0}),
            );
            if apply && delta != 0 {
                effect.stock.push((p, delta));
            }
        }
        if self.rng.random_bool(0.05) {
            // A tag the replica does not know yet: listed, nothing to compare it with.
            let u = self.rng.random_range(0..shop.unknown.len());
            let (field, name) = self.name_item(Item::Unknown(u));
            counts.push(json!({field: name, "counted": 2}));
            items.push(json!({"sku": null, "gtin": shop.unknown[u], "counted": 2,
                              "expected": null, "delta": null}));
        }
        let key = self.key(till, Route::Count);
        let mut body = json!({"client_key": key, "counts": counts});
        if !apply || self.rng.random_bool(0.3) {
            body["apply"] = json!(apply);
        }
        if self.rng.random_bool(0.5) {
            body["zone"] = json!("sales floor");
        }
        let adjustments = effect.stock.len();
        let mut op = self.op(
            till,
            Route::Count,
            "/v1/cycle-counts",
            body,
            Expect::Created(
                json!({"items": items, "ignored_tags": [], "adjustments": adjustments}),
            ),
        );
        op.effect = effect;
        Some(op)
    }

    fn customer(&mut self, locks: &mut Locks) -> Option<usize> {
        for _ in 0..20 {
            let c = self.rng.random_range(0..self.shop.customers.len());
            if locks.customers.insert(c) {
                return Some(c);
            }
        }
        None
    }

    /// Who the operation names: the card as a reader or a person spells it, or the id.
    fn who(&mut self, c: usize) -> (&'static str, String) {
        let customer = &self.shop.customers[c];
        match self.rng.random_range(0..4) {
            0 => ("customer_id", customer.id.clone()),
            1 => ("card", customer.card.clone()),
            2 => ("card", customer.card.to_lowercase()),
            _ => {
                let pairs: Vec<String> = customer
                    .card
                    .as_bytes()
                    .chunks(2)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                ("card", pairs.join(":"))
            }
        }
    }

    fn loyalty_body(&mut self, till: usize, route: Route, c: usize, points: i64) -> Value {
        let key = self.key(till, route);
        let (field, who) = self.who(c);
        let mut body = json!({"client_key": key, field: who, "points": points});
        if self.rng.random_bool(0.5) {
            body["receipt"] = json!(format!("R-{}", self.next_key));
        }
        body
    }

    fn earn(&mut self, model: &Model, locks: &mut Locks, till: usize) -> Option<Op> {
        let c = self.customer(locks)?;
        let points = if self.rng.random_bool(0.01) {
            10_000_000
        } else {
            self.rng.random_range(1..=3_000)
        };
        let body = self.loyalty_body(till, Route::Earn, c, points);
        let balance = model.balance(self.shop, c);
        let mut op = self.op(
            till,
            Route::Earn,
            "/v1/loyalty/earn",
            body,
            Expect::Created(json!({"customer_id": self.shop.customers[c].id,
                                   "points": points, "balance_after": balance + points})),
        );
        op.effect.points = Some((c, points));
        Some(op)
    }

    fn burn(&mut self, model: &Model, locks: &mut Locks, till: usize) -> Option<Op> {
        let c = self.customer(locks)?;
        let balance = model.balance(self.shop, c);
        let room = model.cap_room(c);
        let fits = balance.min(room);
        let points = match self.rng.random_range(0..100) {
            // Exactly what is left (of the balance, or of the cap): the boundary is allowed.
            0..12 if fits >= 1 => fits,
            12..65 if fits >= 1 => self.rng.random_range(1..=fits.min(2_500)),
            0..80 => balance + self.rng.random_range(1..=500),
            _ => room.max(0) + self.rng.random_range(1..=500),
        }
        .clamp(1, 10_000_000);
        let body = self.loyalty_body(till, Route::Burn, c, points);
        let expect = burn_expectation(self.shop, model, c, points);
        let applies = matches!(expect, Expect::Created(_));
        let mut op = self.op(till, Route::Burn, "/v1/loyalty/burn", body, expect);
        if applies {
            op.effect.points = Some((c, -points));
        }
        Some(op)
    }

    // ---------------------------------------------------------------------------------------
    // Consent and coupons

    /// A customer allows or withdraws marketing (mostly) or profiling at the till.
    fn consent(&mut self, locks: &mut Locks, till: usize) -> Option<Op> {
        let c = self.customer(locks)?;
        let purpose = usize::from(self.rng.random_bool(0.25));
        let granted = self.rng.random_bool(0.5);
        let name = ["marketing", "profiling"][purpose];
        let key = self.key(till, Route::Consent);
        let id = &self.shop.customers[c].id;
        let mut op = self.op(
            till,
            Route::Consent,
            &format!("/v1/customers/{id}/consent"),
            json!({"client_key": key, "purpose": name, "granted": granted}),
            Expect::Created(json!({"customer_id": id, "purpose": name, "granted": granted})),
        );
        op.effect.consent = Some((c, purpose, granted));
        Some(op)
    }

    /// A coupon taken on a ticket, in one of its forms: a single-use one already redeemed
    /// today is refused with the first redemption's seq.
    fn coupon(&mut self, model: &Model, locks: &mut Locks, till: usize) -> Option<Op> {
        let shop = self.shop;
        let i = (0..10)
            .map(|_| self.rng.random_range(0..shop.coupons.len()))
            .find(|i| locks.coupons.insert(*i))?;
        let coupon = &shop.coupons[i];
        let code = coupon.forms.choose(&mut self.rng)?.clone();
        let key = self.key(till, Route::Coupon);
        let mut body = json!({"client_key": key, "code": code});
        if self.rng.random_bool(0.6) {
            body["receipt"] = json!(format!("R-{}", self.next_key));
        }
        if self.rng.random_bool(0.3) {
            let c = self.rng.random_range(0..shop.customers.len());
            let (field, who) = self.who(c);
            body["customer"] = json!({field: who});
        }
        let first = model.redeemed.get(&coupon.identity);
        let expect = match first {
            Some(seq) if coupon.single_use => Expect::error(
                409,
                "coupon_already_redeemed",
                None,
                json!({"coupon": coupon.identity, "seq": seq}),
            ),
            _ => {
                Expect::Created(json!({"coupon": coupon.identity, "single_use": coupon.single_use}))
            }
        };
        let applies = matches!(expect, Expect::Created(_));
        let mut op = self.op(till, Route::Coupon, "/v1/coupons/redeem", body, expect);
        if applies && coupon.single_use {
            op.effect.coupon = Some(coupon.identity.clone());
        }
        Some(op)
    }

    // ---------------------------------------------------------------------------------------
    // Keys used again

    /// A till retries a request that was answered: the first answer comes back.
    fn retry(&mut self, model: &Model, till: usize) -> Option<Op> {
        let own: Vec<&Scope> = model.recorded.iter().filter(|s| s.till == till).collect();
        let scope = (*own.choose(&mut self.rng)?).clone();
        let first = &model.keys[&scope];
        let raw = if self.rng.random_bool(0.5) {
            reformatted(&first.body)
        } else {
            first.body.to_string()
        };
        let mut op = Op {
            till,
            path: first.path.clone(),
            body: first.body.clone(),
            raw,
            expect: Expect::Replay(first.answer.clone()),
            effect: first.effect.clone(),
            first_timeout: None,
            label: format!("retry of {}", scope.route.short()),
            scope: Some(scope),
            header_key: None,
        };
        // The key in the header this time: the same request all the same.
        if self.rng.random_bool(0.25) {
            op.key_in_header();
        }
        Some(op)
    }

    /// The key of an answered request with another request (another body, or another pickup
    /// code): 422 naming the fact that holds the key, nothing recorded.
    fn new_body(&mut self, model: &Model, locks: &mut Locks, till: usize) -> Option<Op> {
        let own: Vec<&Scope> = model.recorded.iter().filter(|s| s.till == till).collect();
        let scope = (*own.choose(&mut self.rng)?).clone();
        let op = self.fresh(model, locks, till, scope.route)?;
        let first = &model.keys[&scope];
        if !matches!(op.expect, Expect::Created(_))
            || (op.path == first.path && without_key(&op.body) == without_key(&first.body))
        {
            return None;
        }
        let first_seq = first.answer["seq"].clone();
        let mut op = Self::with_key(op, &scope.key, "same key, another request");
        op.expect = Expect::error(
            422,
            "idempotency_key_reused",
            Some("client_key"),
            json!({"first_seq": first_seq}),
        );
        Some(op)
    }

    /// Another till's key on the same route: a different fact.
    fn other_till_key(&mut self, model: &Model, locks: &mut Locks, till: usize) -> Option<Op> {
        let theirs: Vec<&Scope> = model
            .recorded
            .iter()
            .filter(|s| s.till != till)
            .filter(|s| {
                !model.keys.contains_key(&Scope {
                    till,
                    route: s.route,
                    key: s.key.clone(),
                })
            })
            .collect();
        let scope = (*theirs.choose(&mut self.rng)?).clone();
        let op = self.fresh(model, locks, till, scope.route)?;
        Some(Self::with_key(op, &scope.key, "another till's key"))
    }

    /// The till's own key on another route: a different fact.
    fn other_route_key(&mut self, model: &Model, locks: &mut Locks, till: usize) -> Option<Op> {
        let own: Vec<&Scope> = model.recorded.iter().filter(|s| s.till == till).collect();
        let scope = (*own.choose(&mut self.rng)?).clone();
        let routes: Vec<Route> = Route::ALL
            .into_iter()
            .filter(|r| *r != scope.route)
            .filter(|r| {
                !model.keys.contains_key(&Scope {
                    till,
                    route: *r,
                    key: scope.key.clone(),
                })
            })
            .collect();
        let route = *routes.choose(&mut self.rng)?;
        let op = self.fresh(model, locks, till, route)?;
        Some(Self::with_key(op, &scope.key, "key of another route"))
    }

    /// A key whose request was refused (400, 404, 409): unused, so a new request may take it.
    fn unused_key(&mut self, model: &Model, locks: &mut Locks, till: usize) -> Option<Op> {
        let free: Vec<&Scope> = model
            .unused_keys
            .iter()
            .filter(|s| s.till == till && !model.keys.contains_key(s))
            .collect();
        let scope = (*free.choose(&mut self.rng)?).clone();
        let op = self.fresh(model, locks, till, scope.route)?;
        Some(Self::with_key(op, &scope.key, "refused request's key"))
    }

    // ---------------------------------------------------------------------------------------
    // Requests the agent must refuse, changing nothing

    fn invalid(&mut self, till: usize) -> Op {
        let shop = self.shop;
        let p = self.rng.random_range(0..shop.products.len());
        let sku = shop.products[p].sku.clone();
        let c = self.rng.random_range(0..shop.customers.len());
        let kind = self.rng.random_range(0..15);
        let route = match kind {
            0..4 | 12 => Route::Sale,
            4 => {
                if self.rng.random_bool(0.5) {
                    Route::Earn
                } else {
                    Route::Burn
                }
            }
            5 => Route::Count,
            6 | 9 => Route::Return,
            7 => Route::Burn,
            10 => Route::Sale,
            11 => Route::Count,
            13 => Route::Consent,
            14 => Route::Coupon,
            _ => Route::Collect,
        };
        let key = self.key(till, route);
        let (path, body, expect, label) = match kind {
            0 => (
                "/v1/sales".to_owned(),
                json!({"client_key": key, "lines": [{"sku": sku, "qty": 1}], "colour": "blue"}),
                Expect::error(400, "invalid_json", None, json!({})),
                "unknown field",
            ),
            1 => {
                let n = self.rng.random_range(1..=4usize);
                let bad = self.rng.random_range(0..n);
                let qty = *[0i64, -3, 1_000_001].choose(&mut self.rng).unwrap_or(&0);
                let lines: Vec<Value> = (0..n)
                    .map(|i| json!({"sku": sku, "qty": if i == bad { qty } else { 1 }}))
                    .collect();
                (
                    "/v1/sales".to_owned(),
                    json!({"client_key": key, "lines": lines}),
                    Expect::error(
                        400,
                        "invalid_field",
                        Some(&format!("lines[{bad}].qty")),
                        json!({}),
                    ),
                    "bad qty",
                )
            }
            2 => {
                let lines: Vec<Value> = (0..501).map(|_| json!({"sku": sku, "qty": 1})).collect();
                (
                    "/v1/sales".to_owned(),
                    json!({"client_key": key, "lines": lines}),
                    Expect::error(400, "invalid_field", Some("lines"), json!({})),
                    "501 lines",
                )
            }
            3 => (
                "/v1/sales".to_owned(),
                json!({"lines": [{"sku": sku, "qty": 1}]}),
                Expect::error(400, "invalid_field", Some("client_key"), json!({})),
                "no client_key",
            ),
            4 => {
                let points = *[0i64, 10_000_001, -5].choose(&mut self.rng).unwrap_or(&0);
                let path = if route == Route::Earn {
                    "/v1/loyalty/earn"
                } else {
                    "/v1/loyalty/burn"
                };
                (
                    path.to_owned(),
                    json!({"client_key": key, "customer_id": shop.customers[c].id, "points": points}),
                    Expect::error(400, "invalid_field", Some("points"), json!({})),
                    "bad points",
                )
            }
            5 => (
                "/v1/cycle-counts".to_owned(),
                json!({"client_key": key, "counts": [{"sku": sku, "counted": -1}]}),
                Expect::error(400, "invalid_field", Some("counts[0].counted"), json!({})),
                "negative count",
            ),
            6 => (
                "/v1/returns".to_owned(),
                json!({"client_key": key, "origin": {"channel": "web"},
                       "lines": [{"sku": sku, "qty": 1}]}),
                Expect::error(400, "invalid_field", Some("origin.order_id"), json!({})),
                "web return without order",
            ),
            7 => (
                "/v1/loyalty/burn".to_owned(),
                json!({"client_key": key, "customer_id": "C-NOBODY", "points": 10}),
                Expect::error(404, "not_found", None, json!({})),
                "unknown customer",
            ),
            8 => (
                "/v1/pickups/NO-SUCH-CODE/collect".to_owned(),
                json!({"client_key": key}),
                Expect::error(404, "not_found", None, json!({})),
                "unknown pickup code",
            ),
            10 => (
                "/v1/sales".to_owned(),
                json!({"client_key": key, "lines": [
                    {"sku": sku, "qty": 1, "unit_price_minor": 5},
                    {"sku": sku, "qty": 1, "unit_price_minor": 1_000_000_001i64}]}),
                Expect::error(
                    400,
                    "invalid_field",
                    Some("lines[1].unit_price_minor"),
                    json!({}),
                ),
                "price out of range",
            ),
            11 => (
                "/v1/cycle-counts".to_owned(),
                json!({"client_key": key, "counts": [{"sku": sku, "counted": 1_000_001}]}),
                Expect::error(400, "invalid_field", Some("counts[0].counted"), json!({})),
                "count out of range",
            ),
            12 => (
                "/v1/sales".to_owned(),
                json!({"client_key": key, "customer": {"card": "04FFFFFFFFFFFF"},
                       "lines": [{"sku": sku, "qty": 1}]}),
                Expect::error(404, "not_found", None, json!({})),
                "a ticket naming a card nobody holds",
            ),
            13 => (
                "/v1/customers/C-NOBODY/consent".to_owned(),
                json!({"client_key": key, "purpose": "marketing", "granted": true}),
                Expect::error(404, "not_found", None, json!({})),
                "consent of an unknown customer",
            ),
            14 => {
                let code = *[
                    // The serial's length indicator promises 6 digits; 3 follow.
                    "(8110)061414100012325011000050123",
                    "(01)09506000134352",
                    "NO SPACES",
                    "ab",
                ]
                .choose(&mut self.rng)
                .unwrap_or(&"ab");
                (
                    "/v1/coupons/redeem".to_owned(),
                    json!({"client_key": key, "code": code}),
                    Expect::error(400, "invalid_field", Some("code"), json!({})),
                    "malformed coupon",
                )
            }
            _ => (
                "/v1/returns".to_owned(),
                json!({"client_key": key, "lines": [{"sku": sku, "qty": 1, "colour": "red"}]}),
                Expect::error(400, "invalid_json", None, json!({})),
                "unknown line field",
            ),
        };
        let mut op = self.op(till, route, &path, body, expect);
        op.label = format!("invalid: {label}");
        op
    }

    // ---------------------------------------------------------------------------------------
    // Contention

    /// Every till burns the same points from one customer at the same moment.
    fn burn_race(&mut self, model: &Model, locks: &mut Locks) -> Option<Vec<Op>> {
        let shop = self.shop;
        let tills = self.knobs.tills;
        let c = (0..20)
            .map(|_| self.rng.random_range(0..shop.customers.len()))
            .find(|c| model.balance(shop, *c).min(model.cap_room(*c)) >= 2)?;
        locks.customers.insert(c);
        let balance = model.balance(shop, c);
        let room = model.cap_room(c);
        let k = self.rng.random_range(1..=tills as i64 + 2);
        let points = (balance.min(room) / k).max(1);
        let successes = (tills as i64).min(balance / points).min(room / points) as usize;
        let after = successes as i64 * points;
        let refusal = if balance - after < points {
            Expect::error(
                409,
                "insufficient_points",
                None,
                json!({"balance": balance - after, "requested": points}),
            )
        } else {
            Expect::error(
                409,
                "offline_burn_cap",
                None,
                json!({"allowed": (room - after).max(0), "requested": points}),
            )
        };
        let expect = Expect::LoyaltyRace {
            customer: c,
            balance,
            burned: model.burned[c],
            cap: model.cap,
            successes,
            refusal: Some(Box::new(refusal)),
        };
        let ops = (0..tills)
            .map(|till| {
                let body = self.loyalty_body(till, Route::Burn, c, points);
                let mut op = self.op(till, Route::Burn, "/v1/loyalty/burn", body, expect.clone());
                op.effect.points = Some((c, -points));
                op.label = "burn race".to_owned();
                op
            })
            .collect();
        Some(ops)
    }

    /// Every till earns or burns points of one customer at the same moment, the burns within
    /// what the balance and the cap allow whatever the order: all succeed.
    fn loyalty_race(&mut self, model: &Model, locks: &mut Locks) -> Option<Vec<Op>> {
        let shop = self.shop;
        let tills = self.knobs.tills;
        let c = (0..20)
            .map(|_| self.rng.random_range(0..shop.customers.len()))
            .find(|c| model.balance(shop, *c).min(model.cap_room(*c)) >= tills as i64)?;
        locks.customers.insert(c);
        let mut budget = model.balance(shop, c).min(model.cap_room(c));
        let expect = Expect::LoyaltyRace {
            customer: c,
            balance: model.balance(shop, c),
            burned: model.burned[c],
            cap: model.cap,
            successes: tills,
            refusal: None,
        };
        let ops = (0..tills)
            .map(|till| {
                let burn = budget >= 1 && self.rng.random_bool(0.5);
                let (route, path, points) = if burn {
                    let p = self.rng.random_range(1..=(budget / 2).max(1));
                    budget -= p;
                    (Route::Burn, "/v1/loyalty/burn", p)
                } else {
                    (
                        Route::Earn,
                        "/v1/loyalty/earn",
                        self.rng.random_range(1..=2_000),
                    )
                };
                let body = self.loyalty_body(till, route, c, points);
                let mut op = self.op(till, route, path, body, expect.clone());
                op.effect.points = Some((c, if burn { -points } else { points }));
                op.label = "earn and burn race".to_owned();
                op
            })
            .collect();
        Some(ops)
    }

    /// One till counts items while the others sell and return them.
    fn count_race(&mut self, model: &Model, locks: &mut Locks) -> Option<Vec<Op>> {
        let shop = self.shop;
        let till = self.rng.random_range(0..self.knobs.tills);
        let k = self.rng.random_range(1..=4usize).min(self.knobs.max_lines);
        let mut before: Vec<(usize, i64, i64)> = Vec::with_capacity(k);
        let mut counts = Vec::with_capacity(k);
        while before.len() < k {
            let p = self.rng.random_range(0..shop.products.len());
            if before.iter().any(|(q, _, _)| *q == p) {
                continue;
            }
            let on_hand = model.on_hand[p];
            let counted = (on_hand + self.rng.random_range(-5..=5)).max(0);
            let (field, name) = self.name_item(Item::Known(p));
            counts.push(json!({field: name, "counted": counted}));
            before.push((p, on_hand, counted));
            locks.touched.insert(p);
            locks.raced.push(p);
        }
        let key = self.key(till, Route::Count);
        let body = json!({"client_key": key, "counts": counts, "zone": "stock room"});
        let mut op = self.op(
            till,
            Route::Count,
            "/v1/cycle-counts",
            body,
            Expect::CountRace { before },
        );
        op.label = "count race".to_owned();
        Some(vec![op])
    }

    /// Several tills redeem one single-use coupon not taken yet, each in a form of its own.
    fn coupon_race(&mut self, model: &Model, locks: &mut Locks) -> Option<Vec<Op>> {
        let shop = self.shop;
        let free: Vec<usize> = (0..shop.coupons.len())
            .filter(|i| {
                shop.coupons[*i].single_use
                    && !model.redeemed.contains_key(&shop.coupons[*i].identity)
            })
            .collect();
        let i = *free.choose(&mut self.rng)?;
        locks.coupons.insert(i);
        let coupon = &shop.coupons[i];
        let mut tills: Vec<usize> = (0..self.knobs.tills).collect();
        rand::seq::SliceRandom::shuffle(tills.as_mut_slice(), &mut self.rng);
        let k = self.rng.random_range(2..=self.knobs.tills.max(2));
        let ops = tills
            .into_iter()
            .take(k)
            .map(|till| {
                let key = self.key(till, Route::Coupon);
                let code = coupon
                    .forms
                    .choose(&mut self.rng)
                    .cloned()
                    .unwrap_or_default();
                let mut op = self.op(
                    till,
                    Route::Coupon,
                    "/v1/coupons/redeem",
                    json!({"client_key": key, "code": code}),
                    Expect::CollectRace {
                        answer: json!({"coupon": coupon.identity, "single_use": true}),
                        refused: "coupon_already_redeemed".to_owned(),
                    },
                );
                op.effect.coupon = Some(coupon.identity.clone());
                op.label = "coupon race".to_owned();
                op
            })
            .collect();
        Some(ops)
    }
}

/// Balance first, then the offline cap (points burned here, never confirmed by central).
fn burn_expectation(shop: &Shop, model: &Model, c: usize, points: i64) -> Expect {
    let balance = model.balance(shop, c);
    if points > balance {
        Expect::error(
            409,
            "insufficient_points",
            None,
            json!({"balance": balance, "requested": points}),
        )
    } else if model.burned[c] + points > model.cap {
        Expect::error(
            409,
            "offline_burn_cap",
            None,
            json!({"allowed": model.cap_room(c).max(0), "requested": points}),
        )
    } else {
        Expect::Created(
            json!({"customer_id": shop.customers[c].id, "points": -points,
                               "balance_after": balance - points}),
        )
    }
}
