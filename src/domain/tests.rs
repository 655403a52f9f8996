//! The rules against an in-memory ledger: what each fact does, and what it is refused for.

use super::*;
use std::collections::HashMap;

/// Earlier facts, as plain maps.
#[derive(Default)]
pub(super) struct Memory {
    /// (sku, seq, delta)
    pub movements: Vec<(String, u64, i64)>,
    /// (customer, seq, points)
    pub points: Vec<(String, u64, i64)>,
    pub collected: HashMap<String, u64>,
    /// receipt → (seq, lines)
    pub sold: HashMap<String, (u64, Vec<SoldLine>)>,
    /// (customer, seq, points): reversals, not burns
    pub reversed: Vec<(String, u64, i64)>,
    /// (original, line, qty)
    pub returned: Vec<(ReturnOriginal, u32, i64)>,
}

impl Memory {
    /// Record the effects of a settled fact as the writer would.
    pub fn commit(&mut self, fact: &StoreFact, seq: u64) {
        for effect in fact.effects() {
            match effect {
                Effect::Movement { sku, delta, .. } => {
                    self.movements.push((sku.to_owned(), seq, delta))
                }
                Effect::Loyalty {
                    customer_id,
                    points,
                    ..
                } => self.points.push((customer_id.to_owned(), seq, points)),
                Effect::PointsReversed {
                    customer_id,
                    points,
                } => self.reversed.push((customer_id.to_owned(), seq, points)),
                Effect::OrderCollected { order_id } => {
                    self.collected.insert(order_id.to_owned(), seq);
                }
                Effect::Sold {
                    receipt,
                    line,
                    sku,
                    gtin,
                    qty,
                    points,
                    customer_id,
                } => self
                    .sold
                    .entry(receipt.to_owned())
                    .or_insert_with(|| (seq, Vec::new()))
                    .1
                    .push(SoldLine {
                        line,
                        sku: sku.map(str::to_owned),
                        gtin,
                        qty,
                        points,
                        customer_id: customer_id.map(str::to_owned),
                    }),
                Effect::Returned {
                    original,
                    line,
                    qty,
                    ..
                } => self.returned.push((original.clone(), line, qty)),
            }
        }
    }
}

impl Ledger for Memory {
    type Error = std::convert::Infallible;

    fn movements_after(&mut self, sku: &str, watermark_seq: u64) -> Result<i64, Self::Error> {
        Ok(self
            .movements
            .iter()
            .filter(|(s, seq, _)| s == sku && *seq > watermark_seq)
            .map(|(_, _, d)| d)
            .sum())
    }

    fn pending_points(
        &mut self,
        customer_id: &str,
        watermark_seq: u64,
    ) -> Result<PendingPoints, Self::Error> {
        let after = |ops: &'_ Vec<(String, u64, i64)>| {
            ops.iter()
                .filter(|(c, seq, _)| c == customer_id && *seq > watermark_seq)
                .map(|(_, _, p)| *p)
                .collect::<Vec<i64>>()
        };
        let ops = after(&self.points);
        Ok(PendingPoints {
            net: ops.iter().sum::<i64>() + after(&self.reversed).iter().sum::<i64>(),
            burned: ops.iter().map(|p| (-p).max(0)).sum(),
        })
    }

    fn collected_at(&mut self, order_id: &str) -> Result<Option<u64>, Self::Error> {
        Ok(self.collected.get(order_id).copied())
    }

    fn receipt_seq(&mut self, receipt: &str) -> Result<Option<u64>, Self::Error> {
        Ok(self.sold.get(receipt).map(|(seq, _)| *seq))
    }

    fn sold_lines(&mut self, receipt: &str) -> Result<Vec<SoldLine>, Self::Error> {
        Ok(self
            .sold
            .get(receipt)
            .map(|(_, lines)| lines.clone())
            .unwrap_or_default())
    }

    fn returned_qty(&mut self, original: &ReturnOriginal, line: u32) -> Result<i64, Self::Error> {
        Ok(self
            .returned
            .iter()
            .filter(|(o, l, _)| o == original && *l == line)
            .map(|(_, _, q)| q)
            .sum())
    }
}

pub(super) fn line(sku: Option<&str>, qty: i64) -> FactLine {
    FactLine {
        sku: sku.map(str::to_owned),
        gtin: None,
        qty,
        unit_price_minor: None,
        stock_applied: sku.is_some(),
        original_line: None,
        points: None,
    }
}

