//! The rules of store facts: what a sale, a return, a hand-over, a cycle count or a loyalty
//! operation does to stock and points, and the checks against earlier facts.
//!
//! These are plain functions over a [`Ledger`], the read side of the outbox writer's open
//! transaction: the writer calls [`StoreFact::settle`] for each fact of a group, in `seq`
//! order, so every check and every computed figure (a count's `expected`, a burn's balance)
//! sees every fact committed before it, this group's included — never a reader's snapshot that
//! another till could change before the commit. [`StoreFact::effects`] then says what the
//! fact does, from its payload alone, so central can compute exactly the same effects from
//! the event it receives. Storage mechanics (SQL, keys, group commit) stay in `outbox/`; HTTP
//! stays in `api/`.

pub mod consent;
pub mod coupons;
pub mod facts;
pub mod orders;
pub mod returns;

pub use facts::{
    Channel, CountSource, CountedItem, CycleCountRecorded, FactLine, HandedOverLine, IgnoredTag,
    LoyaltyRecorded, MovementKind, PickupCollected, ReturnOrigin, ReturnOriginal, ReturnRecorded,
    SaleRecorded, StockMovementRecorded,
};
pub use orders::{
    OrderLine, PickupPrepared, Release, ReservedLine, ReservedStock, ShipStep, ShipmentRecorded,
    Tracking, WHOLE_ORDER,
};

pub use consent::{ConsentChanged, ConsentPurpose};
pub use coupons::CouponRedeemed;
pub use returns::{OrderedLine, Return, Sale, SoldLine};

use serde::Serialize;
use std::collections::HashMap;

/// A store fact as a producer hands it to the outbox writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreFact {
    Movement(StockMovementRecorded),
    Sale(Sale),
    Return(Return),
    CycleCount(CycleCount),
    Loyalty(LoyaltyOperation),
    PickupCollected(PickupCollected),
    ConsentChanged(ConsentChanged),
    CouponRedeemed(CouponRedeemed),
    PickupPrepared(PickupPrepared),
    Shipment(ShipmentRecorded),
}

/// Central's stock figure for a SKU and the agent seq it already includes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StockBaseline {
    pub on_hand: i64,
    pub watermark_seq: u64,
}

/// A cycle count before the writer settles it: the items as counted, each with central's
/// baseline as a reader saw it (a baseline and its watermark are one consistent pair, whatever
/// changed since; the local movements after it are summed on the writer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CycleCount {
    pub recorded: CycleCountRecorded,
    /// One per item of `recorded.items`, in order.
    pub baselines: Vec<Option<StockBaseline>>,
}

/// Central's loyalty figure for a customer and the agent seq it already includes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoyaltyBaseline {
    pub central_balance: i64,
    pub watermark_seq: u64,
}

/// A loyalty earn (points > 0) or burn (points < 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoyaltyOperation {
    pub recorded: LoyaltyRecorded,
    pub baseline: LoyaltyBaseline,
    /// `loyalty.offline_burn_cap`, checked for burns.
    pub burn_cap: i64,
    /// The balance once this operation counts: settled on the writer.
    pub balance_after: Option<i64>,
}

/// Points of a customer recorded here after central's watermark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingPoints {
    /// Σ earned − Σ burned.
    pub net: i64,
    /// Σ burned (positive).
    pub burned: i64,
}

