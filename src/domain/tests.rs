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
    /// order → (line, seq) released here
    pub released: HashMap<String, Vec<(i64, u64)>>,
    pub prepared: HashMap<String, Vec<i64>>,
    pub steps: HashMap<String, Vec<ShipStep>>,
    pub coupons: HashMap<String, Redemption>,
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
                Effect::LineReleased { order_id, line, .. } => self
                    .released
                    .entry(order_id.to_owned())
                    .or_default()
                    .push((line, seq)),
                Effect::LinePrepared { order_id, line } => self
                    .prepared
                    .entry(order_id.to_owned())
                    .or_default()
                    .push(line),
                Effect::ShipmentStep { order_id, step } => self
                    .steps
                    .entry(order_id.to_owned())
                    .or_default()
                    .push(step),
                Effect::ConsentChanged { .. } | Effect::CouponRedeemed { .. } => {}
                Effect::PointsReversed {
                    customer_id,
                    points,
                } => self.reversed.push((customer_id.to_owned(), seq, points)),
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

    fn released_lines(&mut self, order_id: &str) -> Result<Vec<(i64, u64)>, Self::Error> {
        Ok(self.released.get(order_id).cloned().unwrap_or_default())
    }

    fn prepared_lines(&mut self, order_id: &str) -> Result<Vec<i64>, Self::Error> {
        Ok(self.prepared.get(order_id).cloned().unwrap_or_default())
    }

    fn shipment_steps(&mut self, order_id: &str) -> Result<Vec<ShipStep>, Self::Error> {
        Ok(self.steps.get(order_id).cloned().unwrap_or_default())
    }

    fn coupon_redeemed(&mut self, coupon: &str) -> Result<Option<Redemption>, Self::Error> {
        Ok(self.coupons.get(coupon).copied())
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
        partial: false,
        client_key: None,
        by: "till-1".into(),
    });
    pickup.settle(&mut ledger, 5).expect("first hand-over");
    assert_eq!(
        movements(&pickup),
        vec![(0, "A".into(), -2), (1, "A".into(), -1)]
    );
    assert!(pickup.effects().contains(&Effect::LineReleased {
        order_id: "WEB-9",
        line: 2,
        how: Release::Collected
    }));
    ledger.commit(&pickup, 5);
    match pickup.settle(&mut ledger, 6) {
        Err(Unsettled::Refused(FactRefused::AlreadyCollected { seq: 5, lines, .. })) => {
            assert_eq!(lines, vec![1, 2])
        }
        other => panic!("expected already collected, got {other:?}"),
    }
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

fn order_line(line: i64, sku: &str, qty: i64) -> OrderLine {
    OrderLine {
        line,
        sku: sku.into(),
        qty,
    }
}

fn handed(order_id: &str, lines: &[(i64, &str, i64)]) -> StoreFact {
    StoreFact::PickupCollected(PickupCollected {
        order_id: order_id.into(),
        pickup_code: "PU".into(),
        lines: lines
            .iter()
            .map(|(line, sku, qty)| HandedOverLine {
                line: *line,
                sku: (*sku).into(),
                qty: *qty,
                status: "picked".into(),
            })
            .collect(),
        was_ready: true,
        partial: true,
        client_key: None,
        by: "till-1".into(),
    })
}

#[test]
fn a_partial_hand_over_leaves_the_other_lines_to_a_later_visit_and_refuses_a_line_twice() {
    let mut ledger = Memory::default();
    let mut first = handed("WEB-3", &[(1, "A", 1), (2, "B", 2)]);
    first.settle(&mut ledger, 1).expect("first visit");
    ledger.commit(&first, 1);
    let mut rest = handed("WEB-3", &[(3, "C", 1)]);
    rest.settle(&mut ledger, 2).expect("the remaining line");
    ledger.commit(&rest, 2);
    let mut again = handed("WEB-3", &[(2, "B", 2), (4, "D", 1)]);
    match again.settle(&mut ledger, 3) {
        Err(Unsettled::Refused(FactRefused::AlreadyCollected { lines, seq: 1, .. })) => {
            assert_eq!(lines, vec![2])
        }
        other => panic!("expected line 2 refused, got {other:?}"),
    }
}

