//! `[devices]`: which store hardware this agent owns. Each driver's settings are parsed by the
//! driver's own serde type (unknown keys refused there too); the section is kept as written so
//! `config show` prints it back verbatim.

use crate::devices::hid::HidScannerConfig;
use crate::devices::pcsc::PcscConfig;
use crate::devices::rfid::{LlrpReaderConfig, RfidSerialConfig};
use crate::devices::serial::SerialScannerConfig;
use crate::devices::simulated::SimulatedDevicesConfig;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevices {
    #[serde(default)]
    profiles_dir: Option<PathBuf>,
    #[serde(default)]
    record_scans: Option<bool>,
    #[serde(default)]
    serial: Vec<SerialScannerConfig>,
    #[serde(default)]
    pcsc: Option<PcscConfig>,
    #[serde(default)]
    llrp: Vec<LlrpReaderConfig>,
    #[serde(default)]
    hid: Vec<HidScannerConfig>,
    #[serde(default)]
    rfid_serial: Vec<RfidSerialConfig>,
    #[serde(default)]
    simulated: Option<SimulatedDevicesConfig>,
}

#[derive(Debug, Clone, Default)]
pub struct DevicesConfig {
    /// Firmware profiles directory; `None` = the packaged one, else `./firmware-profiles`, else
    /// the generic profiles built into the binary.
    pub profiles_dir: Option<PathBuf>,
    /// Record every scan and card read in the outbox as telemetry (RFID arrivals and departures
    /// are store facts and always recorded).
    pub record_scans: bool,
    pub serial: Vec<SerialScannerConfig>,
    pub pcsc: Option<PcscConfig>,
    pub llrp: Vec<LlrpReaderConfig>,
    pub hid: Vec<HidScannerConfig>,
    /// UHF RFID modules on serial ports (M100 protocol).
    pub rfid_serial: Vec<RfidSerialConfig>,
    /// A simulated scanner and NFC reader: `relais demo` only, never on store hardware.
    pub simulated: Option<SimulatedDevicesConfig>,
    /// The section as written, for `config show` and equality.
    source: toml::Table,
}

impl PartialEq for DevicesConfig {
    fn eq(&self, other: &DevicesConfig) -> bool {
        self.source == other.source
    }
}

// Equality is over the written TOML, which has no NaN in practice (no float keys here).
impl Eq for DevicesConfig {}

impl DevicesConfig {
    pub fn defaults() -> DevicesConfig {
        DevicesConfig {
            record_scans: true,
            ..DevicesConfig::default()
        }
    }

    /// Parse the `[devices]` table; the error is `(dotted key, message)`.
    pub(crate) fn from_table(table: toml::Table) -> Result<DevicesConfig, (String, String)> {
        let value = toml::Value::Table(table.clone());
        let raw: RawDevices = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." || path.is_empty() {
                "devices".to_string()
            } else {
                format!("devices.{path}")
            };
            // toml appends "in `table`" on a second line: the dotted key already says it.
            let inner = e.into_inner().to_string();
            let message = inner.lines().next().unwrap_or_default().to_string();
            (key, message)
        })?;
        if let Some(Err(why)) = raw.simulated.as_ref().map(SimulatedDevicesConfig::interval) {
            return Err(("devices.simulated.every".into(), why));
        }
        Ok(DevicesConfig {
            simulated: raw.simulated,
            profiles_dir: raw.profiles_dir,
            record_scans: raw.record_scans.unwrap_or(true),
            serial: raw.serial,
            pcsc: raw.pcsc,
            llrp: raw.llrp,
            hid: raw.hid,
            rfid_serial: raw.rfid_serial,
            source: table,
        })
    }

    /// The same devices with `[devices.simulated]` set, as `relais demo` runs them.
    pub fn with_simulated(
        &self,
        simulated: &SimulatedDevicesConfig,
    ) -> Result<DevicesConfig, (String, String)> {
        let mut table = self.source.clone();
        let value = toml::Value::try_from(simulated)
            .map_err(|e| ("devices.simulated".to_string(), e.to_string()))?;
        table.insert("simulated".into(), value);
        DevicesConfig::from_table(table)
    }

    pub(crate) fn to_toml(&self) -> String {
        if self.source.is_empty() {
            return "\n[devices]\n# none configured: add [[devices.serial]], [devices.pcsc], [[devices.llrp]], [[devices.hid]], [[devices.rfid_serial]]\n".into();
        }
        let mut wrapper = toml::Table::new();
        wrapper.insert("devices".into(), toml::Value::Table(self.source.clone()));
        format!("\n{}", toml::to_string(&wrapper).unwrap_or_default())
    }

    pub fn is_empty(&self) -> bool {
        self.serial.is_empty()
            && self.pcsc.is_none()
            && self.llrp.is_empty()
            && self.hid.is_empty()
            && self.rfid_serial.is_empty()
            && self.simulated.is_none()
    }
}