/// What the rules read: the facts committed before the one being settled.
pub trait Ledger {
    type Error;
    /// Σ of a SKU's local movements with seq > `watermark_seq`.
    fn movements_after(&mut self, sku: &str, watermark_seq: u64) -> Result<i64, Self::Error>;
    /// A customer's local loyalty operations with seq > `watermark_seq`.
    fn pending_points(
        &mut self,
        customer_id: &str,
        watermark_seq: u64,
    ) -> Result<PendingPoints, Self::Error>;
    /// The lines of this order handed over or shipped here, as (line, seq of the fact);
    /// [`WHOLE_ORDER`] stands for every line.
    fn released_lines(&mut self, order_id: &str) -> Result<Vec<(i64, u64)>, Self::Error>;
    /// The lines of this order prepared here.
    fn prepared_lines(&mut self, order_id: &str) -> Result<Vec<i64>, Self::Error>;
    /// The steps of this ship-from-store order recorded here.
    fn shipment_steps(&mut self, order_id: &str) -> Result<Vec<ShipStep>, Self::Error>;
    /// The first redemption here of a single-use coupon (by its identity), if there was one.
    fn coupon_redeemed(&mut self, coupon: &str) -> Result<Option<Redemption>, Self::Error>;
    /// The seq of the sale recorded here under this receipt, if one was.
    fn receipt_seq(&mut self, receipt: &str) -> Result<Option<u64>, Self::Error>;
    /// What the sale recorded here under this receipt sold, line by line (empty: none was).
    fn sold_lines(&mut self, receipt: &str) -> Result<Vec<SoldLine>, Self::Error>;
    /// Units of one line of an original returned here so far.
    fn returned_qty(&mut self, original: &ReturnOriginal, line: u32) -> Result<i64, Self::Error>;
}

/// When a coupon was first redeemed here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Redemption {
    pub seq: u64,
    /// Unix milliseconds (the event's time).
    pub at_ms: i64,
}

/// Why a fact was not settled.
#[derive(Debug)]
pub enum Unsettled<E> {
    /// The fact breaks a rule: refused alone, nothing recorded.
    Refused(FactRefused),
    /// The ledger could not be read.
    Ledger(E),
}

impl<E> From<FactRefused> for Unsettled<E> {
    fn from(refused: FactRefused) -> Self {
        Unsettled::Refused(refused)
    }
}

/// Why the rules refused one store fact (the rest of its group commits as usual).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FactRefused {
    #[error(
        "burning {requested} points would bring the points burned here and not yet confirmed by \
         central to {would_be}, above loyalty.offline_burn_cap = {cap} (already pending: \
         {pending_burned}). Burn at most {allowed} now, or wait until central confirms"
    )]
    BurnCapExceeded {
        requested: i64,
        pending_burned: i64,
        would_be: i64,
        cap: i64,
        allowed: i64,
    },
    #[error("the balance is {balance} points; burning {requested} would make it negative")]
    InsufficientPoints { balance: i64, requested: i64 },
    #[error(
        "coupon {coupon} was already redeemed here (event seq {seq}); it can be used only \
         once: finish the ticket without it"
    )]
    CouponAlreadyRedeemed {
        coupon: String,
        seq: u64,
        at_ms: i64,
    },
    #[error(
        "line(s) {lines:?} of order {order_id} already left the store here (event seq {seq}): \
         do not hand them over again; hand over only the other lines"
    )]
    AlreadyCollected {
        order_id: String,
        lines: Vec<i64>,
        seq: u64,
    },
    #[error("line(s) {lines:?} of order {order_id} were already prepared here: nothing to do")]
    AlreadyPrepared { order_id: String, lines: Vec<i64> },
    #[error("order {order_id} was already recorded {step} here: nothing to do")]
    StepAlreadyRecorded {
        order_id: String,
        step: &'static str,
    },
    #[error(
        "order {order_id} cannot be recorded {step} now: the next step is {expected} \
         (last recorded: {last:?}); record the steps in order"
    )]
    StepOutOfOrder {
        order_id: String,
        step: &'static str,
        last: Option<&'static str>,
        expected: &'static str,
    },
    #[error(
        "selling {requested} of {sku} would take on-hand ({on_hand}) below the {reserved} units \
         reserved for web orders: sell at most {may_sell}, or ask the back office to release a \
         reservation"
    )]
    ReservedStock {
        sku: String,
        on_hand: i64,
        reserved: i64,
        requested: i64,
        may_sell: i64,
    },
    #[error("{what} is out of range: {why}")]
    OutOfRange { what: String, why: String },
    #[error(
        "receipt {receipt} was already used by the sale recorded here as event seq {seq}; give \
         this ticket a receipt number of its own (returns find a ticket by its receipt)"
    )]
    ReceiptReused { receipt: String, seq: u64 },
    #[error(
        "line {line} returns {requested} of line {original_line} of the original, which sold \
         {sold} and of which {already_returned} came back already: at most {returnable} can be \
         returned now"
    )]
    ReturnExceedsSale {
        line: usize,
        original_line: u32,
        sold: i64,
        already_returned: i64,
        returnable: i64,
        requested: i64,
    },
    #[error(
        "line {line} names line {original_line} of the original, which has no such line (its \
         lines: {original_lines:?}); check the line on the receipt or order"
    )]
    LineNotInOriginal {
        line: usize,
        original_line: u32,
        original_lines: Vec<u32>,
    },
    #[error(
        "line {line} returns {returned_sku:?} but line {original_line} of the original sold \
         {sold_sku:?}; name the line the item was sold on"
    )]
    ItemDiffersFromOriginal {
        line: usize,
        original_line: u32,
        sold_sku: Option<String>,
        returned_sku: Option<String>,
    },
}