#[test]
fn an_order_migrated_as_a_whole_refuses_every_line() {
    let mut ledger = Memory::default();
    ledger
        .released
        .insert("OLD-1".into(), vec![(WHOLE_ORDER, 4)]);
    let mut again = handed("OLD-1", &[(7, "A", 1)]);
    assert!(matches!(
        again.settle(&mut ledger, 9),
        Err(Unsettled::Refused(FactRefused::AlreadyCollected {
            seq: 4,
            ..
        }))
    ));
}

#[test]
fn a_line_is_prepared_once_and_moves_no_stock() {
    let mut ledger = Memory::default();
    let mut prepared = StoreFact::PickupPrepared(PickupPrepared {
        order_id: "WEB-4".into(),
        pickup_code: "PU-4".into(),
        lines: vec![order_line(1, "A", 2)],
        client_key: None,
        by: "till-1".into(),
    });
    prepared.settle(&mut ledger, 1).expect("first preparation");
    assert!(movements(&prepared).is_empty());
    ledger.commit(&prepared, 1);
    assert!(matches!(
        prepared.settle(&mut ledger, 2),
        Err(Unsettled::Refused(FactRefused::AlreadyPrepared { .. }))
    ));
}

fn shipment(step: ShipStep) -> StoreFact {
    StoreFact::Shipment(ShipmentRecorded {
        order_id: "SHIP-1".into(),
        step,
        lines: vec![order_line(1, "A", 2), order_line(2, "B", 1)],
        tracking: (step == ShipStep::Shipped).then(|| Tracking {
            carrier: "DHL".into(),
            tracking_number: "JD0146".into(),
        }),
        client_key: None,
        by: "bench-1".into(),
    })
}

#[test]
fn shipment_steps_go_in_order_once_each_and_only_shipped_moves_stock() {
    let mut ledger = Memory::default();
    let mut packed = shipment(ShipStep::Packed);
    match packed.settle(&mut ledger, 1) {
        Err(Unsettled::Refused(FactRefused::StepOutOfOrder { expected, .. })) => {
            assert_eq!(expected, "picked")
        }
        other => panic!("expected out of order, got {other:?}"),
    }
    for (seq, step) in ShipStep::ALL.into_iter().enumerate() {
        let mut fact = shipment(step);
        fact.settle(&mut ledger, seq as u64 + 1).expect("in order");
        if step == ShipStep::Shipped {
            assert_eq!(
                movements(&fact),
                vec![(0, "A".into(), -2), (1, "B".into(), -1)]
            );
        } else {
            assert!(movements(&fact).is_empty());
        }
        ledger.commit(&fact, seq as u64 + 1);
    }
    assert!(matches!(
        shipment(ShipStep::Shipped).settle(&mut ledger, 9),
        Err(Unsettled::Refused(FactRefused::StepAlreadyRecorded { .. }))
    ));
}

#[test]
fn a_protected_sale_may_not_sell_reserved_units_and_counts_releases_since_the_reader() {
    let mut ledger = Memory::default();
    let stock = ReservedStock {
        sku: "A".into(),
        baseline: Some(StockBaseline {
            on_hand: 5,
            watermark_seq: 0,
        }),
        reservations: vec![
            ReservedLine {
                order_id: "WEB-1".into(),
                line: 1,
                qty: 3,
            },
            ReservedLine {
                order_id: "WEB-2".into(),
                line: 1,
                qty: 1,
            },
        ],
    };
    let protected = |qty| {
        let StoreFact::Sale(mut sale) = sale(vec![line(Some("A"), qty)]) else {
            unreachable!()
        };
        sale.reserved = vec![stock.clone()];
        StoreFact::Sale(sale)
    };
    let mut one = protected(1);
    one.settle(&mut ledger, 1).expect("5 on hand, 4 reserved");
    ledger.commit(&one, 1);
    match protected(1).settle(&mut ledger, 2) {
        Err(Unsettled::Refused(FactRefused::ReservedStock {
            on_hand: 4,
            reserved: 4,
            may_sell: 0,
            ..
        })) => {}
        other => panic!("expected reserved_stock, got {other:?}"),
    }
    // WEB-2 handed over since the reader looked: its unit left on-hand and `reserved`.
    let collected = handed("WEB-2", &[(1, "A", 1)]);
    ledger.commit(&collected, 2);
    match protected(1).settle(&mut ledger, 3) {
        Err(Unsettled::Refused(FactRefused::ReservedStock {
            on_hand: 3,
            reserved: 3,
            ..
        })) => {}
        other => panic!("expected reserved_stock, got {other:?}"),
    }
}

