//! Web orders the store fulfils: click-and-collect lines prepared and handed over (in one
//! visit or several), ship-from-store orders picked, packed and shipped, and the units their
//! reservations hold back from till sales (`[pickups] protect_reserved`).
//!
//! A reserved line stops counting in `reserved` exactly when its goods leave the store: when it
//! is handed over at the counter or shipped. That is also when on-hand moves (a sale-kind
//! movement per line), so `available` never moves at a hand-over or a shipment: the units were
//! already held back since central reserved them.

use super::{FactRefused, Ledger, SaleRecorded, StockBaseline, Unsettled, out_of_range};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// `released_lines.line` of an order handed over before hand-overs were per line, whose event
/// (and so its list of lines) was no longer in the outbox when the table was migrated: every
/// line of the order counts as handed over.
pub const WHOLE_ORDER: i64 = -1;

/// One line of an order as a fact names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLine {
    pub line: i64,
    pub sku: String,
    pub qty: i64,
}

/// `pickup.prepared`: staff picked these lines of a click-and-collect order here. Locally a line
/// prepared here is ready for hand-over even before central's stream says `picked`; no stock
/// effect (the units stay reserved until handed over).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PickupPrepared {
    pub order_id: String,
    pub pickup_code: String,
    pub lines: Vec<OrderLine>,
    pub client_key: Option<String>,
    pub by: String,
}

/// The steps of a ship-from-store order, in the only order they may happen.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ShipStep {
    Picked,
    Packed,
    Shipped,
}

impl ShipStep {
    pub const ALL: [ShipStep; 3] = [ShipStep::Picked, ShipStep::Packed, ShipStep::Shipped];

    pub fn name(self) -> &'static str {
        match self {
            ShipStep::Picked => "picked",
            ShipStep::Packed => "packed",
            ShipStep::Shipped => "shipped",
        }
    }

    /// The type of the event recording this step.
    pub fn event_type(self) -> &'static str {
        match self {
            ShipStep::Picked => "shipment.picked",
            ShipStep::Packed => "shipment.packed",
            ShipStep::Shipped => "shipment.shipped",
        }
    }

    pub fn parse(name: &str) -> Option<ShipStep> {
        ShipStep::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Stored in `shipment_steps.step`.
    pub fn code(self) -> i64 {
        match self {
            ShipStep::Picked => 1,
            ShipStep::Packed => 2,
            ShipStep::Shipped => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<ShipStep> {
        ShipStep::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The step that must be recorded just before this one.
    fn previous(self) -> Option<ShipStep> {
        match self {
            ShipStep::Picked => None,
            ShipStep::Packed => Some(ShipStep::Picked),
            ShipStep::Shipped => Some(ShipStep::Packed),
        }
    }
}

/// The parcel's carrier and tracking number, given when it ships.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Tracking {
    pub carrier: String,
    pub tracking_number: String,
}

/// `shipment.picked`, `shipment.packed`, `shipment.shipped`: one step of a ship-from-store
/// order (one payload type for the three; `step` says which). `shipped` takes each line out of
/// on-hand and out of `reserved`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShipmentRecorded {
    pub order_id: String,
    pub step: ShipStep,
    pub lines: Vec<OrderLine>,
    /// Present exactly when `step` is `shipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Tracking>,
    pub client_key: Option<String>,
    pub by: String,
}

/// How a reserved line left the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    Collected,
    Shipped,
}

impl Release {
    pub fn name(self) -> &'static str {
        match self {
            Release::Collected => "collected",
            Release::Shipped => "shipped",
        }
    }
}

/// A line central reserves (open or picked), as a reader saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservedLine {
    pub order_id: String,
    pub line: i64,
    pub qty: i64,
}

/// What a reader knows about one SKU of a till sale when reserved units are protected:
/// central's stock baseline (the local movements after it are summed on the writer) and the
/// lines reserving it (which of them were released here is read on the writer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservedStock {
    pub sku: String,
    pub baseline: Option<StockBaseline>,
    pub reservations: Vec<ReservedLine>,
}

/// The lines of `order_id` released here, as (line, seq); [`WHOLE_ORDER`] stands for all.
fn released_here<L: Ledger>(
    ledger: &mut L,
    order_id: &str,
) -> Result<BTreeMap<i64, u64>, Unsettled<L::Error>> {
    Ok(ledger
        .released_lines(order_id)
        .map_err(Unsettled::Ledger)?
        .into_iter()
        .collect())
}

/// The lines of `lines` already released here, and the seq of the newest fact that did.
fn already_released(released: &BTreeMap<i64, u64>, lines: &[i64]) -> Option<(Vec<i64>, u64)> {
    let whole = released.get(&WHOLE_ORDER).copied();
    let hit: Vec<(i64, u64)> = lines
        .iter()
        .filter_map(|l| released.get(l).copied().or(whole).map(|seq| (*l, seq)))
        .collect();
    // The newest release among them: for a till asking for "the rest" of an order another till
    // just completed, that is the hand-over that took it, not an earlier partial one.
    let seq = hit.iter().map(|(_, seq)| *seq).max()?;
    Some((hit.into_iter().map(|(l, _)| l).collect(), seq))
}