impl FactRefused {
    /// Stable machine-readable code for API clients.
    pub fn code(&self) -> &'static str {
        match self {
            FactRefused::BurnCapExceeded { .. } => "offline_burn_cap",
            FactRefused::InsufficientPoints { .. } => "insufficient_points",
            FactRefused::AlreadyCollected { .. } => "already_collected",
            FactRefused::CouponAlreadyRedeemed { .. } => "coupon_already_redeemed",
            FactRefused::AlreadyPrepared { .. } => "already_prepared",
            FactRefused::StepAlreadyRecorded { .. } => "step_already_recorded",
            FactRefused::StepOutOfOrder { .. } => "step_out_of_order",
            FactRefused::ReservedStock { .. } => "reserved_stock",
            FactRefused::OutOfRange { .. } => "out_of_range",
            FactRefused::ReceiptReused { .. } => "receipt_reused",
            FactRefused::ReturnExceedsSale { .. } => "return_exceeds_sale",
            FactRefused::LineNotInOriginal { .. } => "line_not_in_original",
            FactRefused::ItemDiffersFromOriginal { .. } => "item_differs_from_original",
        }
    }

    /// A conflict with earlier facts (retry later may work) rather than a fact that can never
    /// be recorded as it is.
    pub fn is_conflict(&self) -> bool {
        !matches!(self, FactRefused::OutOfRange { .. })
    }
}

