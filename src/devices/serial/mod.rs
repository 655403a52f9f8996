//! Serial (RS-232, USB CDC-ACM, USB serial adapter) barcode scanners: one thread per port
//! ([`driver::spawn`]), a pure framer ([`framing::Framer`]) driven by the port's firmware profile,
//! and the port listing behind `relais devices list`.

pub mod driver;
pub mod framing;

pub use driver::{SerialCounters, SerialCountersSnapshot, spawn, spawn_with_counters};
pub use framing::{Framer, FramingCounters};

use crate::profiles::{DeviceKind, Profile, Profiles, SerialIdentity};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where udev puts stable names for serial ports (`usb-<vendor>_<product>_<serial>-if00`).
pub const BY_ID_DIR: &str = "/dev/serial/by-id";

/// One `[[devices.serial]]` entry of the agent config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialScannerConfig {
    /// Short name used in the device id (`serial:<name>`), e.g. `till-1-scanner`.
    pub name: String,
    /// Device path; prefer the /dev/serial/by-id link, which survives re-plugging into another
    /// USB socket, over /dev/ttyACM0.
    pub path: PathBuf,
    /// Profile id to use instead of matching the port (for RS-232 ports, which carry no USB id).
    #[serde(default)]
    pub profile: Option<String>,
}

/// Why no profile could be chosen for a configured serial-port device (a scanner or a UHF
/// module): the messages name the device, the profile kind it needs and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    #[error(
        "{device} {name:?}: profile {id:?} is not loaded; check its file in the \
         firmware-profiles directory (load errors are logged at start) or correct `profile`"
    )]
    UnknownProfile {
        device: &'static str,
        name: String,
        id: String,
    },
    #[error(
        "{device} {name:?}: profile {id:?} is a {kind} profile, not {want}; name a {want} \
         profile in `profile`"
    )]
    WrongKind {
        device: &'static str,
        name: String,
        id: String,
        kind: &'static str,
        want: &'static str,
    },
    #[error(
        "{device} {name:?}: no {want} profile matches {} and there is no fallback one; install \
         firmware-profiles/{fallback_file} or set `profile` in the config",
        .path.display()
    )]
    NoMatch {
        device: &'static str,
        name: String,
        path: PathBuf,
        want: &'static str,
        fallback_file: &'static str,
    },
}

/// Which serial-port device a profile is picked for, for [`pick_port_profile`].
pub struct PortDevice<'a> {
    /// How the operator calls it in messages: "serial scanner", "UHF serial reader".
    pub device: &'static str,
    pub kind: DeviceKind,
    /// The shipped profile that is this kind's fallback, named in the fix.
    pub fallback_file: &'static str,
    pub name: &'a str,
    pub path: &'a Path,
    /// The profile named in the config, if any.
    pub profile: Option<&'a str>,
}

/// The profile for a configured serial-port device: the one named in the config (it must be
/// of the device's kind), else the most specific match for the port's USB id / by-id name, else
/// the kind's fallback profile.
pub fn pick_port_profile(
    profiles: &Profiles,
    port: PortDevice<'_>,
) -> Result<Arc<Profile>, PickError> {
    if let Some(id) = port.profile {
        let p = profiles.get(id).ok_or_else(|| PickError::UnknownProfile {
            device: port.device,
            name: port.name.to_string(),
            id: id.to_string(),
        })?;
        if p.kind != port.kind {
            return Err(PickError::WrongKind {
                device: port.device,
                name: port.name.to_string(),
                id: id.to_string(),
                kind: p.kind.as_str(),
                want: port.kind.as_str(),
            });
        }
        return Ok(p);
    }
    profiles
        .match_serial_port(port.kind, &identity_of(port.path))
        .ok_or_else(|| PickError::NoMatch {
            device: port.device,
            name: port.name.to_string(),
            path: port.path.to_path_buf(),
            want: port.kind.as_str(),
            fallback_file: port.fallback_file,
        })
}

/// The profile for a configured scanner port (see [`pick_port_profile`]).
pub fn pick_profile(
    profiles: &Profiles,
    config: &SerialScannerConfig,
) -> Result<Arc<Profile>, PickError> {
    pick_port_profile(
        profiles,
        PortDevice {
            device: "serial scanner",
            kind: DeviceKind::SerialScanner,
            fallback_file: "serial-scanner-cr.toml",
            name: &config.name,
            path: &config.path,
            profile: config.profile.as_deref(),
        },
    )
}

