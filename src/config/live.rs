//! Settings that a reload may change while the agent runs and that hot paths read on every
//! request: atomics, so a lookup never takes a lock to learn how stale is too stale.

use super::Config;
use crate::replica::Stream;
use crate::replica::freshness::StaleAfter;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Which configuration is in effect, for health, the status page and the birth message.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ConfigInEffect {
    /// SHA-256 of the effective config as `relais config show` prints it.
    pub hash: String,
    /// The local file it came from, or "built-in defaults".
    pub source: String,
    /// Version of the remote (central) layer in effect, if any.
    pub remote_version: Option<u64>,
}

pub struct Tunables {
    /// `replica.stale_after` per stream, in `Stream::ALL` order.
    stale_after_ms: [AtomicU64; Stream::ALL.len()],
    offline_burn_cap: AtomicI64,
    protect_reserved: AtomicBool,
    earn_per_minor_units: AtomicI64,
    in_effect: RwLock<ConfigInEffect>,
    /// `[scans]`: read once per scan or lookup (an `Arc` clone under a read lock), replaced whole
    /// by a reload.
    scan_rules: RwLock<Arc<crate::scan::ScanRules>>,
}

impl Tunables {
    pub fn new(config: &Config, in_effect: ConfigInEffect) -> Tunables {
        let t = Tunables {
            stale_after_ms: Default::default(),
            offline_burn_cap: AtomicI64::new(0),
            protect_reserved: AtomicBool::new(false),
            earn_per_minor_units: AtomicI64::new(0),
            in_effect: RwLock::new(in_effect),
            scan_rules: RwLock::new(Arc::new(config.scans.rules.clone())),
        };
        t.update(config);
        t
    }

    /// Take the reloadable values of `config`.
    pub fn update(&self, config: &Config) {
        for (slot, stream) in self.stale_after_ms.iter().zip(Stream::ALL) {
            let limit = config.replica.stale_after.get(stream);
            let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
            slot.store(ms, Ordering::Relaxed);
        }
        self.offline_burn_cap
            .store(config.loyalty.offline_burn_cap, Ordering::Relaxed);
        self.protect_reserved
            .store(config.pickups.protect_reserved, Ordering::Relaxed);
        self.earn_per_minor_units
            .store(config.loyalty.earn_per_minor_units, Ordering::Relaxed);
        if let Ok(mut rules) = self.scan_rules.write() {
            *rules = Arc::new(config.scans.rules.clone());
        }
    }

    /// The store's rules for reading scans in effect.
    pub fn scan_rules(&self) -> Arc<crate::scan::ScanRules> {
        self.scan_rules
            .read()
            .map(|r| Arc::clone(&r))
            .unwrap_or_default()
    }

    pub fn stale_after(&self) -> StaleAfter {
        let mut limits = StaleAfter::DEFAULT;
        for (slot, stream) in self.stale_after_ms.iter().zip(Stream::ALL) {
            limits.set(stream, Duration::from_millis(slot.load(Ordering::Relaxed)));
        }
        limits
    }

    pub fn offline_burn_cap(&self) -> i64 {
        self.offline_burn_cap.load(Ordering::Relaxed)
    }

    /// `[pickups] protect_reserved`.
    pub fn protect_reserved(&self) -> bool {
        self.protect_reserved.load(Ordering::Relaxed)
    }

    /// `[loyalty] earn_per_minor_units`.
    pub fn earn_per_minor_units(&self) -> i64 {
        self.earn_per_minor_units.load(Ordering::Relaxed)
    }

    pub fn in_effect(&self) -> ConfigInEffect {
        self.in_effect.read().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn set_in_effect(&self, in_effect: ConfigInEffect) {
        if let Ok(mut c) = self.in_effect.write() {
            *c = in_effect;
        }
    }
}