/// A local effect of a fact, committed in the fact's transaction. `line` numbers the effects
/// of one kind within the fact (the fact's line for movements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect<'a> {
    Movement {
        line: u32,
        sku: &'a str,
        delta: i64,
        kind: MovementKind,
    },
    /// Points earned (positive) or burned (negative) here, pending until central's loyalty
    /// watermark passes the fact's seq.
    Loyalty {
        line: u32,
        customer_id: &'a str,
        points: i64,
    },
    /// A reserved line handed over or shipped: its reservation stops counting, and a second
    /// hand-over of it is refused.
    LineReleased {
        order_id: &'a str,
        line: i64,
        how: Release,
    },
    /// A click-and-collect line prepared here: ready for hand-over.
    LinePrepared { order_id: &'a str, line: i64 },
    /// A step of a ship-from-store order.
    ShipmentStep { order_id: &'a str, step: ShipStep },
    /// A customer's consent changed here: in effect at once, until central sends a choice
    /// dated at or after it.
    ConsentChanged {
        customer_id: &'a str,
        purpose: ConsentPurpose,
        granted: bool,
        at_ms: i64,
    },
    /// A single-use coupon taken: a second redemption here is refused.
    CouponRedeemed { coupon: &'a str },
    /// Points a return took back from the customer whose sale earned them (negative): they
    /// lower the balance, may take it below zero, and are not a burn (no offline cap).
    PointsReversed { customer_id: &'a str, points: i64 },
    /// A line of a ticket with a receipt, filed under it so a return can name it.
    Sold {
        receipt: &'a str,
        line: u32,
        sku: Option<&'a str>,
        gtin: Option<i64>,
        qty: i64,
        points: i64,
        customer_id: Option<&'a str>,
    },
    /// Units of a line of an original (ticket or order) brought back by the return's line
    /// `return_line`, with the points that reversed.
    Returned {
        original: &'a ReturnOriginal,
        line: u32,
        return_line: u32,
        qty: i64,
        points: i64,
    },
}

pub(crate) fn out_of_range(what: impl Into<String>, why: impl Into<String>) -> FactRefused {
    FactRefused::OutOfRange {
        what: what.into(),
        why: why.into(),
    }
}

impl StoreFact {
    /// A movement of a SKU the replica knows, as a back office posts it (bulk loads,
    /// benchmarks, tests). For an adjustment `qty` is the signed change.
    pub fn stock_movement(kind: MovementKind, sku: &str, qty: i64) -> StoreFact {
        StoreFact::Movement(StockMovementRecorded {
            kind,
            sku: Some(sku.to_owned()),
            gtin: None,
            qty,
            delta: kind.delta(qty).unwrap_or(0),
            client_key: None,
            note: None,
            stock_applied: true,
            by: "local".to_owned(),
        })
    }

    pub fn event_type(&self) -> &'static str {
        match self {
            StoreFact::Movement(_) => "stock.movement",
            StoreFact::Sale(_) => "sale.recorded",
            StoreFact::Return(_) => "return.recorded",
            StoreFact::CycleCount(_) => "stock.cycle_count",
            StoreFact::Loyalty(op) if op.recorded.points < 0 => "loyalty.burned",
            StoreFact::Loyalty(_) => "loyalty.earned",
            StoreFact::PickupCollected(_) => "pickup.collected",
            StoreFact::ConsentChanged(_) => "consent.changed",
            StoreFact::CouponRedeemed(_) => "coupon.redeemed",
            StoreFact::PickupPrepared(_) => "pickup.prepared",
            StoreFact::Shipment(s) => s.step.event_type(),
        }
    }

    /// Whether [`settle`](Self::settle) fills in part of the payload (a count's `expected`).
    pub fn settling_changes_payload(&self) -> bool {
        match self {
            StoreFact::CycleCount(_) => true,
            StoreFact::Return(ret) => ret.recorded.original.is_some(),
            _ => false,
        }
    }

    /// Whether [`settle`](Self::settle) fills in part of the answer (a balance after).
    pub fn settling_changes_answer(&self) -> bool {
        match self {
            StoreFact::CycleCount(_) | StoreFact::Loyalty(_) => true,
            StoreFact::Sale(sale) => sale.loyalty.is_some(),
            StoreFact::Return(ret) => ret.recorded.original.is_some(),
            _ => false,
        }
    }

    /// Check the fact against every fact before it and compute what depends on them, as the
    /// fact that gets `seq`. Reads only: a refused fact has written nothing.
    pub fn settle<L: Ledger>(
        &mut self,
        ledger: &mut L,
        seq: u64,
    ) -> Result<(), Unsettled<L::Error>> {
        match self {
            StoreFact::CycleCount(count) => settle_count(ledger, seq, count),
            StoreFact::Loyalty(op) => settle_loyalty(ledger, op),
            StoreFact::PickupCollected(pickup) => {
                let lines: Vec<i64> = pickup.lines.iter().map(|l| l.line).collect();
                orders::settle_collect(ledger, &pickup.order_id, &lines)
            }
            StoreFact::PickupPrepared(prepared) => orders::settle_prepare(ledger, prepared),
            StoreFact::Shipment(shipment) => orders::settle_shipment(ledger, shipment),
            StoreFact::CouponRedeemed(redeemed) if redeemed.single_use => {
                match ledger
                    .coupon_redeemed(&redeemed.coupon)
                    .map_err(Unsettled::Ledger)?
                {
                    Some(first) => Err(FactRefused::CouponAlreadyRedeemed {
                        coupon: redeemed.coupon.clone(),
                        seq: first.seq,
                        at_ms: first.at_ms,
                    }
                    .into()),
                    None => Ok(()),
                }
            }
            StoreFact::Sale(sale) => returns::settle_sale(ledger, sale),
            StoreFact::Return(ret) => returns::settle_return(ledger, ret),
            StoreFact::Movement(_)
            | StoreFact::ConsentChanged(_)
            | StoreFact::CouponRedeemed(_) => Ok(()),
        }
    }

    /// What the fact does to local stock and points, from its payload alone (settled).
    pub fn effects(&self) -> Vec<Effect<'_>> {
        fn movement(
            line: usize,
            sku: &Option<String>,
            delta: i64,
            kind: MovementKind,
        ) -> Option<Effect<'_>> {
            Some(Effect::Movement {
                line: u32::try_from(line).ok()?,
                sku: sku.as_deref()?,
                delta,
                kind,
            })
        }
        fn lines(lines: &[FactLine], kind: MovementKind) -> Vec<Effect<'_>> {
            lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.stock_applied)
                .filter_map(|(i, l)| movement(i, &l.sku, kind.delta(l.qty)?, kind))
                .collect()
        }
        match self {
            StoreFact::Movement(m) if m.stock_applied => {
                movement(0, &m.sku, m.delta, m.kind).into_iter().collect()
            }
            StoreFact::Movement(_) => Vec::new(),
            StoreFact::Sale(sale) => {
                let sale = &sale.recorded;
                let mut effects = lines(&sale.lines, MovementKind::Sale);
                if let Some(receipt) = &sale.receipt {
                    effects.extend(sale.lines.iter().enumerate().filter_map(|(i, l)| {
                        Some(Effect::Sold {
                            receipt,
                            line: u32::try_from(i).ok()?,
                            sku: l.sku.as_deref(),
                            gtin: l.gtin.map(|g| g.as_i64()),
                            qty: l.qty,
                            points: l.points.unwrap_or(0),
                            customer_id: sale.customer_id.as_deref(),
                        })
                    }));
                }
                if let (Some(customer_id), Some(points)) = (&sale.customer_id, sale.points_earned)
                    && points > 0
                {
                    effects.push(Effect::Loyalty {
                        line: 0,
                        customer_id,
                        points,
                    });
                }
                effects
            }
            StoreFact::Return(ret) => {
                let ret = &ret.recorded;
                let mut effects = if ret.restocked {
                    lines(&ret.lines, MovementKind::Return)
                } else {
                    Vec::new()
                };
                if let Some(original) = &ret.original
                    && ret.original_checked
                {
                    effects.extend(returns::returned_lines(&ret.lines).map(
                        |(line, return_line, qty, points)| Effect::Returned {
                            original,
                            line,
                            return_line,
                            qty,
                            points,
                        },
                    ));
                }
                if let (Some(customer_id), Some(points)) =
                    (&ret.reversed_customer_id, ret.points_reversed)
                    && let Some(points) = points.checked_neg()
                    && points < 0
                {
                    effects.push(Effect::PointsReversed {
                        customer_id,
                        points,
                    });
                }
                effects
            }
            StoreFact::CycleCount(count) if count.recorded.applied => count
                .recorded
                .items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let delta = item.delta.unwrap_or(item.counted);
                    (delta != 0)
                        .then(|| movement(i, &item.sku, delta, MovementKind::Adjustment))
                        .flatten()
                })
                .collect(),
            StoreFact::CycleCount(_) => Vec::new(),
            StoreFact::Loyalty(op) => vec![Effect::Loyalty {
                line: 0,
                customer_id: &op.recorded.customer_id,
                points: op.recorded.points,
            }],
            StoreFact::PickupCollected(pickup) => released(
                &pickup.order_id,
                pickup.lines.iter().map(|l| (l.line, l.sku.as_str(), l.qty)),
                Release::Collected,
            ),
            StoreFact::PickupPrepared(prepared) => prepared
                .lines
                .iter()
                .map(|l| Effect::LinePrepared {
                    order_id: &prepared.order_id,
                    line: l.line,
                })
                .collect(),
            StoreFact::Shipment(shipment) => {
                let mut effects = if shipment.step == ShipStep::Shipped {
                    released(
                        &shipment.order_id,
                        shipment
                            .lines
                            .iter()
                            .map(|l| (l.line, l.sku.as_str(), l.qty)),
                        Release::Shipped,
                    )
                } else {
                    Vec::new()
                };
                effects.push(Effect::ShipmentStep {
                    order_id: &shipment.order_id,
                    step: shipment.step,
                });
                effects
            }
            StoreFact::ConsentChanged(change) => vec![Effect::ConsentChanged {
                customer_id: &change.customer_id,
                purpose: change.purpose,
                granted: change.granted,
                at_ms: change.at_ms,
            }],
            StoreFact::CouponRedeemed(redeemed) if redeemed.single_use => {
                vec![Effect::CouponRedeemed {
                    coupon: &redeemed.coupon,
                }]
            }
            StoreFact::CouponRedeemed(_) => Vec::new(),
        }
    }

    /// The event's payload (JSON), once settled.
    pub fn payload_json(&self) -> serde_json::Result<String> {
        match self {
            StoreFact::Movement(m) => serde_json::to_string(m),
            StoreFact::Sale(sale) => serde_json::to_string(&sale.recorded),
            StoreFact::Return(ret) => serde_json::to_string(&ret.recorded),
            StoreFact::CycleCount(count) => serde_json::to_string(&count.recorded),
            StoreFact::Loyalty(op) => serde_json::to_string(&op.recorded),
            StoreFact::PickupCollected(pickup) => serde_json::to_string(pickup),
            StoreFact::ConsentChanged(change) => serde_json::to_string(change),
            StoreFact::CouponRedeemed(redeemed) => serde_json::to_string(redeemed),
            StoreFact::PickupPrepared(prepared) => serde_json::to_string(prepared),
            StoreFact::Shipment(shipment) => serde_json::to_string(shipment),
        }
    }

    /// What the client is told besides the envelope's id and seq (a JSON object), once
    /// settled. Kept with the idempotency key, so a retry gets exactly this.
    pub fn answer_json(&self) -> serde_json::Result<String> {
        match self {
            StoreFact::Movement(m) => serde_json::to_string(&MovementAnswer {
                sku: &m.sku,
                stock_applied: m.stock_applied,
            }),
            StoreFact::Sale(sale) => serde_json::to_string(&SaleAnswer {
                lines: &sale.recorded.lines,
                total_minor: sale.recorded.total_minor,
                customer_id: sale.recorded.customer_id.as_deref(),
                points_earned: sale.recorded.points_earned,
                balance_after: sale.balance_after,
            }),
            StoreFact::Return(ret) => {
                let ret = &ret.recorded;
                serde_json::to_string(&ReturnAnswer {
                    lines: &ret.lines,
                    cross_channel: ret.cross_channel,
                    restocked: ret.restocked,
                    original: ret.original.as_ref(),
                    original_checked: ret.original_checked,
                    reversed_customer_id: ret.reversed_customer_id.as_deref(),
                    points_reversed: ret.points_reversed,
                })
            }
            StoreFact::CycleCount(count) => serde_json::to_string(&CountAnswer {
                items: &count.recorded.items,
                ignored_tags: &count.recorded.ignored_tags,
                adjustments: self
                    .effects()
                    .iter()
                    .filter(|e| matches!(e, Effect::Movement { .. }))
                    .count(),
                as_of_seq: count.recorded.as_of_seq,
            }),
            StoreFact::Loyalty(op) => serde_json::to_string(&LoyaltyAnswer {
                customer_id: &op.recorded.customer_id,
                points: op.recorded.points,
                balance_after: op.balance_after,
            }),
            StoreFact::PickupCollected(pickup) => serde_json::to_string(&PickupAnswer {
                order_id: &pickup.order_id,
                lines: &pickup.lines,
                partial: pickup.partial,
            }),
            StoreFact::PickupPrepared(prepared) => serde_json::to_string(&OrderAnswer {
                order_id: &prepared.order_id,
                lines: &prepared.lines,
                step: None,
            }),
            StoreFact::Shipment(shipment) => serde_json::to_string(&OrderAnswer {
                order_id: &shipment.order_id,
                lines: &shipment.lines,
                step: Some(shipment.step),
            }),
            StoreFact::ConsentChanged(change) => serde_json::to_string(&ConsentAnswer {
                customer_id: &change.customer_id,
                purpose: change.purpose,
                granted: change.granted,
                at: &change.at,
            }),
            StoreFact::CouponRedeemed(redeemed) => serde_json::to_string(&CouponAnswer {
                coupon: &redeemed.coupon,
                scheme: redeemed.scheme,
                single_use: redeemed.single_use,
            }),
        }
    }
}

