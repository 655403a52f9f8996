//! Simulated store hardware for `relais demo`: a barcode scanner and an NFC reader that exist
//! only in this process, so a newcomer sees live reads move on the status page and the outbox
//! fill without any hardware. Their device ids start with `simulated:` and their status says so;
//! they run only with `[devices.simulated]`, which `relais demo` writes and nothing else does.
//!
//! The scanner reads what a till does in a day, at random: demo products (EAN-13), scale labels
//! with a weight or a price, fresh food in GS1 DataBar Expanded (now and then past its expiry
//! date), loyalty cards (Code 128, one of the demo store's patterns) and now and then a card
//! number no pattern knows; the NFC reader sees demo customers' contactless cards come and go.
//! Every frame goes through the same consumer as real devices' frames.

use super::{DeviceEvent, DeviceId, DeviceState, EventSink, POLL_INTERVAL, SecretUid, Stop};
use crate::demo::{self, FreshLabel, Rng};
use serde::Deserialize;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `[devices.simulated]`: the demo store's sizes, so the simulated reads name real rows.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SimulatedDevicesConfig {
    /// Products and customers of the demo store (`relais demo --products/--customers`).
    pub products: u64,
    pub customers: u64,
    /// Mean time between two reads, e.g. "3s" (200 ms to 1 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
}

impl SimulatedDevicesConfig {
    pub const DEFAULT_EVERY: Duration = Duration::from_secs(3);

    /// The interval, or why `every` is refused.
    pub fn interval(&self) -> Result<Duration, String> {
        let Some(text) = &self.every else {
            return Ok(Self::DEFAULT_EVERY);
        };
        match humantime::parse_duration(text) {
            Ok(d) if (Duration::from_millis(200)..=Duration::from_secs(3600)).contains(&d) => Ok(d),
            Ok(_) => Err(format!("{text:?} is out of range; allowed 200ms..=1h")),
            Err(e) => Err(format!("{text:?} is not a duration: {e}")),
        }
    }
}

pub const SCANNER: &str = "simulated:scanner";
pub const NFC_READER: &str = "simulated:nfc-reader";

/// Start the simulated scanner and NFC reader on one thread.
pub fn spawn(
    config: SimulatedDevicesConfig,
    sink: EventSink,
    stop: Stop,
) -> std::io::Result<JoinHandle<()>> {
    let every = config
        .interval()
        .unwrap_or(SimulatedDevicesConfig::DEFAULT_EVERY);
    tracing::warn!(
        "simulated devices running ({SCANNER}, {NFC_READER}): demo reads, no hardware; \
         [devices.simulated] is for relais demo only"
    );
    std::thread::Builder::new()
        .name("simulated-devices".into())
        .spawn(move || run(&config, every, &sink, &stop))
}

fn status(device: &str, sink: &EventSink) -> bool {
    sink.send(DeviceEvent::Status {
        device: DeviceId(device.into()),
        state: DeviceState::Connected,
        detail: "SIMULATED by relais demo: no hardware".into(),
        at_ms: super::now_ms(),
    })
}

