//! The payloads of the events the read consumer (`reads.rs`) records: one type per event type,
//! serialised once when the read is recorded, so that docs/schemas/events/ is generated from
//! what the agent really sends (ADR 0027). Never a raw card identifier (invariant 8).

use crate::decode::gtin::Gtin14;
use crate::devices::{DeviceId, DeviceState};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a loyalty card was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CardVia {
    /// Tapped on an NFC reader (PC/SC).
    Nfc,
    /// Read by a barcode scanner and recognised by a `[scans]` card pattern.
    Scanner,
}

impl CardVia {
    pub fn name(self) -> &'static str {
        match self {
            CardVia::Nfc => "nfc",
            CardVia::Scanner => "scanner",
        }
    }
}

/// `device.card` (telemetry): a loyalty card was read. Names the customer by central's id only,
/// never the card number or UID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CardRead {
    pub device: DeviceId,
    /// Whether the replica knows the card.
    pub known: bool,
    /// Central's id of the card's customer; null when the card is unknown.
    pub customer_id: Option<String>,
    pub via: CardVia,
}

/// `device.scan` (telemetry): a barcode was read, or one that looked like a card number was
/// withheld.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ScanRead {
    Read(ScannedCode),
    Withheld(WithheldScan),
}

/// A scan recorded as it was read (a product code is no one's secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScannedCode {
    pub device: DeviceId,
    /// The frame as the scanner sent it (AIM symbology identifier included).
    pub data: String,
    pub gtin: Option<Gtin14>,
    /// Whether the code decoded without error.
    pub valid: bool,
    /// Whether the replica knows the product.
    pub found: bool,
    pub sku: Option<String>,
}

/// Why a scan's data was withheld.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Withheld {
    /// Matched no card pattern and no product, but looks like a card number (docs/api.md,
    /// "Loyalty cards read by a scanner").
    PossibleCardNumber,
}

/// A scan that looked like a card number: nothing of its data is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WithheldScan {
    pub device: DeviceId,
    /// Always null: the data is withheld.
    pub data: (),
    pub withheld: Withheld,
    pub valid: bool,
    /// Always false: a known product is never withheld.
    #[schemars(extend("const" = false))]
    pub found: bool,
}

/// `device.status` (telemetry): a device connected, went away or misbehaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceStatusChanged {
    pub device: DeviceId,
    pub state: DeviceState,
    /// What happened, for a person (the driver's reason).
    pub detail: String,
}

/// `rfid.arrived` (store fact class): a tag entered an antenna's field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TagArrived {
    pub device: DeviceId,
    /// The EPC as read, in hex.
    pub epc: String,
    pub antenna: u16,
    pub rssi_dbm: Option<i16>,
    /// The EPC's TDS coding scheme (`sgtin-96` …), when it decoded.
    pub scheme: Option<String>,
    pub pure_identity_uri: Option<String>,
    /// The item's GTIN, for an SGTIN.
    pub gtin: Option<Gtin14>,
}

/// `rfid.departed` (store fact class): a tag was not read on that antenna for the whole
/// debounce window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TagDeparted {
    pub device: DeviceId,
    pub epc: String,
    pub antenna: u16,
    /// Reads of the tag while it was present.
    pub reads: u64,
    pub gtin: Option<Gtin14>,
}