#[derive(Serialize)]
struct MovementAnswer<'a> {
    sku: &'a Option<String>,
    stock_applied: bool,
}

#[derive(Serialize)]
struct SaleAnswer<'a> {
    lines: &'a [FactLine],
    total_minor: Option<i64>,
    // A ticket without a customer answers exactly what it did before earning existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    points_earned: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    balance_after: Option<i64>,
}

#[derive(Serialize)]
struct ReturnAnswer<'a> {
    lines: &'a [FactLine],
    cross_channel: bool,
    restocked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    original: Option<&'a ReturnOriginal>,
    original_checked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reversed_customer_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    points_reversed: Option<i64>,
}

#[derive(Serialize)]
struct CountAnswer<'a> {
    items: &'a [CountedItem],
    ignored_tags: &'a [IgnoredTag],
    adjustments: usize,
    as_of_seq: u64,
}

#[derive(Serialize)]
struct LoyaltyAnswer<'a> {
    customer_id: &'a str,
    points: i64,
    balance_after: Option<i64>,
}

#[derive(Serialize)]
struct PickupAnswer<'a> {
    order_id: &'a str,
    lines: &'a [HandedOverLine],
    partial: bool,
}

#[derive(Serialize)]
struct OrderAnswer<'a> {
    order_id: &'a str,
    lines: &'a [OrderLine],
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<ShipStep>,
}