/// One frame the simulated scanner sends, as a scanner in AIM mode would.
fn frame(config: &SimulatedDevicesConfig, rng: &mut Rng, today: chrono::NaiveDate) -> String {
    let fresh = demo::fresh_counter();
    let pick = rng.below(100);
    let item = |rng: &mut Rng, label: FreshLabel| {
        let items: Vec<_> = fresh.iter().filter(|f| f.label == label).collect();
        items
            .get(rng.below(items.len() as u64) as usize)
            .copied()
            .cloned()
    };
    let ean13 = |g: crate::decode::gtin::Gtin14| {
        let s = g.to_string();
        format!("]E0{}", s.get(1..).unwrap_or(&s))
    };
    match pick {
        // A loyalty card of the demo store, as a Code 128 on a plastic card.
        0..=9 if config.customers > 0 => {
            format!(
                "]C0{}",
                demo::customer_card_number(rng.below(config.customers))
            )
        }
        // A card number no configured pattern knows: withheld, never shown or kept.
        10..=12 => format!("]C0{}", 6_037_990_000_000_000 + rng.below(1_000_000_000)),
        13..=24 => item(rng, FreshLabel::Weight)
            .and_then(|f| {
                let plu = f.gtin.as_u64() / 1_000_000 % 100_000;
                demo::scale_label_gtin(26, plu, 150 + rng.below(1_350))
            })
            .map(ean13)
            .unwrap_or_default(),
        25..=29 => item(rng, FreshLabel::Price)
            .and_then(|f| {
                let plu = f.gtin.as_u64() / 1_000_000 % 100_000;
                demo::scale_label_gtin(21, plu, 500 + rng.below(2_000))
            })
            .map(ean13)
            .unwrap_or_default(),
        30..=39 => match item(rng, FreshLabel::DataBar) {
            Some(f) => {
                let grams = 200 + rng.below(900);
                let price = (grams as i64 * f.price_per_kg_minor + 500) / 1000;
                // One label in five is past its expiry date: the till must refuse it.
                let days = if rng.below(5) == 0 { -2 } else { 3 };
                let expiry = today + chrono::Duration::days(days);
                format!(
                    "]e001{}3103{grams:06}17{}3922{price}",
                    f.gtin,
                    expiry.format("%y%m%d")
                )
            }
            None => String::new(),
        },
        _ if config.products > 0 => demo::product_gtin(rng.below(config.products))
            .map(ean13)
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn run(config: &SimulatedDevicesConfig, every: Duration, sink: &EventSink, stop: &Stop) {
    if !status(SCANNER, sink) || !status(NFC_READER, sink) {
        return;
    }
    let mut rng = Rng::new(super::now_ms().unsigned_abs());
    let mut card_on_reader = false;
    let mut next = Instant::now() + every;
    while !stop.is_stopped() {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(POLL_INTERVAL));
            continue;
        }
        // Half to one and a half times `every`: reads do not come like a clock.
        let jitter = every.as_millis() as u64 / 2 + rng.below(every.as_millis() as u64 + 1);
        next = now + Duration::from_millis(jitter);
        let at_ms = super::now_ms();
        let event = if card_on_reader {
            card_on_reader = false;
            DeviceEvent::CardRemoved {
                device: DeviceId(NFC_READER.into()),
                at_ms,
            }
        } else if config.customers > 0 && rng.below(6) == 0 {
            card_on_reader = true;
            DeviceEvent::CardPresented {
                device: DeviceId(NFC_READER.into()),
                uid: SecretUid(demo::customer_nfc_uid(rng.below(config.customers))),
                applet: None,
                atr_hex: "3B8F8001804F0CA000000306030001000000006A".into(),
                at_ms,
            }
        } else {
            let data = frame(config, &mut rng, chrono::Local::now().date_naive());
            if data.is_empty() {
                continue;
            }
            DeviceEvent::Scan {
                device: DeviceId(SCANNER.into()),
                data,
                at_ms,
            }
        };
        if !sink.send(event) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_barcode;

    #[test]
    fn every_simulated_frame_is_a_valid_gs1_code_or_a_card() {
        let config = SimulatedDevicesConfig {
            products: 50,
            customers: 20,
            every: None,
        };
        let today = chrono::NaiveDate::from_ymd_opt(2026, 5, 1).unwrap_or_default();
        let mut rng = Rng::new(7);
        for _ in 0..500 {
            let f = frame(&config, &mut rng, today);
            let is_card = f.starts_with("]C0");
            assert!(is_card || decode_barcode(&f).is_ok(), "{f:?}");
        }
    }

    #[test]
    fn the_interval_is_checked() {
        let mut c = SimulatedDevicesConfig {
            products: 1,
            customers: 1,
            every: Some("1s".into()),
        };
        assert_eq!(c.interval(), Ok(Duration::from_secs(1)));
        c.every = Some("1ms".into());
        assert!(c.interval().is_err());
    }
}