fn coupon(code: &str) -> StoreFact {
    let mut redeemed = CouponRedeemed::new(coupons::parse_coupon(code).expect("a valid coupon"));
    redeemed.by = "till-1".into();
    StoreFact::CouponRedeemed(redeemed)
}

#[test]
fn a_single_use_coupon_redeemed_here_before_is_refused_with_the_first_redemption() {
    let mut ledger = Memory::default();
    let mut first = coupon("(8110)061414100012325011000050123456");
    first.settle(&mut ledger, 7).unwrap();
    assert_eq!(
        first.effects(),
        vec![Effect::CouponRedeemed {
            coupon: "gs1:614141:000123:123456"
        }]
    );
    ledger.coupons.insert(
        "gs1:614141:000123:123456".into(),
        Redemption {
            seq: 7,
            at_ms: 1_000,
        },
    );
    let mut again = coupon("]C18110061414100012325011000050123456");
    match again.settle(&mut ledger, 8) {
        Err(Unsettled::Refused(refused)) => {
            assert_eq!(refused.code(), "coupon_already_redeemed");
            assert!(refused.is_conflict());
            assert_eq!(
                refused,
                FactRefused::CouponAlreadyRedeemed {
                    coupon: "gs1:614141:000123:123456".into(),
                    seq: 7,
                    at_ms: 1_000
                }
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_gs1_coupon_without_serial_is_never_refused_and_leaves_no_redemption() {
    let mut ledger = Memory::default();
    ledger
        .coupons
        .insert("gs1:614141:000123".into(), Redemption { seq: 3, at_ms: 1 });
    let mut fact = coupon("(8110)0614141000123250110000");
    fact.settle(&mut ledger, 9).unwrap();
    assert!(fact.effects().is_empty());
}

#[test]
fn plain_codes_are_single_use_and_compared_without_case() {
    let a = coupons::parse_coupon("welcome-7q2x").unwrap();
    let b = coupons::parse_coupon("WELCOME-7Q2X").unwrap();
    assert_eq!(a.identity, b.identity);
    assert!(a.single_use);
    assert!(coupons::parse_coupon("abc").is_err(), "too short");
    assert!(coupons::parse_coupon("WELCOME 7").is_err(), "a space");
    assert!(matches!(
        coupons::parse_coupon("(01)09506000134352"),
        Err(coupons::CouponCodeError::NoCouponAi)
    ));
}

#[test]
fn a_consent_change_here_wins_until_central_sends_a_choice_dated_at_or_after_it() {
    use consent::{ConsentChoice, ConsentSource, in_effect};
    let here = ConsentChoice {
        granted: true,
        at_ms: 2_000,
    };
    let older = ConsentChoice {
        granted: false,
        at_ms: 1_999,
    };
    let same = ConsentChoice {
        granted: false,
        at_ms: 2_000,
    };
    assert_eq!(
        in_effect(Some(older), Some(here)),
        Some((here, ConsentSource::Store))
    );
    assert_eq!(
        in_effect(Some(same), Some(here)),
        Some((same, ConsentSource::Central))
    );
    assert_eq!(
        in_effect(None, Some(here)),
        Some((here, ConsentSource::Store))
    );
    assert_eq!(in_effect(None, None), None);
}

#[test]
fn a_consent_change_takes_effect_through_its_own_effect_and_names_no_card() {
    let fact = StoreFact::ConsentChanged(ConsentChanged {
        customer_id: "C-88".into(),
        purpose: ConsentPurpose::Marketing,
        granted: true,
        at: "2026-12-07T09:00:00.000Z".into(),
        at_ms: 1_796_634_000_000,
        client_key: Some("k".into()),
        by: "till-2".into(),
    });
    assert_eq!(fact.event_type(), "consent.changed");
    assert_eq!(
        fact.effects(),
        vec![Effect::ConsentChanged {
            customer_id: "C-88",
            purpose: ConsentPurpose::Marketing,
            granted: true,
            at_ms: 1_796_634_000_000
        }]
    );
    let payload: serde_json::Value = serde_json::from_str(&fact.payload_json().unwrap()).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({"customer_id": "C-88", "purpose": "marketing", "granted": true,
                           "at": "2026-12-07T09:00:00.000Z", "client_key": "k", "by": "till-2"})
    );
}
