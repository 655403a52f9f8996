//! What each store fact does to central's stock, points and order lines: the agent's own rules
//! (`StoreFact::effects`, docs/ledger.md), read back from the event's typed payload. Pure: the
//! ledger calls it inside the transaction that moves its cursor past the fact.

use crate::domain::consent::ConsentChanged;
use crate::domain::coupons::CouponRedeemed;
use crate::domain::facts::{
    CycleCountRecorded, LoyaltyRecorded, PickupCollected, ReturnRecorded, SaleRecorded,
    StockMovementRecorded,
};
use crate::domain::orders::{PickupPrepared, ShipStep, ShipmentRecorded};
use serde::de::DeserializeOwned;

/// The status central gives an order line after a store fact about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineStatus {
    /// Prepared or picked in the store: still reserved.
    Picked,
    /// Handed over or shipped: no longer reserved, and its units left the store's on-hand.
    Collected,
    Cancelled,
    Open,
}

impl LineStatus {
    pub fn name(self) -> &'static str {
        match self {
            LineStatus::Open => "open",
            LineStatus::Picked => "picked",
            LineStatus::Collected => "collected",
            LineStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(name: &str) -> Option<LineStatus> {
        Some(match name {
            "open" => LineStatus::Open,
            "picked" => LineStatus::Picked,
            "collected" => LineStatus::Collected,
            "cancelled" => LineStatus::Cancelled,
            _ => return None,
        })
    }
}

/// One change to central's figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// On-hand of a SKU at the fact's store moves by `delta`.
    Stock { sku: String, delta: i64 },
    /// A customer's balance moves by `delta` (earned, burned, or reversed by a return).
    Points { customer_id: String, delta: i64 },
    /// An order line moves forward (a line already further along stays where it is).
    Line {
        order_id: String,
        line: i64,
        status: LineStatus,
    },
    /// A consent choice made at a till, dated `at` (RFC 3339).
    Consent(ConsentChanged),
    /// A coupon taken at a till (`identity` as the contract writes it): a single-use one taken
    /// again after the first ingested redemption is a duplicate central flags.
    Coupon { identity: String, single_use: bool },
}

#[derive(Debug, thiserror::Error)]
#[error("{event_type} payload does not match its type: {reason}")]
pub struct RuleError {
    pub event_type: String,
    pub reason: String,
}

fn read<T: DeserializeOwned>(event_type: &str, payload: &str) -> Result<T, RuleError> {
    serde_json::from_str(payload).map_err(|e| RuleError {
        event_type: event_type.to_owned(),
        reason: e.to_string(),
    })
}

fn overflow(event_type: &str) -> RuleError {
    RuleError {
        event_type: event_type.to_owned(),
        reason: "a quantity does not fit in 64 bits".into(),
    }
}

/// The changes of one event. Telemetry and event types without an effect on stock, points or
/// orders give none.
pub fn changes(event_type: &str, payload: &str) -> Result<Vec<Change>, RuleError> {
    let neg = |qty: i64| qty.checked_neg().ok_or_else(|| overflow(event_type));
    let mut out = Vec::new();
    match event_type {
        "stock.movement" => {
            let m: StockMovementRecorded = read(event_type, payload)?;
            if let (true, Some(sku)) = (m.stock_applied, m.sku) {
                out.push(Change::Stock {
                    sku,
                    delta: m.delta,
                });
            }
        }
        "sale.recorded" => {
            let sale: SaleRecorded = read(event_type, payload)?;
            for line in sale.lines.into_iter().filter(|l| l.stock_applied) {
                if let Some(sku) = line.sku {
                    out.push(Change::Stock {
                        sku,
                        delta: neg(line.qty)?,
                    });
                }
            }
            if let (Some(customer_id), Some(points)) = (sale.customer_id, sale.points_earned)
                && points > 0
            {
                out.push(Change::Points {
                    customer_id,
                    delta: points,
                });
            }
        }
        "return.recorded" => {
            let ret: ReturnRecorded = read(event_type, payload)?;
            if ret.restocked {
                for line in ret.lines.into_iter().filter(|l| l.stock_applied) {
                    if let Some(sku) = line.sku {
                        out.push(Change::Stock {
                            sku,
                            delta: line.qty,
                        });
                    }
                }
            }
            if let (Some(customer_id), Some(points)) =
                (ret.reversed_customer_id, ret.points_reversed)
                && points > 0
            {
                out.push(Change::Points {
                    customer_id,
                    delta: neg(points)?,
                });
            }
        }
        "stock.cycle_count" => {
            let count: CycleCountRecorded = read(event_type, payload)?;
            if count.applied {
                for item in count.items {
                    let delta = item.delta.unwrap_or(item.counted);
                    if let (Some(sku), true) = (item.sku, delta != 0) {
                        out.push(Change::Stock { sku, delta });
                    }
                }
            }
        }
        "loyalty.earned" | "loyalty.burned" => {
            let op: LoyaltyRecorded = read(event_type, payload)?;
            out.push(Change::Points {
                customer_id: op.customer_id,
                delta: op.points,
            });
        }
        "pickup.collected" => {
            let pickup: PickupCollected = read(event_type, payload)?;
            for line in pickup.lines {
                out.push(Change::Stock {
                    sku: line.sku,
                    delta: neg(line.qty)?,
                });
                out.push(Change::Line {
                    order_id: pickup.order_id.clone(),
                    line: line.line,
                    status: LineStatus::Collected,
                });
            }
        }
        "pickup.prepared" => {
            let prepared: PickupPrepared = read(event_type, payload)?;
            for line in prepared.lines {
                out.push(Change::Line {
                    order_id: prepared.order_id.clone(),
                    line: line.line,
                    status: LineStatus::Picked,
                });
            }
        }
        "shipment.picked" | "shipment.packed" | "shipment.shipped" => {
            let shipment: ShipmentRecorded = read(event_type, payload)?;
            for line in shipment.lines {
                if shipment.step == ShipStep::Shipped {
                    out.push(Change::Stock {
                        sku: line.sku,
                        delta: neg(line.qty)?,
                    });
                }
                out.push(Change::Line {
                    order_id: shipment.order_id.clone(),
                    line: line.line,
                    status: if shipment.step == ShipStep::Shipped {
                        LineStatus::Collected
                    } else {
                        LineStatus::Picked
                    },
                });
            }
        }
        "consent.changed" => out.push(Change::Consent(read(event_type, payload)?)),
        "coupon.redeemed" => {
            let coupon: CouponRedeemed = read(event_type, payload)?;
            out.push(Change::Coupon {
                identity: coupon.coupon,
                single_use: coupon.single_use,
            });
        }
        _ => {}
    }
    Ok(out)
}

/// Whether a line may go from `from` to `to`: forward only, and a finished line stays finished
/// (a late "picked" after "collected" changes nothing).
pub fn line_moves(from: LineStatus, to: LineStatus) -> bool {
    let rank = |s: LineStatus| match s {
        LineStatus::Open => 0,
        LineStatus::Picked => 1,
        LineStatus::Collected | LineStatus::Cancelled => 2,
    };
    rank(to) > rank(from)
}
