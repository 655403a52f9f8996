//! The payload of every store fact, as the outbox stores it and central receives it: one type
//! per event type, serialised only at the boundary (the writer, when it records the fact).
//! Central (`relaisctl`) reads events back into these same types.

use crate::decode::gtin::Gtin14;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The kind of a stock movement. Sign rules live in [`MovementKind::delta`] so no caller gets
/// them wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(
    description = "The kind of a stock movement: a sale takes `qty` out of stock, a \
    return or a receipt puts it in, an adjustment's `qty` is already signed."
)]
pub enum MovementKind {
    Sale,
    Return,
    Receipt,
    Adjustment,
}

impl MovementKind {
    pub fn name(self) -> &'static str {
        match self {
            MovementKind::Sale => "sale",
            MovementKind::Return => "return",
            MovementKind::Receipt => "receipt",
            MovementKind::Adjustment => "adjustment",
        }
    }

    /// The stock change of `qty` units of this kind: a sale takes them out, a return or a
    /// receipt puts them in, an adjustment's quantity is already signed.
    pub fn delta(self, qty: i64) -> Option<i64> {
        match self {
            MovementKind::Sale => qty.checked_neg(),
            MovementKind::Return | MovementKind::Receipt | MovementKind::Adjustment => Some(qty),
        }
    }
}

/// One line of a ticket or a return, as resolved against the replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FactLine {
    /// Null when the replica does not know the item: still recorded, without stock effect.
    pub sku: Option<String>,
    pub gtin: Option<Gtin14>,
    pub qty: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price_minor: Option<i64>,
    /// Whether this line moved local stock (known item; for returns, restocked).
    pub stock_applied: bool,
    /// A return's line: the line of the original ticket or order it brings back (its index in
    /// the ticket, or the order's line number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_line: Option<u32>,
    /// A sale's line: the points it earned (`qty × unit_price_minor / earn_per_minor_units`,
    /// rounded down); a return's line: the points it reversed. Absent when no customer earns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<i64>,
}

/// `stock.movement`: one movement posted by a back office (receipts, adjustments, single-line
/// sales and returns).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockMovementRecorded {
    pub kind: MovementKind,
    pub sku: Option<String>,
    pub gtin: Option<Gtin14>,
    pub qty: i64,
    pub delta: i64,
    pub client_key: Option<String>,
    pub note: Option<String>,
    pub stock_applied: bool,
    /// The API caller (token name, or `local`).
    pub by: String,
}

/// `sale.recorded`: a till's ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SaleRecorded {
    pub receipt: Option<String>,
    pub lines: Vec<FactLine>,
    /// Σ qty × unit price, when every line has a price.
    pub total_minor: Option<i64>,
    pub currency: Option<String>,
    /// Central's id of the customer the till named (by card or id); never a card number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// The earn rule applied (`loyalty.earn_per_minor_units` when the sale was recorded), so
    /// central can recompute every line's points from the event alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earn_per_minor_units: Option<i64>,
    /// Σ of the lines' points, earned by `customer_id` in this sale's transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_earned: Option<i64>,
    pub client_key: Option<String>,
    pub by: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Store,
    Web,
    App,
}

/// Where returned goods were bought.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReturnOrigin {
    pub channel: Channel,
    pub order_id: Option<String>,
    pub store: Option<String>,
}

/// `return.recorded`: goods brought back, from a store sale or an online order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReturnRecorded {
    pub receipt: Option<String>,
    pub lines: Vec<FactLine>,
    pub origin: ReturnOrigin,
    pub cross_channel: bool,
    pub reason: Option<String>,
    /// Damaged goods are recorded without going back on sale.
    pub restocked: bool,
    /// Central's id of the customer bringing the goods back, when the till named them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// The sale this return reverses, when the till named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<ReturnOriginal>,
    /// Whether the agent knew the original and checked every line against what it sold (or
    /// the order held) minus what was already returned. `false`: no original named, or one
    /// this agent does not know; central decides.
    #[serde(default)]
    pub original_checked: bool,
    /// The customer whose points the original sale earned, when this return reversed some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversed_customer_id: Option<String>,
    /// Σ of the lines' reversed points (positive: the points taken back from that customer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_reversed: Option<i64>,
    pub client_key: Option<String>,
    pub by: String,
}

/// The original of a return: a ticket recorded by a till (its receipt) or a web order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReturnOriginal {
    Receipt(String),
    OrderId(String),
}

impl ReturnOriginal {
    /// How the outbox files what was returned of it: `("receipt" | "order", id)`.
    pub fn key(&self) -> (&'static str, &str) {
        match self {
            ReturnOriginal::Receipt(r) => ("receipt", r),
            ReturnOriginal::OrderId(o) => ("order", o),
        }
    }
}

/// One counted item of a cycle count: a SKU (every line naming it summed), or an item the
/// replica does not know (reported, never applied).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CountedItem {
    pub sku: Option<String>,
    pub gtin: Option<Gtin14>,
    pub counted: i64,
    /// Local on-hand just before the count (every fact up to `as_of_seq` included); null
    /// when the item had no stock record at all.
    pub expected: Option<i64>,
    /// `counted - expected`; with `applied`, the adjustment recorded.
    pub delta: Option<i64>,
    /// Central's stock baseline that `expected` was computed from included this agent's facts
    /// up to here, so central can rebase the count onto its own figure.
    pub watermark_seq: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CountSource {
    Manual,
    Rfid,
}

/// A tag an RFID sweep read that could not be counted, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IgnoredTag {
    pub epc: String,
    pub reason: String,
}

/// `stock.cycle_count`: what was counted, against what the agent expected at that moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CycleCountRecorded {
    pub zone: Option<String>,
    pub source: CountSource,
    pub items: Vec<CountedItem>,
    pub ignored_tags: Vec<IgnoredTag>,
    /// Local stock was set to the count (an adjustment per differing item).
    pub applied: bool,
    /// `expected` includes every fact of this agent up to this seq (the count's own seq − 1):
    /// computed on the outbox writer, in the count's own transaction.
    pub as_of_seq: u64,
    pub client_key: Option<String>,
    pub by: String,
}

/// `loyalty.earned` (points > 0) and `loyalty.burned` (points < 0). The customer is named by
/// central's id only: no card identifier, no name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LoyaltyRecorded {
    pub customer_id: String,
    pub points: i64,
    pub receipt: Option<String>,
    pub client_key: Option<String>,
    pub by: String,
}

/// One line of a click-and-collect order handed over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HandedOverLine {
    pub line: i64,
    pub sku: String,
    pub qty: i64,
    pub status: String,
}

/// `pickup.collected`: a click-and-collect order handed over at this store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PickupCollected {
    pub order_id: String,
    pub pickup_code: String,
    pub lines: Vec<HandedOverLine>,
    pub was_ready: bool,
    /// Other lines of the order stay to be collected in a later visit (a partial hand-over).
    #[serde(default)]
    pub partial: bool,
    pub client_key: Option<String>,
    pub by: String,
}