/// A sale-kind movement and a release per line: the goods leave on-hand and `reserved` together.
fn released<'a>(
    order_id: &'a str,
    lines: impl Iterator<Item = (i64, &'a str, i64)>,
    how: Release,
) -> Vec<Effect<'a>> {
    let mut effects = Vec::new();
    for (i, (line, sku, qty)) in lines.enumerate() {
        if let (Ok(at), Some(delta)) = (u32::try_from(i), MovementKind::Sale.delta(qty)) {
            effects.push(Effect::Movement {
                line: at,
                sku,
                delta,
                kind: MovementKind::Sale,
            });
        }
        effects.push(Effect::LineReleased {
            order_id,
            line,
            how,
        });
    }
    effects
}

#[derive(Serialize)]
struct ConsentAnswer<'a> {
    customer_id: &'a str,
    purpose: ConsentPurpose,
    granted: bool,
    at: &'a str,
}

#[derive(Serialize)]
struct CouponAnswer<'a> {
    coupon: &'a str,
    scheme: coupons::CouponScheme,
    single_use: bool,
}

/// Sum the lines naming the same SKU (a count sheet may list an item on two shelves; two GTINs
/// may be one SKU), then compute each SKU's expected on-hand as of `seq`.
fn settle_count<L: Ledger>(
    ledger: &mut L,
    seq: u64,
    count: &mut CycleCount,
) -> Result<(), Unsettled<L::Error>> {
    let items = std::mem::take(&mut count.recorded.items);
    let baselines = std::mem::take(&mut count.baselines);
    let mut merged: Vec<(CountedItem, Option<StockBaseline>)> = Vec::with_capacity(items.len());
    let mut by_sku: HashMap<String, usize> = HashMap::new();
    for (item, baseline) in items
        .into_iter()
        .zip(baselines.into_iter().chain(std::iter::repeat(None)))
    {
        if let Some(sku) = &item.sku
            && let Some(&at) = by_sku.get(sku)
        {
            let total = &mut merged[at].0.counted;
            *total = total
                .checked_add(item.counted)
                .ok_or_else(|| out_of_range(format!("the count of {sku}"), "overflows"))?;
            continue;
        }
        if let Some(sku) = &item.sku {
            by_sku.insert(sku.clone(), merged.len());
        }
        merged.push((item, baseline));
    }
    for (item, baseline) in &mut merged {
        let Some(sku) = &item.sku else { continue };
        let watermark = baseline.map_or(0, |b| b.watermark_seq);
        let local = ledger
            .movements_after(sku, watermark)
            .map_err(Unsettled::Ledger)?;
        let expected = match baseline {
            Some(b) => Some(b.on_hand.checked_add(local).ok_or_else(|| {
                out_of_range(format!("the expected on-hand of {sku}"), "overflows")
            })?),
            None if local != 0 => Some(local),
            None => None,
        };
        item.expected = expected;
        item.delta = match expected {
            Some(e) => Some(item.counted.checked_sub(e).ok_or_else(|| {
                out_of_range(format!("the count difference of {sku}"), "overflows")
            })?),
            None => None,
        };
        item.watermark_seq = baseline.map(|b| b.watermark_seq);
    }
    count.recorded.items = merged.into_iter().map(|(item, _)| item).collect();
    count.recorded.as_of_seq = seq.saturating_sub(1);
    Ok(())
}

