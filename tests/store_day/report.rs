//! Every mismatch between the oracle and the agent, kept with what is needed to replay it
//! (seed, round, till, request), grouped by kind for the summary; and the day's counters.

use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Mismatches kept in full per kind (the rest are only counted).
const KEPT: usize = 25;

pub struct Mismatch {
    pub seed: u64,
    pub scenario: &'static str,
    pub round: usize,
    pub request: String,
    pub expected: String,
    pub got: String,
}

#[derive(Default)]
pub struct Stats {
    pub seeds: Vec<u64>,
    pub days: usize,
    pub rounds: usize,
    pub operations: usize,
    /// POSTs sent: first attempts, retries, resends after restarts, replay checks.
    pub requests: usize,
    /// GETs of the oracle's state checks.
    pub lookups: usize,
    pub timeouts_fired: usize,
    pub contention_rounds: usize,
    pub faults_injected: usize,
    /// Requests without an answer when the agent was killed, resent after the restart…
    pub in_flight_at_kill: usize,
    /// …of which the agent had already recorded (the resend was replayed).
    pub in_flight_applied: usize,
    pub replays_after_restart: usize,
    pub facts_recorded: usize,
    /// Facts recorded with two or more stock movements.
    pub multi_movement_facts: usize,
    pub seconds: f64,
}

#[derive(Default)]
pub struct Report {
    pub mismatches: Vec<Mismatch>,
    pub total: usize,
    /// Kind of mismatch → (count, one example of what the agent answered).
    pub groups: BTreeMap<String, (usize, String)>,
    /// Agent logs and other context worth showing with a failure.
    pub notes: Vec<String>,
    pub stats: Stats,
}

impl Report {
    pub fn add(&mut self, group: String, mismatch: Mismatch) {
        self.total += 1;
        let entry = self
            .groups
            .entry(group)
            .or_insert_with(|| (0, mismatch.got.clone()));
        entry.0 += 1;
        if entry.0 <= KEPT {
            self.mismatches.push(mismatch);
        }
    }

    pub fn note(&mut self, note: String) {
        if self.notes.len() < 6 {
            self.notes.push(note);
        }
    }

    /// One machine-readable line: `{name} {json}`.
    pub fn summary_line(&self, name: &str, scenario: &str) -> String {
        let s = &self.stats;
        // A test names its few seeds (to replay one); a soak counts them.
        let seeds = if name.ends_with("soak") {
            json!(s.seeds.len())
        } else {
            json!(s.seeds)
        };
        let body = json!({
            "scenario": scenario,
            "seeds": seeds,
            "first_seed": s.seeds.first(),
            "last_seed": s.seeds.last(),
            "days": s.days,
            "rounds": s.rounds,
            "operations": s.operations,
            "requests": s.requests,
            "lookups": s.lookups,
            "facts_recorded": s.facts_recorded,
            "multi_movement_facts": s.multi_movement_facts,
            "timeouts_fired": s.timeouts_fired,
            "contention_rounds": s.contention_rounds,
            "faults_injected": s.faults_injected,
            "in_flight_at_kill": s.in_flight_at_kill,
            "in_flight_applied": s.in_flight_applied,
            "replays_after_restart": s.replays_after_restart,
            "mismatches": self.total,
            "seconds": (s.seconds * 10.0).round() / 10.0,
        });
        format!("{name} {body}")
    }

    /// The failure message: the groups, then the first mismatches in full.
    pub fn failure(&self, first: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "the agent disagreed with the oracle {} times; by kind:",
            self.total
        );
        let mut groups: Vec<_> = self.groups.iter().collect();
        groups.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        for (group, (count, example)) in groups {
            let mut example = example.clone();
            if example.len() > 300 {
                example.truncate(300);
                example.push('…');
            }
            let _ = writeln!(out, "  {count:>6} × {group}\n           e.g. {example}");
        }
        let _ = writeln!(
            out,
            "first {} mismatches:",
            first.min(self.mismatches.len())
        );
        for (n, m) in self.mismatches.iter().take(first).enumerate() {
            let _ = writeln!(
                out,
                "#{n} seed {} ({}), round {}:\n   request:  {}\n   expected: {}\n   got:      {}",
                m.seed, m.scenario, m.round, m.request, m.expected, m.got
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "{note}");
        }
        let _ = writeln!(
            out,
            "replay one seed with RELAIS_STORE_DAY_SEEDS=<seed>, (a trailing comma: that seed only)"
        );
        out
    }
}
