//! "Store facts through N" (issue 15, ADR 0026): after every connect and then while connected,
//! the session tells central how far this agent's store facts go, so central can advance a
//! watermark without waiting for a birth with an empty backlog, whatever telemetry was dropped.

use super::{Session, What};
use crate::sync::wire::{CONTRACT_VERSION, FactsProgress};
use std::time::{Duration, Instant};

/// At most one report this often while facts or telemetry keep coming.
pub(super) const REPORT_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// And one this often even when nothing changed, so a consumer that started late learns it.
pub(super) const REPORT_REFRESH: Duration = Duration::from_secs(60);

/// What was last reported, and when.
#[derive(Default)]
pub(super) struct Reported {
    figures: Option<(u32, u64, u64)>,
    at: Option<Instant>,
}

impl Session<'_> {
    /// Report if the figures changed (at most every [`REPORT_MIN_INTERVAL`]) or the last report
    /// is older than [`REPORT_REFRESH`]; `force` after a connect.
    pub(super) async fn report_facts(&mut self, force: bool) -> Result<(), super::SessionEnd> {
        let stats = self.ctx.outbox.stats();
        let figures = (stats.fact_epoch, stats.last_fact_seq, stats.last_seq);
        let since = self.facts_reported.at.map(|at| at.elapsed());
        let due = force
            || match since {
                None => true,
                Some(age) if age >= REPORT_REFRESH => true,
                Some(age) => {
                    age >= REPORT_MIN_INTERVAL && self.facts_reported.figures != Some(figures)
                }
            };
        if !due {
            return Ok(());
        }
        let report = FactsProgress {
            v: CONTRACT_VERSION,
            agent: self.ctx.agent_id.clone(),
            epoch: stats.fact_epoch,
            through: stats.last_fact_seq,
            at_seq: stats.last_seq,
            at_ms: crate::storage::now_unix_ms(),
        };
        let payload = serde_json::to_vec(&report).unwrap_or_default();
        self.facts_reported = Reported {
            figures: Some(figures),
            at: Some(Instant::now()),
        };
        let topic = self.topics.facts();
        self.publish_other(topic, false, payload, What::Facts).await
    }
}
