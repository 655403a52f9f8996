//! The ledger's rules against the agent's own: for a fact of every kind that moves stock,
//! points or order lines, what `rules::changes` reads back from the event's payload is exactly
//! what `StoreFact::effects` did to the agent's figures when it recorded it.

use super::rules::{Change, LineStatus, changes};
use crate::domain::facts::{
    CountSource, CountedItem, CycleCountRecorded, FactLine, HandedOverLine, LoyaltyRecorded,
    PickupCollected, ReturnOrigin, ReturnRecorded, SaleRecorded,
};
use crate::domain::orders::{OrderLine, ShipStep, ShipmentRecorded, Tracking};
use crate::domain::{
    Channel, CycleCount, Effect, LoyaltyBaseline, LoyaltyOperation, MovementKind, Return, Sale,
    StoreFact,
};
use std::collections::BTreeMap;

#[derive(Debug, Default, PartialEq)]
struct Figures {
    stock: BTreeMap<String, i64>,
    points: BTreeMap<String, i64>,
    lines: BTreeMap<(String, i64), &'static str>,
}

fn agent_view(fact: &StoreFact) -> Figures {
    let mut f = Figures::default();
    for effect in fact.effects() {
        match effect {
            Effect::Movement { sku, delta, .. } => *f.stock.entry(sku.into()).or_default() += delta,
            Effect::Loyalty {
                customer_id,
                points,
                ..
            }
            | Effect::PointsReversed {
                customer_id,
                points,
            } => *f.points.entry(customer_id.into()).or_default() += points,
            Effect::LineReleased { order_id, line, .. } => {
                f.lines.insert((order_id.into(), line), "collected");
            }
            _ => {}
        }
    }
    f
}

fn ledger_view(fact: &StoreFact) -> Figures {
    let payload = fact.payload_json().unwrap();
    let mut f = Figures::default();
    for change in changes(fact.event_type(), &payload).unwrap() {
        match change {
            Change::Stock { sku, delta } => *f.stock.entry(sku).or_default() += delta,
            Change::Points { customer_id, delta } => {
                *f.points.entry(customer_id).or_default() += delta
            }
            // The agent keeps no "picked" of its own beyond its prepared lines: compare what
            // releases a reservation.
            Change::Line {
                order_id,
                line,
                status: LineStatus::Collected,
            } => {
                f.lines.insert((order_id, line), "collected");
            }
            Change::Line { .. } | Change::Consent(_) | Change::Coupon { .. } => {}
        }
    }
    f
}

fn line(sku: Option<&str>, qty: i64, price: i64, applied: bool, points: Option<i64>) -> FactLine {
    FactLine {
        sku: sku.map(str::to_owned),
        gtin: None,
        qty,
        unit_price_minor: Some(price),
        stock_applied: applied,
        original_line: None,
        points,
    }
}