fn movements(fact: &StoreFact) -> Vec<(u32, String, i64)> {
    fact.effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Movement {
                line, sku, delta, ..
            } => Some((line, sku.to_owned(), delta)),
            _ => None,
        })
        .collect()
}

fn sale(lines: Vec<FactLine>) -> StoreFact {
    StoreFact::Sale(Sale::plain(SaleRecorded {
        receipt: None,
        lines,
        total_minor: None,
        currency: None,
        customer_id: Some("C-1".into()),
        earn_per_minor_units: None,
        points_earned: None,
        client_key: Some("t1/r1".into()),
        by: "till-1".into(),
    }))
}

#[test]
fn a_basket_moves_each_known_line_once_the_same_item_twice_included() {
    let fact = sale(vec![
        line(Some("MILK"), 2),
        line(None, 1),
        line(Some("BREAD"), 1),
        line(Some("MILK"), 3),
    ]);
    assert_eq!(
        movements(&fact),
        vec![
            (0, "MILK".into(), -2),
            (2, "BREAD".into(), -1),
            (3, "MILK".into(), -3)
        ]
    );
}

#[test]
fn a_return_restocks_each_line_unless_the_goods_are_damaged() {
    let ret = |restocked: bool| {
        StoreFact::Return(Return {
            order_lines: None,
            recorded: ReturnRecorded {
                receipt: None,
                lines: vec![line(Some("A"), 1), line(Some("B"), 2)],
                origin: ReturnOrigin {
                    channel: Channel::Web,
                    order_id: Some("WEB-1".into()),
                    store: None,
                },
                cross_channel: true,
                reason: None,
                restocked,
                customer_id: None,
                original: None,
                original_checked: false,
                reversed_customer_id: None,
                points_reversed: None,
                client_key: None,
                by: "till-1".into(),
            },
        })
    };
    assert_eq!(
        movements(&ret(true)),
        vec![(0, "A".into(), 1), (1, "B".into(), 2)]
    );
    assert!(movements(&ret(false)).is_empty());
}

fn count(items: Vec<(&str, i64, Option<StockBaseline>)>) -> StoreFact {
    let (items, baselines) = items
        .into_iter()
        .map(|(sku, counted, baseline)| {
            (
                CountedItem {
                    sku: Some(sku.to_owned()),
                    gtin: None,
                    counted,
                    expected: None,
                    delta: None,
                    watermark_seq: None,
                },
                baseline,
            )
        })
        .unzip();
    StoreFact::CycleCount(CycleCount {
        recorded: CycleCountRecorded {
            zone: None,
            source: CountSource::Manual,
            items,
            ignored_tags: Vec::new(),
            applied: true,
            as_of_seq: 0,
            client_key: None,
            by: "till-1".into(),
        },
        baselines,
    })
}

#[test]
fn a_count_expects_the_baseline_plus_every_movement_after_it_and_sets_stock_to_the_count() {
    // Central counted seq 1 in its baseline of 10; seq 2 and 3 came after.
    let mut ledger = Memory {
        movements: vec![("A".into(), 1, -1), ("A".into(), 2, -2), ("A".into(), 3, 5)],
        ..Memory::default()
    };
    let base = StockBaseline {
        on_hand: 10,
        watermark_seq: 1,
    };
    let mut fact = count(vec![("A", 12, Some(base)), ("B", 4, None)]);
    fact.settle(&mut ledger, 4).expect("settles");
    let StoreFact::CycleCount(settled) = &fact else {
        unreachable!()
    };
    let items = &settled.recorded.items;
    assert_eq!((items[0].expected, items[0].delta), (Some(13), Some(-1)));
    assert_eq!(items[0].watermark_seq, Some(1));
    // No baseline and no movement: nothing expected, the count is the first figure.
    assert_eq!((items[1].expected, items[1].delta), (None, None));
    assert_eq!(settled.recorded.as_of_seq, 3);
    assert_eq!(
        movements(&fact),
        vec![(0, "A".into(), -1), (1, "B".into(), 4)]
    );
}

#[test]
fn count_lines_naming_the_same_sku_are_summed_into_one_count() {
    let mut ledger = Memory::default();
    let base = StockBaseline {
        on_hand: 10,
        watermark_seq: 0,
    };
    let mut fact = count(vec![("A", 3, Some(base)), ("A", 4, Some(base))]);
    fact.settle(&mut ledger, 1).expect("settles");
    let StoreFact::CycleCount(settled) = &fact else {
        unreachable!()
    };
    assert_eq!(settled.recorded.items.len(), 1);
    assert_eq!(settled.recorded.items[0].counted, 7);
    assert_eq!(movements(&fact), vec![(0, "A".into(), -3)]);
}

