//! The oracle's own picture of the store: what on-hand, available and each balance must be
//! after the facts the agent confirmed, and which idempotency keys hold which first answer.
//! Written from the rules in docs/api.md and the brief, never from the agent's code or files.

use crate::shop::Shop;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Route {
    Sale,
    Return,
    Collect,
    Count,
    Earn,
    Burn,
    Consent,
    Coupon,
    Prepare,
    Ship,
}

impl Route {
    pub const ALL: [Route; 10] = [
        Route::Sale,
        Route::Return,
        Route::Collect,
        Route::Count,
        Route::Earn,
        Route::Burn,
        Route::Consent,
        Route::Coupon,
        Route::Prepare,
        Route::Ship,
    ];

    pub fn short(self) -> &'static str {
        match self {
            Route::Sale => "sale",
            Route::Return => "return",
            Route::Collect => "collect",
            Route::Count => "count",
            Route::Earn => "earn",
            Route::Burn => "burn",
            Route::Consent => "consent",
            Route::Coupon => "coupon",
            Route::Prepare => "prepare",
            Route::Ship => "ship",
        }
    }
}

/// What a fact does to the store once recorded.
#[derive(Clone, Default, Debug)]
pub struct Effect {
    /// (product, signed on-hand change), one per stock movement.
    pub stock: Vec<(usize, i64)>,
    /// (customer, signed points).
    pub points: Option<(usize, i64)>,
    /// A consent change: (customer, purpose: 0 marketing / 1 profiling, granted).
    pub consent: Option<(usize, usize, bool)>,
    /// A single-use coupon taken (its identity).
    pub coupon: Option<String>,
    /// (order, index of the line) handed over or shipped here: its reservation no longer
    /// counts, and it is never handed over again.
    pub release: Vec<(usize, usize)>,
    /// (order, index of the line) prepared here: ready for hand-over.
    pub prepare: Vec<(usize, usize)>,
    /// A ship order's next step recorded.
    pub ship_step: Option<usize>,
    /// Points a return took back from the customer whose ticket earned them (positive): they
    /// lower the balance but are no burn (the offline cap does not count them).
    pub reversed: Option<(usize, i64)>,
    /// A ticket with a receipt: what it sold, for the returns that name it.
    pub sold: Option<(String, SoldTicket)>,
    /// Units returned of lines of an original (`receipt:R` or `order:O`, line, qty).
    pub returned: Vec<(String, u32, i64)>,
}

/// One line of a ticket as the oracle remembers it.
#[derive(Clone, Debug)]
pub struct SoldLine {
    pub product: Option<usize>,
    /// GTIN-14 of the item (what names an item the replica does not know).
    pub gtin: String,
    pub qty: i64,
    pub points: i64,
}

#[derive(Clone, Debug)]
pub struct SoldTicket {
    pub customer: Option<usize>,
    pub lines: Vec<SoldLine>,
}

impl Effect {
    pub fn movements(&self) -> usize {
        self.stock.len()
    }
}

/// An idempotency key's scope (target semantics): the caller's token name and the route.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Scope {
    pub till: usize,
    pub route: Route,
    pub key: String,
}

/// A fact the agent confirmed, as the first answer gave it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    /// The request body (with its `client_key`).
    pub body: Value,
    /// The whole first answer.
    pub answer: Value,
    pub effect: Effect,
}

pub struct Model {
    pub on_hand: Vec<i64>,
    /// Click-and-collect orders with a line handed over here.
    pub collected: Vec<bool>,
    /// The seq of the latest fact that handed a line of each order over here.
    pub collected_seq: Vec<Option<u64>>,
    /// Per order and line: handed over (or shipped) here.
    pub released: Vec<Vec<bool>>,
    /// Per order and line: prepared here.
    pub prepared: Vec<Vec<bool>>,
    /// Per ship order: steps recorded (0 none, 1 picked, 2 packed, 3 shipped).
    pub steps: Vec<usize>,
    pub earned: Vec<i64>,
    /// Points burned here (never confirmed by central in a day without a broker).
    pub burned: Vec<i64>,
    /// Points returns took back here.
    pub reversed: Vec<i64>,
    /// Tickets with a receipt, by receipt, and the receipts in the order they were recorded
    /// (the generator picks from that list: a map's order differs from run to run).
    pub sold: HashMap<String, SoldTicket>,
    pub receipts: Vec<String>,
    /// Units returned so far per (original, line).
    pub returned: HashMap<(String, u32), i64>,
    /// Correction after a balance mismatch, so one divergence is reported once.
    pub balance_fix: Vec<i64>,
    /// Correction of `reserved` after an `available` mismatch.
    pub reserved_fix: Vec<i64>,
    pub keys: HashMap<Scope, Recorded>,
    /// The scopes of `keys` in the order they were recorded (the generator picks from it:
    /// a hash map's order would differ from run to run).
    pub recorded: Vec<Scope>,
    /// Keys of race winners: which till wins is up to the agent, so the generator never picks
    /// them (a day stays the same day whoever wins); restarts replay them all the same.
    pub raced: Vec<Scope>,
    /// Keys a till sent that the agent refused (400/404/409/422): unused, free to use again.
    pub unused_keys: Vec<Scope>,
    /// Consent changes recorded today, per customer and purpose: dated after central's, so
    /// they are in effect.
    pub consent: Vec<[Option<bool>; 2]>,
    /// Single-use coupons redeemed today and the seq of the first redemption.
    pub redeemed: HashMap<String, u64>,
    pub seqs: HashSet<u64>,
    pub ids: HashSet<String>,
    pub cap: i64,
}