fn facts() -> Vec<StoreFact> {
    let baseline = LoyaltyBaseline {
        central_balance: 500,
        watermark_seq: 0,
    };
    vec![
        StoreFact::stock_movement(MovementKind::Receipt, "SKU-TEA", 12),
        StoreFact::stock_movement(MovementKind::Adjustment, "SKU-TEA", -3),
        StoreFact::Sale(Sale {
            recorded: SaleRecorded {
                receipt: Some("R-1".into()),
                lines: vec![
                    line(Some("SKU-TEA"), 2, 450, true, Some(9)),
                    line(Some("SKU-JAM"), 1, 1_299, true, Some(12)),
                    line(None, 1, 300, false, Some(3)),
                    line(Some("SKU-TEA"), 1, 450, true, Some(4)),
                ],
                total_minor: Some(2_949),
                currency: Some("EUR".into()),
                customer_id: Some("C-7".into()),
                earn_per_minor_units: Some(100),
                points_earned: Some(28),
                client_key: None,
                by: "till-1".into(),
            },
            loyalty: Some(baseline),
            balance_after: Some(528),
            reserved: Vec::new(),
        }),
        StoreFact::Return(Return {
            recorded: ReturnRecorded {
                receipt: None,
                lines: vec![line(Some("SKU-TEA"), 1, 450, true, Some(4))],
                origin: ReturnOrigin {
                    channel: Channel::Store,
                    order_id: None,
                    store: None,
                },
                cross_channel: false,
                reason: None,
                restocked: true,
                customer_id: None,
                original: Some(crate::domain::facts::ReturnOriginal::Receipt("R-1".into())),
                original_checked: true,
                reversed_customer_id: Some("C-7".into()),
                points_reversed: Some(4),
                client_key: None,
                by: "till-2".into(),
            },
            order_lines: None,
        }),
        StoreFact::Return(Return {
            recorded: ReturnRecorded {
                receipt: None,
                lines: vec![line(Some("SKU-JAM"), 1, 1_299, true, None)],
                origin: ReturnOrigin {
                    channel: Channel::Web,
                    order_id: Some("W-9".into()),
                    store: None,
                },
                cross_channel: true,
                reason: Some("damaged".into()),
                restocked: false,
                customer_id: None,
                original: None,
                original_checked: false,
                reversed_customer_id: None,
                points_reversed: None,
                client_key: None,
                by: "till-2".into(),
            },
            order_lines: None,
        }),
        StoreFact::CycleCount(CycleCount {
            recorded: CycleCountRecorded {
                zone: None,
                source: CountSource::Manual,
                items: vec![
                    CountedItem {
                        sku: Some("SKU-TEA".into()),
                        gtin: None,
                        counted: 7,
                        expected: Some(9),
                        delta: Some(-2),
                        watermark_seq: Some(3),
                    },
                    CountedItem {
                        sku: Some("SKU-NEW".into()),
                        gtin: None,
                        counted: 4,
                        expected: None,
                        delta: None,
                        watermark_seq: None,
                    },
                ],
                ignored_tags: Vec::new(),
                applied: true,
                as_of_seq: 9,
                client_key: None,
                by: "till-1".into(),
            },
            baselines: vec![None, None],
        }),
        StoreFact::Loyalty(LoyaltyOperation {
            recorded: LoyaltyRecorded {
                customer_id: "C-7".into(),
                points: -150,
                receipt: None,
                client_key: None,
                by: "till-1".into(),
            },
            baseline,
            burn_cap: 300,
            balance_after: Some(374),
        }),
        StoreFact::PickupCollected(PickupCollected {
            order_id: "W-4".into(),
            pickup_code: "PU-4".into(),
            lines: vec![
                HandedOverLine {
                    line: 1,
                    sku: "SKU-TEA".into(),
                    qty: 2,
                    status: "picked".into(),
                },
                HandedOverLine {
                    line: 3,
                    sku: "SKU-JAM".into(),
                    qty: 1,
                    status: "picked".into(),
                },
            ],
            was_ready: true,
            partial: true,
            client_key: None,
            by: "till-1".into(),
        }),
        StoreFact::Shipment(ShipmentRecorded {
            order_id: "S-5".into(),
            step: ShipStep::Shipped,
            lines: vec![OrderLine {
                line: 1,
                sku: "SKU-JAM".into(),
                qty: 2,
            }],
            tracking: Some(Tracking {
                carrier: "DHL".into(),
                tracking_number: "JD0001".into(),
            }),
            client_key: None,
            by: "till-1".into(),
        }),
    ]
}

#[test]
fn every_fact_moves_centrals_stock_points_and_order_lines_as_it_moved_the_agents() {
    for fact in facts() {
        let agent = agent_view(&fact);
        assert_eq!(
            ledger_view(&fact),
            agent,
            "{} moved the agent's figures one way and the ledger's another",
            fact.event_type()
        );
    }
}

#[test]
fn the_sample_covers_stock_points_and_lines_so_the_comparison_is_not_empty() {
    let all: Vec<Figures> = facts().iter().map(agent_view).collect();
    assert!(all.iter().any(|f| !f.stock.is_empty()));
    assert!(all.iter().any(|f| f.points.values().any(|p| *p < 0)));
    assert!(all.iter().any(|f| f.points.values().any(|p| *p > 0)));
    assert!(all.iter().any(|f| !f.lines.is_empty()));
}

#[test]
fn a_payload_that_is_not_its_types_json_is_an_error_not_a_silent_nothing() {
    assert!(changes("sale.recorded", r#"{"lines": "two"}"#).is_err());
    assert!(
        changes("device.scan", r#"{"anything": 1}"#)
            .unwrap()
            .is_empty()
    );
}
