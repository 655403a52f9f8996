//! Loyalty earned on a ticket, and returns checked against the sale they reverse
//! (docs/adr/0021-returns-name-their-original-and-points-follow-the-ticket.md).
//!
//! Earning is a pure function of the ticket and the rule in effect, applied by the producer
//! (the payload is then serialised off the writer); the balance after it is settled on the
//! writer. A return naming its original is settled on the writer against what that ticket sold
//! (or the order held) and every return of it recorded before, so two tills returning the last
//! unit of a line cannot both pass. Points reversed are computed from cumulative quantities, so
//! partial returns add up to exactly what the line earned.

use super::facts::{FactLine, ReturnOriginal, ReturnRecorded, SaleRecorded};
use super::{FactRefused, Ledger, LoyaltyBaseline, Unsettled, out_of_range};
use std::collections::HashMap;

/// A sale before the writer settles it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sale {
    pub recorded: SaleRecorded,
    /// The named customer's loyalty figure as a reader saw it (the balance after is settled on
    /// the writer).
    pub loyalty: Option<LoyaltyBaseline>,
    /// The customer's balance once this sale's points count: settled on the writer.
    pub balance_after: Option<i64>,
    /// With `[pickups] protect_reserved`: each SKU of the ticket that web orders reserve, as a
    /// reader saw it (empty otherwise); the writer refuses a sale that would sell those units.
    pub reserved: Vec<super::ReservedStock>,
}

impl Sale {
    /// A ticket without a customer.
    pub fn plain(recorded: SaleRecorded) -> Sale {
        Sale {
            recorded,
            loyalty: None,
            balance_after: None,
            reserved: Vec::new(),
        }
    }
}

/// One line of a web order as the `reservations` stream holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderedLine {
    pub line: i64,
    pub sku: String,
    pub qty: i64,
    /// A cancelled line was never handed over: nothing of it can come back.
    pub cancelled: bool,
}

/// A return before the writer settles it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Return {
    pub recorded: ReturnRecorded,
    /// For a return of a web order: the order's lines as a reader saw them in the reservations
    /// stream; `None` when the stream does not know the order.
    pub order_lines: Option<Vec<OrderedLine>>,
}

/// One line a ticket recorded here sold, as the writer filed it under the ticket's receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoldLine {
    pub line: u32,
    pub sku: Option<String>,
    pub gtin: Option<i64>,
    pub qty: i64,
    pub points: i64,
    pub customer_id: Option<String>,
}

/// The points `qty` units at `unit_price_minor` earn under `earn_per_minor_units` (one point per
/// that many minor units, rounded down); `None` on overflow. A rule of 0 earns nothing.
pub fn line_points(qty: i64, unit_price_minor: i64, earn_per_minor_units: i64) -> Option<i64> {
    if earn_per_minor_units <= 0 {
        return Some(0);
    }
    qty.checked_mul(unit_price_minor)?
        .checked_div(earn_per_minor_units)
        .map(|p| p.max(0))
}

/// Apply the earn rule to a ticket naming a customer: each line's points (0 without a price),
/// their sum, and the rule itself, so central recomputes them from the event. A rule of 0
/// (earning off) or a ticket without a customer leaves the payload as it was.
pub fn apply_earn(sale: &mut SaleRecorded, earn_per_minor_units: i64) -> Result<(), FactRefused> {
    if sale.customer_id.is_none() || earn_per_minor_units <= 0 {
        return Ok(());
    }
    let mut total: i64 = 0;
    for (i, line) in sale.lines.iter_mut().enumerate() {
        let points = match line.unit_price_minor {
            Some(price) => line_points(line.qty, price, earn_per_minor_units)
                .ok_or_else(|| out_of_range(format!("the points of line {i}"), "overflow"))?,
            None => 0,
        };
        line.points = Some(points);
        total = total
            .checked_add(points)
            .ok_or_else(|| out_of_range("the ticket's points", "overflow"))?;
    }
    sale.earn_per_minor_units = Some(earn_per_minor_units);
    sale.points_earned = Some(total);
    Ok(())
}

/// The points to reverse when `qty` more units of a line that sold `sold` units and earned
/// `points` come back, `before` units having come back already: the difference of the
/// cumulative shares `⌊points × returned / sold⌋`, so returning a line in parts reverses
/// exactly its points in total. `None` when the figures are inconsistent.
pub fn points_to_reverse(points: i64, sold: i64, before: i64, qty: i64) -> Option<i64> {
    if sold <= 0 || points <= 0 {
        return Some(0);
    }
    let after = before.checked_add(qty)?;
    if before < 0 || after > sold {
        return None;
    }
    // i128: points × units can pass i64 (10¹⁵ points × 10⁶ units) while the share cannot.
    let share =
        |units: i64| i64::try_from(i128::from(points) * i128::from(units) / i128::from(sold));
    share(after).ok()?.checked_sub(share(before).ok()?)
}