impl Model {
    pub fn new(shop: &Shop) -> Model {
        Model {
            on_hand: shop.products.iter().map(|p| p.baseline).collect(),
            collected: vec![false; shop.orders.len()],
            collected_seq: vec![None; shop.orders.len()],
            released: shop
                .orders
                .iter()
                .map(|o| vec![false; o.lines.len()])
                .collect(),
            prepared: shop
                .orders
                .iter()
                .map(|o| vec![false; o.lines.len()])
                .collect(),
            steps: vec![0; shop.orders.len()],
            earned: vec![0; shop.customers.len()],
            burned: vec![0; shop.customers.len()],
            reversed: vec![0; shop.customers.len()],
            sold: HashMap::new(),
            receipts: Vec::new(),
            returned: HashMap::new(),
            balance_fix: vec![0; shop.customers.len()],
            reserved_fix: vec![0; shop.products.len()],
            keys: HashMap::new(),
            recorded: Vec::new(),
            raced: Vec::new(),
            unused_keys: Vec::new(),
            consent: vec![[None, None]; shop.customers.len()],
            redeemed: HashMap::new(),
            seqs: HashSet::new(),
            ids: HashSet::new(),
            cap: shop.cap,
        }
    }

    /// Σ qty of `open` and `picked` lines not handed over or shipped here.
    pub fn reserved(&self, shop: &Shop, product: usize) -> i64 {
        shop.reservations[product]
            .iter()
            .filter(|(order, line, _)| !self.released[*order][*line])
            .map(|(_, _, qty)| qty)
            .sum::<i64>()
            + self.reserved_fix[product]
    }

    /// Lines (indices) of an order still to leave the store: not cancelled, not collected per
    /// central, not handed over here.
    pub fn open_lines(&self, shop: &Shop, order: usize) -> Vec<usize> {
        shop.orders[order]
            .lines
            .iter()
            .enumerate()
            .filter(|(i, l)| {
                l.status != crate::shop::LineStatus::Cancelled
                    && l.status != crate::shop::LineStatus::Collected
                    && !self.released[order][*i]
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Picked per central, or prepared here.
    pub fn ready(&self, shop: &Shop, order: usize, line: usize) -> bool {
        shop.orders[order].lines[line].status == crate::shop::LineStatus::Picked
            || self.prepared[order][line]
    }

    pub fn available(&self, shop: &Shop, product: usize) -> i64 {
        self.on_hand[product] - self.reserved(shop, product)
    }

    /// Central's balance + Σ local earn − Σ local burn.
    pub fn balance(&self, shop: &Shop, customer: usize) -> i64 {
        shop.customers[customer].central_balance + self.earned[customer]
            - self.burned[customer]
            - self.reversed[customer]
            + self.balance_fix[customer]
    }

    /// Points that may still be burned here before the offline cap.
    pub fn cap_room(&self, customer: usize) -> i64 {
        self.cap - self.burned[customer]
    }

    /// Remember a key's first answer (once: a replay changes nothing).
    pub fn record(&mut self, scope: Scope, recorded: Recorded, raced: bool) {
        if !self.keys.contains_key(&scope) {
            if raced {
                self.raced.push(scope.clone());
            } else {
                self.recorded.push(scope.clone());
            }
            self.keys.insert(scope, recorded);
        }
    }

    /// The effect of the fact the agent answered with `seq`.
    pub fn apply(&mut self, effect: &Effect, seq: Option<u64>) {
        for (product, delta) in &effect.stock {
            self.on_hand[*product] += delta;
        }
        if let Some((customer, points)) = effect.points {
            if points >= 0 {
                self.earned[customer] += points;
            } else {
                self.burned[customer] -= points;
            }
        }
        if let Some((customer, points)) = effect.reversed {
            self.reversed[customer] += points;
        }
        if let Some((receipt, ticket)) = &effect.sold
            && !self.sold.contains_key(receipt)
        {
            self.receipts.push(receipt.clone());
            self.sold.insert(receipt.clone(), ticket.clone());
        }
        for (original, line, qty) in &effect.returned {
            *self.returned.entry((original.clone(), *line)).or_insert(0) += qty;
        }
        if let Some((customer, purpose, granted)) = effect.consent {
            self.consent[customer][purpose] = Some(granted);
        }
        if let (Some(coupon), Some(seq)) = (&effect.coupon, seq) {
            self.redeemed.entry(coupon.clone()).or_insert(seq);
        }
        for (order, line) in &effect.release {
            self.released[*order][*line] = true;
            self.collected[*order] = true;
            self.collected_seq[*order] = seq;
        }
        for (order, line) in &effect.prepare {
            self.prepared[*order][*line] = true;
        }
        if let Some(order) = effect.ship_step {
            self.steps[order] += 1;
        }
    }

    /// The consent in effect for a purpose: today's change, else central's, else none.
    pub fn consent(&self, shop: &Shop, customer: usize, purpose: usize) -> bool {
        self.consent[customer][purpose]
            .or(shop.customers[customer].central_consent[purpose])
            .unwrap_or(false)
    }

    /// The pickup status `GET /v1/pickups/{code}` must show.
    pub fn pickup_status(&self, shop: &Shop, order: usize) -> &'static str {
        let o = &shop.orders[order];
        let open = self.open_lines(shop, order);
        if o.all_cancelled() {
            "cancelled"
        } else if open.is_empty() {
            "collected"
        } else if open.iter().all(|l| self.ready(shop, order, *l)) {
            "ready"
        } else {
            "not_ready"
        }
    }
}