#[test]
fn a_count_whose_expected_stock_would_overflow_is_refused_as_out_of_range() {
    let mut ledger = Memory {
        movements: vec![("A".into(), 1, 1)],
        ..Memory::default()
    };
    let base = StockBaseline {
        on_hand: i64::MAX,
        watermark_seq: 0,
    };
    let mut fact = count(vec![("A", 3, Some(base))]);
    match fact.settle(&mut ledger, 2) {
        Err(Unsettled::Refused(refused @ FactRefused::OutOfRange { .. })) => {
            assert!(!refused.is_conflict());
        }
        other => panic!("expected out of range, got {other:?}"),
    }
}

fn loyalty(points: i64, central_balance: i64, cap: i64) -> StoreFact {
    StoreFact::Loyalty(LoyaltyOperation {
        recorded: LoyaltyRecorded {
            customer_id: "C1".into(),
            points,
            receipt: None,
            client_key: None,
            by: "till-1".into(),
        },
        baseline: LoyaltyBaseline {
            central_balance,
            watermark_seq: 0,
        },
        burn_cap: cap,
        balance_after: None,
    })
}

#[test]
fn a_burn_is_checked_against_the_balance_first_then_the_offline_cap() {
    let mut ledger = Memory {
        points: vec![("C1".into(), 1, 100), ("C1".into(), 2, -300)],
        ..Memory::default()
    };
    // Balance 1000 + 100 - 300 = 800; 300 burned, cap 500.
    let mut within = loyalty(-200, 1000, 500);
    within.settle(&mut ledger, 3).expect("within both");
    assert!(matches!(&within, StoreFact::Loyalty(op) if op.balance_after == Some(600)));
    assert_eq!(within.event_type(), "loyalty.burned");
    match loyalty(-201, 1000, 500).settle(&mut ledger, 3) {
        Err(Unsettled::Refused(FactRefused::BurnCapExceeded { allowed, .. })) => {
            assert_eq!(allowed, 200)
        }
        other => panic!("expected the cap, got {other:?}"),
    }
    match loyalty(-900, 1000, 5000).settle(&mut ledger, 3) {
        Err(Unsettled::Refused(FactRefused::InsufficientPoints { balance, requested })) => {
            assert_eq!((balance, requested), (800, 900))
        }
        other => panic!("expected insufficient points, got {other:?}"),
    }
    let mut earn = loyalty(50, 1000, 0);
    earn.settle(&mut ledger, 3)
        .expect("an earn is never capped");
    assert!(matches!(&earn, StoreFact::Loyalty(op) if op.balance_after == Some(850)));
}

#[test]
fn an_order_handed_over_here_is_refused_a_second_time() {
    let mut ledger = Memory::default();
    let mut pickup = StoreFact::PickupCollected(PickupCollected {
        order_id: "WEB-9".into(),
        pickup_code: "PU-9".into(),
        lines: vec![
            HandedOverLine {
                line: 1,
                sku: "A".into(),
                qty: 2,
                status: "picked".into(),
            },
            HandedOverLine {
                line: 2,
                sku: "A".into(),
                qty: 1,
                status: "picked".into(),
            },
        ],
        was_ready: true,
        client_key: None,
        by: "till-1".into(),
    });
    pickup.settle(&mut ledger, 5).expect("first hand-over");
    assert_eq!(
        movements(&pickup),
        vec![(0, "A".into(), -2), (1, "A".into(), -1)]
    );
    assert!(
        pickup
            .effects()
            .contains(&Effect::OrderCollected { order_id: "WEB-9" })
    );
    ledger.collected.insert("WEB-9".into(), 5);
    assert!(matches!(
        pickup.settle(&mut ledger, 6),
        Err(Unsettled::Refused(FactRefused::AlreadyCollected {
            seq: 5,
            ..
        }))
    ));
}

#[test]
fn a_payload_reads_back_into_its_own_type() {
    let fact = sale(vec![line(Some("MILK"), 2), line(None, 1)]);
    let StoreFact::Sale(Sale { recorded, .. }) = &fact else {
        unreachable!()
    };
    let json = fact.payload_json().expect("serialises");
    let back: SaleRecorded = serde_json::from_str(&json).expect("parses back");
    assert_eq!(&back, recorded);
}