/// A hand-over may not hand over a line a fact before it already handed over (or shipped).
pub(super) fn settle_collect<L: Ledger>(
    ledger: &mut L,
    order_id: &str,
    lines: &[i64],
) -> Result<(), Unsettled<L::Error>> {
    let released = released_here(ledger, order_id)?;
    match already_released(&released, lines) {
        Some((lines, seq)) => Err(FactRefused::AlreadyCollected {
            order_id: order_id.to_owned(),
            lines,
            seq,
        }
        .into()),
        None => Ok(()),
    }
}

/// A line is prepared once, and not after it was handed over.
pub(super) fn settle_prepare<L: Ledger>(
    ledger: &mut L,
    prepared: &PickupPrepared,
) -> Result<(), Unsettled<L::Error>> {
    let lines: Vec<i64> = prepared.lines.iter().map(|l| l.line).collect();
    settle_collect(ledger, &prepared.order_id, &lines)?;
    let before: BTreeSet<i64> = ledger
        .prepared_lines(&prepared.order_id)
        .map_err(Unsettled::Ledger)?
        .into_iter()
        .collect();
    let again: Vec<i64> = lines.into_iter().filter(|l| before.contains(l)).collect();
    if again.is_empty() {
        Ok(())
    } else {
        Err(FactRefused::AlreadyPrepared {
            order_id: prepared.order_id.clone(),
            lines: again,
        }
        .into())
    }
}

/// Each step once, in order: picked, packed, shipped.
pub(super) fn settle_shipment<L: Ledger>(
    ledger: &mut L,
    shipment: &ShipmentRecorded,
) -> Result<(), Unsettled<L::Error>> {
    let done: BTreeSet<ShipStep> = ledger
        .shipment_steps(&shipment.order_id)
        .map_err(Unsettled::Ledger)?
        .into_iter()
        .collect();
    let last = done.iter().next_back().copied();
    if done.contains(&shipment.step) {
        return Err(FactRefused::StepAlreadyRecorded {
            order_id: shipment.order_id.clone(),
            step: shipment.step.name(),
        }
        .into());
    }
    if last != shipment.step.previous() {
        let expected = match last {
            None => ShipStep::Picked,
            Some(ShipStep::Picked) => ShipStep::Packed,
            Some(_) => ShipStep::Shipped,
        };
        return Err(FactRefused::StepOutOfOrder {
            order_id: shipment.order_id.clone(),
            step: shipment.step.name(),
            last: last.map(ShipStep::name),
            expected: expected.name(),
        }
        .into());
    }
    if shipment.step == ShipStep::Shipped {
        let lines: Vec<i64> = shipment.lines.iter().map(|l| l.line).collect();
        let released = released_here(ledger, &shipment.order_id)?;
        if let Some((lines, seq)) = already_released(&released, &lines) {
            return Err(FactRefused::AlreadyCollected {
                order_id: shipment.order_id.clone(),
                lines,
                seq,
            }
            .into());
        }
    }
    Ok(())
}

/// A till sale may not take a SKU's on-hand below the units its open reservations hold: on-hand
/// is central's baseline plus every local movement after it (this group's included), reserved
/// is the reader's open lines minus those released here since.
pub(super) fn check_reserved<L: Ledger>(
    ledger: &mut L,
    recorded: &SaleRecorded,
    reserved_stock: &[ReservedStock],
) -> Result<(), Unsettled<L::Error>> {
    for stock in reserved_stock {
        let sku = &stock.sku;
        let overflow = || out_of_range(format!("the stock of {sku}"), "overflows");
        let mut reserved: i64 = 0;
        let mut released: BTreeMap<&str, BTreeMap<i64, u64>> = BTreeMap::new();
        for r in &stock.reservations {
            if !released.contains_key(r.order_id.as_str()) {
                released.insert(&r.order_id, released_here(ledger, &r.order_id)?);
            }
            let gone = released
                .get(r.order_id.as_str())
                .and_then(|lines| already_released(lines, &[r.line]))
                .is_some();
            if !gone {
                reserved = reserved.checked_add(r.qty).ok_or_else(overflow)?;
            }
        }
        if reserved <= 0 {
            continue;
        }
        let watermark = stock.baseline.map_or(0, |b| b.watermark_seq);
        let local = ledger
            .movements_after(sku, watermark)
            .map_err(Unsettled::Ledger)?;
        let on_hand = stock
            .baseline
            .map_or(0, |b| b.on_hand)
            .checked_add(local)
            .ok_or_else(overflow)?;
        let mut sold: i64 = 0;
        for line in &recorded.lines {
            if line.stock_applied && line.sku.as_deref() == Some(sku.as_str()) {
                sold = sold.checked_add(line.qty).ok_or_else(overflow)?;
            }
        }
        let after = on_hand.checked_sub(sold).ok_or_else(overflow)?;
        if after < reserved {
            return Err(FactRefused::ReservedStock {
                sku: sku.clone(),
                on_hand,
                reserved,
                requested: sold,
                may_sell: on_hand.checked_sub(reserved).ok_or_else(overflow)?.max(0),
            }
            .into());
        }
    }
    Ok(())
}