/// A sale: a receipt already recorded here is refused (it is how returns find the ticket), and
/// the customer's balance after the points earned is computed against every operation before.
pub(super) fn settle_sale<L: Ledger>(
    ledger: &mut L,
    sale: &mut Sale,
) -> Result<(), Unsettled<L::Error>> {
    if let Some(receipt) = &sale.recorded.receipt
        && let Some(seq) = ledger.receipt_seq(receipt).map_err(Unsettled::Ledger)?
    {
        return Err(FactRefused::ReceiptReused {
            receipt: receipt.clone(),
            seq,
        }
        .into());
    }
    super::orders::check_reserved(ledger, &sale.recorded, &sale.reserved)?;
    if let (Some(customer), Some(baseline)) = (&sale.recorded.customer_id, sale.loyalty) {
        let pending = ledger
            .pending_points(customer, baseline.watermark_seq)
            .map_err(Unsettled::Ledger)?;
        let overflow = || out_of_range(format!("the balance of {customer}"), "overflows");
        let balance = baseline
            .central_balance
            .checked_add(pending.net)
            .and_then(|b| b.checked_add(sale.recorded.points_earned.unwrap_or(0)))
            .ok_or_else(overflow)?;
        sale.balance_after = Some(balance);
    }
    Ok(())
}

/// A return naming its original: every line checked against what the original sold minus what
/// was returned of it before (this return's earlier lines included), and the points the
/// original earned on the returned units reversed. An original this agent does not know is
/// recorded unchecked.
pub(super) fn settle_return<L: Ledger>(
    ledger: &mut L,
    ret: &mut Return,
) -> Result<(), Unsettled<L::Error>> {
    let recorded = &mut ret.recorded;
    recorded.original_checked = false;
    recorded.points_reversed = None;
    recorded.reversed_customer_id = None;
    let Some(original) = recorded.original.clone() else {
        return Ok(());
    };
    let sold: Vec<SoldLine> = match &original {
        ReturnOriginal::Receipt(receipt) => {
            ledger.sold_lines(receipt).map_err(Unsettled::Ledger)?
        }
        ReturnOriginal::OrderId(_) => ret
            .order_lines
            .iter()
            .flatten()
            .filter_map(|o| {
                Some(SoldLine {
                    line: u32::try_from(o.line).ok()?,
                    sku: Some(o.sku.clone()),
                    gtin: None,
                    qty: if o.cancelled { 0 } else { o.qty },
                    points: 0,
                    customer_id: None,
                })
            })
            .collect(),
    };
    if sold.is_empty() {
        for line in &mut recorded.lines {
            line.points = None;
        }
        return Ok(());
    }
    let customer = sold.iter().find_map(|s| s.customer_id.clone());
    let earned = sold.iter().any(|s| s.points > 0);
    // Units this return brings back per original line, for a line named twice in one return.
    let mut added: HashMap<u32, i64> = HashMap::new();
    let mut reversed: i64 = 0;
    for (i, line) in recorded.lines.iter_mut().enumerate() {
        let Some(at) = line.original_line else {
            return Err(out_of_range(
                format!("lines[{i}].original_line"),
                "missing: every line of a return naming its original names its line",
            )
            .into());
        };
        let Some(s) = sold.iter().find(|s| s.line == at) else {
            return Err(FactRefused::LineNotInOriginal {
                line: i,
                original_line: at,
                original_lines: sold.iter().map(|s| s.line).collect(),
            }
            .into());
        };
        let same_item = match (&s.sku, &line.sku) {
            (Some(sold_sku), returned) => returned.as_deref() == Some(sold_sku.as_str()),
            (None, _) => s.gtin.is_some() && line.gtin.map(|g| g.as_i64()) == s.gtin,
        };
        if !same_item {
            return Err(FactRefused::ItemDiffersFromOriginal {
                line: i,
                original_line: at,
                sold_sku: s.sku.clone(),
                returned_sku: line.sku.clone(),
            }
            .into());
        }
        let overflow = || out_of_range(format!("lines[{i}].qty"), "overflows");
        let before = ledger
            .returned_qty(&original, at)
            .map_err(Unsettled::Ledger)?
            .checked_add(added.get(&at).copied().unwrap_or(0))
            .ok_or_else(overflow)?;
        let returnable = s.qty.checked_sub(before).ok_or_else(overflow)?.max(0);
        if line.qty > returnable {
            return Err(FactRefused::ReturnExceedsSale {
                line: i,
                original_line: at,
                sold: s.qty,
                already_returned: before,
                returnable,
                requested: line.qty,
            }
            .into());
        }
        let points = points_to_reverse(s.points, s.qty, before, line.qty).ok_or_else(overflow)?;
        line.points = earned.then_some(points);
        reversed = reversed.checked_add(points).ok_or_else(overflow)?;
        let entry = added.entry(at).or_insert(0);
        *entry = entry.checked_add(line.qty).ok_or_else(overflow)?;
    }
    recorded.original_checked = true;
    if let Some(customer) = customer
        && reversed > 0
    {
        recorded.reversed_customer_id = Some(customer);
        recorded.points_reversed = Some(reversed);
    }
    Ok(())
}

/// What a return of `lines` (with their original lines) adds to what was returned of each
/// original line: `(original line, return line, qty, points)`.
pub(super) fn returned_lines(lines: &[FactLine]) -> impl Iterator<Item = (u32, u32, i64, i64)> {
    lines.iter().enumerate().filter_map(|(i, l)| {
        Some((
            l.original_line?,
            u32::try_from(i).ok()?,
            l.qty,
            l.points.unwrap_or(0),
        ))
    })
}