/// A burn may not take the balance below zero, nor the points burned here and not yet
/// confirmed by central past the offline cap (what a store cut off from central can lose to the
/// same points being spent elsewhere). Checked against every operation before it, so two tills
/// cannot spend the same points.
fn settle_loyalty<L: Ledger>(
    ledger: &mut L,
    op: &mut LoyaltyOperation,
) -> Result<(), Unsettled<L::Error>> {
    let customer = &op.recorded.customer_id;
    let pending = ledger
        .pending_points(customer, op.baseline.watermark_seq)
        .map_err(Unsettled::Ledger)?;
    let overflow = || out_of_range(format!("the balance of {customer}"), "overflows");
    let balance = op
        .baseline
        .central_balance
        .checked_add(pending.net)
        .ok_or_else(overflow)?;
    let points = op.recorded.points;
    if points < 0 {
        let requested = points.checked_neg().ok_or_else(overflow)?;
        if balance < requested {
            return Err(FactRefused::InsufficientPoints { balance, requested }.into());
        }
        let would_be = pending.burned.checked_add(requested).ok_or_else(overflow)?;
        if would_be > op.burn_cap {
            return Err(FactRefused::BurnCapExceeded {
                requested,
                pending_burned: pending.burned,
                would_be,
                cap: op.burn_cap,
                allowed: op.burn_cap.saturating_sub(pending.burned).max(0),
            }
            .into());
        }
    }
    op.balance_after = Some(balance.checked_add(points).ok_or_else(overflow)?);
    Ok(())
}

#[cfg(test)]
mod returns_tests;
#[cfg(test)]
mod tests;