/// A serial port as the OS lists it, for `relais devices list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SerialPortListing {
    pub path: PathBuf,
    /// `usb`, `pci`, `bluetooth` or `unknown`.
    pub port_type: &'static str,
    /// `vvvv:pppp`, lower-case hex, for USB ports.
    pub usb_vid_pid: Option<String>,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub serial_number: Option<String>,
    /// The /dev/serial/by-id link pointing at this port, if udev made one.
    pub by_id: Option<PathBuf>,
    /// `id@version` of the profile the port would get (filled by [`list_serial_ports_with`]).
    pub profile: Option<String>,
}

impl SerialPortListing {
    pub fn identity(&self) -> SerialIdentity {
        SerialIdentity {
            usb: self.usb_vid_pid.as_deref().and_then(parse_vid_pid),
            by_id: self
                .by_id
                .as_deref()
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .map(str::to_owned),
        }
    }
}

fn parse_vid_pid(s: &str) -> Option<(u16, u16)> {
    let (v, p) = s.split_once(':')?;
    Some((
        u16::from_str_radix(v, 16).ok()?,
        u16::from_str_radix(p, 16).ok()?,
    ))
}

/// Serial ports present now. Enumeration failing (no udev, no sysfs in a container) is not an
/// error for the agent: it logs and returns what it has, possibly nothing.
pub fn list_serial_ports() -> Vec<SerialPortListing> {
    let ports = match serialport::available_ports() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot enumerate serial ports");
            Vec::new()
        }
    };
    let links = by_id_links();
    ports
        .into_iter()
        .map(|info| {
            let path = PathBuf::from(&info.port_name);
            let by_id = canonical(&path).and_then(|c| {
                links
                    .iter()
                    .find(|(_, target)| *target == c)
                    .map(|(l, _)| l.clone())
            });
            let mut listing = SerialPortListing {
                path,
                port_type: "unknown",
                usb_vid_pid: None,
                manufacturer: None,
                product: None,
                serial_number: None,
                by_id,
                profile: None,
            };
            match info.port_type {
                serialport::SerialPortType::UsbPort(usb) => {
                    listing.port_type = "usb";
                    listing.usb_vid_pid = Some(format!("{:04x}:{:04x}", usb.vid, usb.pid));
                    listing.manufacturer = usb.manufacturer;
                    listing.product = usb.product;
                    listing.serial_number = usb.serial_number;
                }
                serialport::SerialPortType::PciPort => listing.port_type = "pci",
                serialport::SerialPortType::BluetoothPort => listing.port_type = "bluetooth",
                serialport::SerialPortType::Unknown => {}
            }
            listing
        })
        .collect()
}

/// [`list_serial_ports`] with the profile each port would be given.
pub fn list_serial_ports_with(profiles: &Profiles) -> Vec<SerialPortListing> {
    let mut list = list_serial_ports();
    for l in &mut list {
        l.profile = profiles
            .match_serial(&l.identity())
            .map(|p| format!("{}@{}", p.id, p.version));
    }
    list
}

/// What can be learnt about a configured path: its USB id (from the OS listing) and its by-id
/// name (the path itself when it is a by-id link, else a link pointing at the same device).
pub fn identity_of(path: &Path) -> SerialIdentity {
    let target = canonical(path);
    let in_by_id = path.parent() == Some(Path::new(BY_ID_DIR));
    let by_id = if in_by_id {
        path.file_name().and_then(|n| n.to_str()).map(str::to_owned)
    } else {
        target.as_ref().and_then(|t| {
            by_id_links()
                .into_iter()
                .find(|(_, lt)| lt == t)
                .and_then(|(l, _)| l.file_name()?.to_str().map(str::to_owned))
        })
    };
    let usb = target.and_then(|t| {
        list_serial_ports()
            .into_iter()
            .find(|l| canonical(&l.path).as_ref() == Some(&t))
            .and_then(|l| l.usb_vid_pid.as_deref().and_then(parse_vid_pid))
    });
    SerialIdentity { usb, by_id }
}

fn canonical(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// (link, canonical target) for every entry of /dev/serial/by-id; empty when there is none.
fn by_id_links() -> Vec<(PathBuf, PathBuf)> {
    let Ok(dir) = std::fs::read_dir(BY_ID_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let link = e.path();
            let target = canonical(&link)?;
            Some((link, target))
        })
        .collect()
}
