//! Starting the configured devices: load firmware profiles, pick one per device, spawn one
//! thread per device. A device that cannot start (no profile, bad applet) is reported and
//! skipped; the agent never refuses to start because of store hardware.

use super::{EventSink, Stop};
use crate::config::DevicesConfig;
use crate::profiles::{Profile, Profiles};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// Generic profiles compiled into the binary, so a box without the profiles directory still
/// reads a CR-terminated serial scanner, a contactless reader, an LLRP reader and an M100 UHF
/// module.
const BUILT_IN: [(&str, &str); 4] = [
    (
        "serial-scanner-cr.toml",
        include_str!("../../firmware-profiles/serial-scanner-cr.toml"),
    ),
    (
        "pcsc-contactless-generic.toml",
        include_str!("../../firmware-profiles/pcsc-contactless-generic.toml"),
    ),
    (
        "llrp-generic.toml",
        include_str!("../../firmware-profiles/llrp-generic.toml"),
    ),
    (
        "magicrf-m100.toml",
        include_str!("../../firmware-profiles/magicrf-m100.toml"),
    ),
];

/// Where packages install the profiles.
pub const PACKAGED_PROFILES_DIR: &str = "/usr/share/relais/firmware-profiles";

/// Profiles from the configured directory, else the packaged one, else `./firmware-profiles`,
/// else the built-in generic ones. Returns the set, where it came from, and the files refused.
pub fn load_profiles(config: &DevicesConfig) -> (Profiles, String, Vec<String>) {
    let candidates: Vec<PathBuf> = match &config.profiles_dir {
        Some(dir) => vec![dir.clone()],
        None => vec![
            PathBuf::from(PACKAGED_PROFILES_DIR),
            PathBuf::from("firmware-profiles"),
        ],
    };
    for dir in candidates.iter().filter(|d| d.is_dir()) {
        match Profiles::load_dir(dir) {
            Ok(loaded) => {
                let errors = loaded.errors.iter().map(ToString::to_string).collect();
                return (loaded.profiles, dir.display().to_string(), errors);
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot read firmware profiles")
            }
        }
    }
    let mut list = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in BUILT_IN {
        match Profile::from_bytes(Path::new(name), text.as_bytes()) {
            Ok(p) => list.push(p),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let (profiles, dup) = Profiles::from_profiles(list);
    errors.extend(dup.iter().map(ToString::to_string));
    (profiles, "built-in generic profiles".into(), errors)
}

/// The device threads of a running agent; `shutdown` stops and joins them.
pub struct DeviceThreads {
    stop: Stop,
    threads: Vec<JoinHandle<()>>,
}

impl DeviceThreads {
    pub fn count(&self) -> usize {
        self.threads.len()
    }

    /// Ask every driver to stop and wait: each checks its stop flag at least every
    /// `POLL_INTERVAL`, so this takes well under a second.
    pub fn shutdown(self) {
        self.stop.stop();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Spawn a thread for every configured device.
pub fn start(config: &DevicesConfig, profiles: &Profiles, sink: &EventSink) -> DeviceThreads {
    let stop = Stop::new();
    let mut threads = Vec::new();
    let mut started = |what: String, result: std::io::Result<JoinHandle<()>>| match result {
        Ok(t) => {
            tracing::info!(device = %what, "device thread started");
            threads.push(t);
        }
        Err(e) => tracing::error!(device = %what, error = %e, "device not started"),
    };
    for serial in &config.serial {
        match super::serial::pick_profile(profiles, serial) {
            Ok(profile) => {
                tracing::info!(device = %serial.name, profile = %profile.label(), "serial scanner profile");
                started(
                    format!("serial:{}", serial.name),
                    super::serial::spawn(serial.clone(), profile, sink.clone(), stop.clone()),
                );
            }
            Err(e) => {
                tracing::error!(device = %serial.name, error = %e, "serial scanner not started")
            }
        }
    }
    if let Some(pcsc) = &config.pcsc {
        started(
            "pcsc".into(),
            super::pcsc::spawn(pcsc.clone(), sink.clone(), stop.clone()),
        );
    }
    for reader in &config.llrp {
        started(
            format!("llrp:{}", reader.name),
            super::rfid::spawn_with_profiles(
                reader.clone(),
                profiles.clone(),
                sink.clone(),
                stop.clone(),
            ),
        );
    }
    for module in &config.rfid_serial {
        match super::rfid::serial_reader::pick_profile(profiles, module) {
            Ok(profile) => {
                tracing::info!(device = %module.name, profile = %profile.label(), "UHF serial reader profile");
                started(
                    format!("rfid-serial:{}", module.name),
                    super::rfid::serial_reader::spawn(
                        module.clone(),
                        profile,
                        sink.clone(),
                        stop.clone(),
                    ),
                );
            }
            Err(e) => {
                tracing::error!(device = %module.name, error = %e, "UHF serial reader not started")
            }
        }
    }
    if let Some(simulated) = &config.simulated {
        started(
            "simulated".into(),
            super::simulated::spawn(simulated.clone(), sink.clone(), stop.clone()),
        );
    }
    for hid in &config.hid {
        started(
            format!("hid:{}", hid.name),
            super::hid::spawn(hid.clone(), sink.clone(), stop.clone()),
        );
    }
    DeviceThreads { stop, threads }
}
