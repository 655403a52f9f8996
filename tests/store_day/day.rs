//! One store day: the real `relais run`, the tills posting a round at a time, the oracle
//! judging every answer and then the stock and balances the round touched; in the fault
//! scenario the agent is SIGKILLed at seeded moments and restarted on the same data dir.

use crate::client::{Client, Outcome};
use crate::common::Agent;
use crate::generator::{Expect, Generator, Knobs, Op, reformatted};
use crate::model::{Effect, Model, Recorded, Scope};
use crate::report::{Mismatch, Report};
use crate::shop::{self, Shop};
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Where an operation stands while its attempts are judged.
struct Track {
    /// What the next answer must be.
    expect: Expect,
    /// An attempt before this one got no answer: it may have been recorded.
    unknown: bool,
    /// The agent said it recorded the fact (201, or the replay of an attempt that got no
    /// answer).
    applied: bool,
    /// The first 2xx answer.
    first: Option<Value>,
    answered: bool,
}

/// The subset check: every member of `expected` is in `got` with the same value; a `null`
/// expected member may also be absent. Arrays must have the same length. `None` = it holds.
fn differs(expected: &Value, got: &Value, at: &str) -> Option<String> {
    match expected {
        Value::Object(members) => {
            let Some(got) = got.as_object() else {
                return Some(format!("{at}: expected an object, got {got}"));
            };
            members.iter().find_map(|(k, v)| {
                let path = format!("{at}.{k}");
                match got.get(k) {
                    None if v.is_null() => None,
                    None => Some(format!("{path}: missing (expected {v})")),
                    Some(g) => differs(v, g, &path),
                }
            })
        }
        Value::Array(items) => {
            let Some(got) = got.as_array() else {
                return Some(format!("{at}: expected an array, got {got}"));
            };
            if got.len() != items.len() {
                return Some(format!(
                    "{at}: {} elements, expected {}",
                    got.len(),
                    items.len()
                ));
            }
            items
                .iter()
                .zip(got)
                .enumerate()
                .find_map(|(i, (e, g))| differs(e, g, &format!("{at}[{i}]")))
        }
        other if other == got => None,
        other => Some(format!("{at}: {got}, expected {other}")),
    }
}

fn without_replayed(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("replayed");
    }
    body
}

/// `None` when the answer is what `expect` says (races are judged per round, not here).
fn check(expect: &Expect, status: u16, body: &Value, after_unknown: bool) -> Option<String> {
    match expect {
        Expect::Created(fields) => {
            let replay_ok = after_unknown && status == 200 && body["replayed"] == true;
            if status != 201 && !replay_ok {
                return Some(format!("status {status}"));
            }
            if status == 201 && body["replayed"] != false {
                return Some("replayed is not false".to_owned());
            }
            if body["durable"] != true || body["seq"].as_u64().is_none() || !body["id"].is_string()
            {
                return Some("no durable/seq/id".to_owned());
            }
            differs(fields, body, "answer")
        }
        Expect::Replay(first) => {
            if status != 200 || body["replayed"] != true {
                return Some(format!("status {status}, replayed {}", body["replayed"]));
            }
            (without_replayed(first) != without_replayed(body))
                .then(|| "not the first answer".to_owned())
        }
        Expect::Error {
            status: want,
            code,
            field,
            details,
        } => {
            if status != *want || body["error"]["code"] != code.as_str() {
                return Some(format!("status {status}"));
            }
            if let Some(field) = field
                && body["error"]["field"] != field.as_str()
            {
                return Some(format!("error.field {}", body["error"]["field"]));
            }
            if details.as_object().is_some_and(|d| d.is_empty()) {
                return None;
            }
            differs(details, &body["error"]["details"], "error.details")
        }
        Expect::LoyaltyRace { .. } | Expect::CollectRace { .. } | Expect::CountRace { .. } => {
            Some("race".to_owned())
        }
    }
}

fn describe_expect(expect: &Expect, after_unknown: bool) -> String {
    match expect {
        Expect::Created(fields) if after_unknown => {
            format!("201, or 200 replayed (the attempt without answer was recorded), ⊇ {fields}")
        }
        Expect::Created(fields) => format!("201 ⊇ {fields}"),
        Expect::Replay(first) => format!("200 replayed:true, exactly the first answer {first}"),
        Expect::Error {
            status,
            code,
            field,
            details,
        } => format!(
            "{status} {code}{}{}",
            field
                .as_ref()
                .map(|f| format!(" field {f}"))
                .unwrap_or_default(),
            if details.as_object().is_some_and(|d| !d.is_empty()) {
                format!(" details ⊇ {details}")
            } else {
                String::new()
            }
        ),
        Expect::LoyaltyRace {
            successes, refusal, ..
        } => format!(
            "exactly {successes} × 201, each allowed and with its balance_after in seq order{}",
            refusal
                .as_ref()
                .map(|r| format!(", the others {}", describe_expect(r, false)))
                .unwrap_or_default()
        ),
        Expect::CountRace { .. } => {
            "201, expected = on-hand before + the round's facts with a smaller seq".to_owned()
        }
        Expect::CollectRace { answer, refused } => {
            format!("exactly one 201 ⊇ {answer}, the others 409 {refused}")
        }
    }
}

fn expected_status(expect: &Expect) -> String {
    match expect {
        Expect::Created(_) => "201".to_owned(),
        Expect::Replay(_) => "200 replay".to_owned(),
        Expect::Error { status, code, .. } => format!("{status} {code}"),
        Expect::LoyaltyRace { .. } | Expect::CollectRace { .. } | Expect::CountRace { .. } => {
            "race".to_owned()
        }
    }
}

fn got_status(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Answered { status, body } => {
            let code = body["error"]["code"].as_str().unwrap_or_default();
            let mut s = format!("{status}");
            if body["replayed"] == true {
                s.push_str(" replay");
            }
            if !code.is_empty() {
                s.push(' ');
                s.push_str(code);
            }
            s
        }
        Outcome::TimedOut => "timeout".to_owned(),
        Outcome::Lost(_) => "no answer".to_owned(),
    }
}

fn movements(n: usize) -> &'static str {
    match n {
        0 => "no stock movement",
        1 => "1 stock movement",
        _ => "≥2 stock movements",
    }
}

pub struct Day<'a> {
    seed: u64,
    scenario: &'static str,
    shop: &'a Shop,
    knobs: &'a Knobs,
    store: crate::common::Store,
    agent: Option<Agent>,
    base: String,
    tills: Vec<Client>,
    auditor: Client,
    model: Model,
    round: usize,
    /// Correction of the expected outbox depth after a mismatch (reported once).
    depth_fix: i64,
    /// How long a round's requests usually take (a moving average).
    round_time: Duration,
    report: &'a mut Report,
}

impl<'a> Day<'a> {
    fn mismatch(&mut self, group: String, request: String, expected: String, got: String) {
        self.report.add(
            group,
            Mismatch {
                seed: self.seed,
                scenario: self.scenario,
                round: self.round,
                request,
                expected,
                got,
            },
        );
    }

    fn op_mismatch(&mut self, op: &Op, expect: &Expect, after_unknown: bool, outcome: &Outcome) {
        let group = format!(
            "{} ({}): expected {}, got {}",
            op.label,
            movements(op.effect.movements()),
            expected_status(expect),
            got_status(outcome)
        );
        let request = op.describe(&self.shop.tills);
        let why = match outcome {
            Outcome::Answered { status, body } => check(expect, *status, body, after_unknown)
                .map(|w| format!(" [{w}]"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        self.mismatch(
            group,
            request,
            describe_expect(expect, after_unknown),
            format!("{}{why}", outcome.describe()),
        );
    }

    /// Judge one attempt of `op`; `deliberate`: the client gave up on purpose.
    fn feed(
        &mut self,
        op: &Op,
        track: &mut Track,
        outcome: &Outcome,
        deliberate: bool,
        killed: bool,
    ) {
        self.report.stats.requests += 1;
        let (status, body) = match outcome {
            Outcome::Answered { status, body } => (*status, body),
            Outcome::TimedOut if deliberate => {
                self.report.stats.timeouts_fired += 1;
                track.unknown = true;
                track.answered = false;
                return;
            }
            _ => {
                if !killed {
                    self.op_mismatch(op, &track.expect.clone(), track.unknown, outcome);
                }
                track.unknown = true;
                track.answered = false;
                return;
            }
        };
        track.answered = true;
        let expect = track.expect.clone();
        let mut wrong = check(&expect, status, body, track.unknown).is_some();
        if wrong {
            self.op_mismatch(op, &expect, track.unknown, outcome);
        } else if status == 201
            && op.path == "/v1/cycle-counts"
            && body["as_of_seq"].as_u64() != body["seq"].as_u64().and_then(|s| s.checked_sub(1))
        {
            // A count's `expected` includes every fact up to the one before it.
            wrong = true;
            self.mismatch(
                "a count's as_of_seq is not its seq − 1".to_owned(),
                op.describe(&self.shop.tills),
                "as_of_seq = seq − 1".to_owned(),
                outcome.describe(),
            );
        }
        // Follow what the agent says happened, so that one divergence is reported once: a
        // replay after an attempt without answer is this fact only if it answers as this fact
        // would (else it is somebody else's first answer).
        let new_fact = status == 201
            || (status == 200
                && body["replayed"] == true
                && track.unknown
                && !wrong
                && matches!(expect, Expect::Created(_)));
        if new_fact && !track.applied {
            track.applied = true;
            self.note_fact(op, body);
        }
        if (200..300).contains(&status) {
            if track.first.is_none() {
                track.first = Some(body.clone());
            }
            track.expect = Expect::Replay(body.clone());
        }
        // "Nothing was recorded" speaks for this attempt only: one that got no answer may
        // still be on its way to the writer, so the outcome stays unknown.
        if status != 503 {
            track.unknown = false;
        }
    }

    /// A new fact: its seq and id were never seen before.
    fn note_fact(&mut self, op: &Op, body: &Value) {
        self.report.stats.facts_recorded += 1;
        if op.effect.movements() >= 2 {
            self.report.stats.multi_movement_facts += 1;
        }
        let seq = body["seq"].as_u64().unwrap_or(0);
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        if !self.model.seqs.insert(seq) || !self.model.ids.insert(id) {
            self.mismatch(
                "a new fact's seq or id repeats an earlier fact's".to_owned(),
                op.describe(&self.shop.tills),
                "a seq and an id never answered before".to_owned(),
                body.to_string(),
            );
        }
    }

    /// Record what the agent confirmed of `op`.
    fn settle(&mut self, op: &Op, track: &Track) {
        if track.applied {
            let seq = track.first.as_ref().and_then(|a| a["seq"].as_u64());
            self.model.apply(&op.effect, seq);
            if let (Some(scope), Some(first)) = (&op.scope, &track.first) {
                self.model.record(
                    scope.clone(),
                    Recorded {
                        path: op.path.clone(),
                        body: op.body.clone(),
                        answer: first.clone(),
                        effect: op.effect.clone(),
                    },
                    false,
                );
            }
        } else if track.answered
            && track.first.is_none()
            && let Some(scope) = &op.scope
            && !self.model.keys.contains_key(scope)
        {
            self.model.unused_keys.push(scope.clone());
        }
    }

    /// Send the round's operations at once, one thread per till; `kill`: SIGKILL the agent
    /// this long after they start.
    fn execute(&self, ops: &[Op], kill: Option<Duration>) -> Vec<Vec<Outcome>> {
        let barrier = Barrier::new(ops.len() + usize::from(kill.is_some()));
        let base = self.base.as_str();
        let pid = self.agent.as_ref().map(Agent::pid);
        std::thread::scope(|s| {
            let handles: Vec<_> = ops
                .iter()
                .map(|op| {
                    let client = &self.tills[op.till];
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let mut outcomes = Vec::with_capacity(2);
                        if let Some(t) = op.first_timeout {
                            outcomes.push(client.post(base, op, Some(t)));
                        }
                        outcomes.push(client.post(base, op, None));
                        outcomes
                    })
                })
                .collect();
            if let (Some(delay), Some(pid)) = (kill, pid) {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    std::thread::sleep(delay);
                    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                });
            }
            handles
                .into_iter()
                .map(|h| h.join().expect("till thread"))
                .collect()
        })
    }

    fn restart(&mut self) -> bool {
        drop(self.agent.take());
        match Agent::try_start(&self.store.config) {
            Ok(agent) => {
                self.base = agent.base.clone();
                self.agent = Some(agent);
                true
            }
            Err(why) => {
                self.mismatch(
                    "the agent did not start again after SIGKILL".to_owned(),
                    format!("relais run on {}", self.store.data_dir.display()),
                    "it starts and answers".to_owned(),
                    why,
                );
                false
            }
        }
    }

    /// Run one round; false when the day cannot go on.
    fn play_round(&mut self, planner: &mut Generator<'_>, faults: bool) -> bool {
        // The kill lands anywhere from the round's start to a little after its usual end (a
        // debug agent answers a round in tens of ms, a release one in a few), or now and then
        // later, once the writer idles: while it files keys and movements, or checkpoints.
        let kill = (faults && self.round > 0 && planner.rng().random_bool(0.15)).then(|| {
            let rng = planner.rng();
            let factor = if rng.random_bool(0.8) {
                rng.random_range(0.0..1.3)
            } else {
                rng.random_range(1.3..8.0)
            };
            self.round_time.mul_f64(factor)
        });
        let ops = planner.round(&self.model, kill.is_none() && self.round >= 2);
        self.report.stats.rounds += 1;
        self.report.stats.operations += ops.len();
        let racing = ops.iter().any(|op| op.expect.is_race());
        if racing {
            self.report.stats.contention_rounds += 1;
        }
        let started = Instant::now();
        let outcomes = self.execute(&ops, kill);
        if kill.is_none() {
            self.round_time = (self.round_time * 7 + started.elapsed()) / 8;
        }
        let killed = kill.is_some();
        if std::env::var_os("RELAIS_STORE_DAY_TRACE").is_some() {
            for (op, outcomes) in ops.iter().zip(&outcomes) {
                let answers: Vec<String> = outcomes.iter().map(Outcome::describe).collect();
                eprintln!(
                    "store_day trace: seed {} round {}: {} -> {} (effect if recorded: {:?})",
                    self.seed,
                    self.round,
                    op.describe(&self.shop.tills),
                    answers.join(" | then | "),
                    op.effect
                );
            }
        }
        let mut tracks = Vec::with_capacity(ops.len());
        let mut race = Vec::new();
        let mut count_race = None;
        for (op, outcomes) in ops.iter().zip(&outcomes) {
            if let Expect::CountRace { before } = &op.expect {
                let outcome = outcomes.last().cloned().unwrap_or(Outcome::TimedOut);
                count_race = Some((op, outcome, before));
                continue;
            }
            if op.expect.is_race() {
                race.push((op, outcomes.last().cloned().unwrap_or(Outcome::TimedOut)));
                continue;
            }
            let mut track = Track {
                expect: op.expect.clone(),
                unknown: false,
                applied: false,
                first: None,
                answered: false,
            };
            for (n, outcome) in outcomes.iter().enumerate() {
                let deliberate = op.first_timeout.is_some() && n == 0;
                self.feed(op, &mut track, outcome, deliberate, killed);
            }
            tracks.push((op, track));
        }
        if !race.is_empty() {
            self.judge_race(&race);
        }
        let mut alive = true;
        if killed {
            self.report.stats.faults_injected += 1;
            let before: BTreeSet<usize> = (0..self.model.recorded.len()).collect();
            for (op, track) in &tracks {
                if track.answered && !track.unknown {
                    self.settle(op, track);
                }
            }
            alive = self.restart();
            if alive {
                // Requests without an answer: the same key again tells whether they applied.
                for (op, track) in tracks.iter_mut().filter(|(_, t)| !t.answered || t.unknown) {
                    self.report.stats.in_flight_at_kill += 1;
                    let outcome = self.tills[op.till].post(&self.base, op, None);
                    let was_unknown = track.unknown;
                    self.feed(op, track, &outcome, false, false);
                    if was_unknown
                        && matches!(&outcome, Outcome::Answered { status: 200, body } if body["replayed"] == true)
                    {
                        self.report.stats.in_flight_applied += 1;
                    }
                    self.settle(op, track);
                }
                let fresh: Vec<usize> = (0..self.model.recorded.len())
                    .filter(|i| !before.contains(i))
                    .collect();
                self.replay_sample(planner, &fresh);
                self.sweep();
            }
        } else {
            // A till retries a 503 that followed an attempt without answer: the answer to the
            // same key then says whether that attempt was recorded after all.
            for (op, track) in tracks.iter_mut() {
                if track.answered && track.unknown {
                    std::thread::sleep(Duration::from_millis(20));
                    let outcome = self.tills[op.till].post(&self.base, op, None);
                    self.feed(op, track, &outcome, false, false);
                }
            }
            for (op, track) in &tracks {
                if !track.answered {
                    // Already reported by `feed`; nothing is known of it.
                    continue;
                }
                self.settle(op, track);
            }
            if let Some((op, outcome, before)) = count_race {
                let facts: Vec<(u64, &Effect)> = tracks
                    .iter()
                    .filter(|(_, t)| t.applied)
                    .filter_map(|(op, t)| Some((t.first.as_ref()?["seq"].as_u64()?, &op.effect)))
                    .collect();
                self.judge_count_race(op, &outcome, before, &facts);
            }
            if tracks.iter().any(|(_, t)| !t.answered) && !self.agent_alive() {
                return false;
            }
        }
        if alive {
            let mut products = BTreeSet::new();
            let mut customers = BTreeSet::new();
            let mut consenting = BTreeSet::new();
            for op in &ops {
                products.extend(op.effect.stock.iter().map(|(p, _)| *p));
                customers.extend(op.effect.points.iter().map(|(c, _)| *c));
                consenting.extend(op.effect.consent.iter().map(|(c, _, _)| *c));
                customers.extend(op.effect.reversed.iter().map(|(c, _)| *c));
            }
            self.check_stock(&products.into_iter().collect::<Vec<_>>());
            self.check_balances(&customers.into_iter().collect::<Vec<_>>());
            self.check_consent(&consenting.into_iter().collect::<Vec<_>>());
            self.check_outbox();
        }
        alive
    }

    /// Every fact the agent confirmed is one store fact in the outbox, none lost, none twice
    /// (no broker: nothing is delivered, so the depth counts them all).
    fn check_outbox(&mut self) {
        self.report.stats.lookups += 1;
        let outcome = self.auditor.get(&self.base, "/v1/health");
        let got = match &outcome {
            Outcome::Answered { status: 200, body } => {
                body["outbox"]["store_fact"]["depth"].as_u64()
            }
            _ => None,
        };
        let want = self.model.seqs.len() as i64 + self.depth_fix;
        if got.map(|d| d as i64) != Some(want) {
            self.mismatch(
                "store facts in the outbox differ from the facts the agent confirmed".to_owned(),
                "GET /v1/health (outbox.store_fact.depth)".to_owned(),
                format!("depth {want}"),
                match got {
                    Some(d) => format!("depth {d}"),
                    None => outcome.describe(),
                },
            );
            if let Some(d) = got {
                self.depth_fix += d as i64 - want;
            }
        }
    }

    fn agent_alive(&mut self) -> bool {
        if let Outcome::Answered { status: 200, .. } =
            self.auditor.get(&self.base, "/v1/health/live")
        {
            return true;
        }
        let log = self.agent.as_ref().map(Agent::log_text).unwrap_or_default();
        self.mismatch(
            "the agent stopped answering".to_owned(),
            "GET /v1/health/live".to_owned(),
            "200".to_owned(),
            format!("no answer; agent log:\n{log}"),
        );
        false
    }

    /// A race: how many won is order-independent; the answers' seqs give the order the
    /// writer took them in, and in that order each winner must have been allowed.
    fn judge_race(&mut self, race: &[(&Op, Outcome)]) {
        let Some((first_op, _)) = race.first() else {
            return;
        };
        let expect = first_op.expect.clone();
        let successes = match &expect {
            Expect::LoyaltyRace { successes, .. } => *successes,
            Expect::CollectRace { .. } => 1,
            _ => return,
        };
        let mut wrong = Vec::new();
        let mut won: Vec<(&Op, Value)> = Vec::new();
        for (op, outcome) in race {
            self.report.stats.requests += 1;
            let till = &self.shop.tills[op.till].name;
            match outcome {
                Outcome::Answered { status: 201, body } => {
                    self.note_fact(op, body);
                    let seq = body["seq"].as_u64();
                    self.model.apply(&op.effect, seq);
                    if let Some(scope) = &op.scope {
                        let recorded = Recorded {
                            path: op.path.clone(),
                            body: op.body.clone(),
                            answer: body.clone(),
                            effect: op.effect.clone(),
                        };
                        self.model.record(scope.clone(), recorded, true);
                    }
                    won.push((op, body.clone()));
                }
                Outcome::Answered { status, body } => {
                    let refusal = match &expect {
                        Expect::LoyaltyRace { refusal, .. } => refusal.as_deref().cloned(),
                        Expect::CollectRace { refused, .. } => Some(Expect::Error {
                            status: 409,
                            code: refused.clone(),
                            field: None,
                            details: json!({}),
                        }),
                        _ => None,
                    };
                    match refusal {
                        Some(r) if check(&r, *status, body, false).is_none() => {}
                        Some(r) => wrong.push(format!(
                            "{till} was refused, but not with {}",
                            describe_expect(&r, false)
                        )),
                        None => wrong.push(format!("{till} was refused: nothing had to be")),
                    }
                }
                _ => wrong.push(format!("{till} got no answer")),
            }
        }
        won.sort_by_key(|(_, body)| body["seq"].as_u64());
        match &expect {
            Expect::LoyaltyRace {
                customer,
                balance,
                burned,
                cap,
                ..
            } => {
                let (mut balance, mut burned) = (*balance, *burned);
                for (op, body) in &won {
                    let till = &self.shop.tills[op.till].name;
                    let points = op.effect.points.map_or(0, |(_, p)| p);
                    if points < 0 && (balance < -points || burned - points > *cap) {
                        wrong.push(format!(
                            "{till}'s burn of {} (seq {}) was allowed with a balance of {balance} and {burned} of {cap} burned",
                            -points, body["seq"]
                        ));
                    }
                    balance += points;
                    burned += (-points).max(0);
                    let answer = json!({"customer_id": self.shop.customers[*customer].id,
                                        "points": points, "balance_after": balance});
                    if let Some(why) = check(&Expect::Created(answer), 201, body, false) {
                        wrong.push(format!("{till} (seq {}) in seq order: {why}", body["seq"]));
                    }
                }
            }
            Expect::CollectRace { answer, .. } => {
                for (op, body) in &won {
                    if let Some(why) = check(&Expect::Created(answer.clone()), 201, body, false) {
                        wrong.push(format!("{}: {why}", self.shop.tills[op.till].name));
                    }
                }
                // A refusal that names the first fact names the winner.
                if let [(_, winner)] = won.as_slice() {
                    for (op, outcome) in race {
                        if let Outcome::Answered { status: 409, body } = outcome
                            && let Some(seq) = body["error"]["details"].get("seq")
                            && seq != &winner["seq"]
                        {
                            wrong.push(format!(
                                "{} was refused naming seq {seq}, the winner's is {}",
                                self.shop.tills[op.till].name, winner["seq"]
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
        if won.len() != successes || !wrong.is_empty() {
            let answers: Vec<String> = race
                .iter()
                .map(|(op, o)| format!("{}: {}", self.shop.tills[op.till].name, o.describe()))
                .collect();
            let group = if won.len() != successes {
                format!(
                    "{} ({}): {} succeeded, expected {successes}",
                    first_op.label,
                    movements(first_op.effect.movements()),
                    won.len()
                )
            } else {
                format!("{}: an answer differs from the seq order", first_op.label)
            };
            self.mismatch(
                group,
                format!(
                    "{} (and {} other tills at once)",
                    first_op.describe(&self.shop.tills),
                    race.len() - 1
                ),
                format!("{}; {}", describe_expect(&expect, false), wrong.join("; ")),
                answers.join("\n             "),
            );
        }
    }

    /// A count while other tills moved the counted items: the facts with a smaller seq are in
    /// its `expected`, the others come on top of the count.
    fn judge_count_race(
        &mut self,
        op: &Op,
        outcome: &Outcome,
        before: &[(usize, i64, i64)],
        facts: &[(u64, &Effect)],
    ) {
        self.report.stats.requests += 1;
        let seq = match outcome {
            Outcome::Answered { status: 201, body } => body["seq"].as_u64().unwrap_or(0),
            _ => 0,
        };
        let mut items = Vec::with_capacity(before.len());
        let mut effect = Effect::default();
        for &(p, on_hand, counted) in before {
            let earlier: i64 = facts
                .iter()
                .filter(|(s, _)| *s < seq)
                .flat_map(|(_, e)| e.stock.iter())
                .filter(|(q, _)| *q == p)
                .map(|(_, d)| d)
                .sum();
            let expected = on_hand + earlier;
            let delta = counted - expected;
            let product = &self.shop.products[p];
            items.push(
                json!({"sku": product.sku, "gtin": product.gtin, "counted": counted,
                              "expected": expected, "delta": delta, "watermark_seq": 0}),
            );
            if delta != 0 {
                effect.stock.push((p, delta));
            }
        }
        let expect = Expect::Created(json!({"items": items, "ignored_tags": [],
                                            "adjustments": effect.stock.len(),
                                            "as_of_seq": seq.saturating_sub(1)}));
        if let Outcome::Answered { status, body } = outcome
            && check(&expect, *status, body, false).is_none()
        {
            self.note_fact(op, body);
            self.model.apply(&effect, Some(seq));
            if let Some(scope) = &op.scope {
                let recorded = Recorded {
                    path: op.path.clone(),
                    body: op.body.clone(),
                    answer: body.clone(),
                    effect,
                };
                self.model.record(scope.clone(), recorded, true);
            }
            return;
        }
        let others: Vec<String> = facts
            .iter()
            .filter(|(_, e)| {
                e.stock
                    .iter()
                    .any(|(q, _)| before.iter().any(|b| b.0 == *q))
            })
            .map(|(s, e)| format!("seq {s}: {:?}", e.stock))
            .collect();
        self.op_mismatch(op, &expect, false, outcome);
        self.report.note(format!(
            "count race of seed {} round {}: facts of the round on the counted items: {}",
            self.seed,
            self.round,
            others.join(", ")
        ));
        if let Outcome::Answered { status: 201, body } = outcome {
            // Follow the agent: its count, whatever it said, set on-hand as it answered.
            self.note_fact(op, body);
            let applied = Effect {
                stock: body["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| {
                        let p = self.shop.product_by_sku(i["sku"].as_str()?)?;
                        Some((p, i["delta"].as_i64()?))
                    })
                    .filter(|(_, d)| *d != 0)
                    .collect(),
                ..Default::default()
            };
            self.model.apply(&applied, Some(seq));
        }
    }

    /// After a restart: answered requests sent again get their first answer.
    fn replay_sample(&mut self, planner: &mut Generator<'_>, fresh: &[usize]) {
        let mut picks: Vec<Scope> = fresh
            .iter()
            .map(|i| self.model.recorded[*i].clone())
            .collect();
        for _ in 0..12 {
            if let Some(scope) = self.model.recorded.choose(planner.rng()) {
                picks.push(scope.clone());
            }
        }
        for _ in 0..2 {
            if let Some(scope) = self.model.raced.choose(planner.rng()) {
                picks.push(scope.clone());
            }
        }
        for scope in picks {
            let first = self.model.keys[&scope].clone();
            let raw = if planner.rng().random_bool(0.5) {
                reformatted(&first.body)
            } else {
                first.body.to_string()
            };
            self.report.stats.requests += 1;
            self.report.stats.replays_after_restart += 1;
            let outcome =
                self.tills[scope.till].post_raw(&self.base, &first.path, &raw, None, None);
            let expect = Expect::Replay(first.answer.clone());
            let ok = matches!(&outcome, Outcome::Answered { status, body }
                              if check(&expect, *status, body, false).is_none());
            if !ok {
                self.mismatch(
                    format!(
                        "an answered {} sent again after a restart: got {}",
                        scope.route.short(),
                        got_status(&outcome)
                    ),
                    format!(
                        "{} POST {} {raw}",
                        self.shop.tills[scope.till].name, first.path
                    ),
                    describe_expect(&expect, false),
                    outcome.describe(),
                );
            }
        }
    }

    /// GET in parallel from the auditor; `None` for a failed request.
    fn lookups(&mut self, paths: &[String]) -> Vec<Outcome> {
        self.report.stats.lookups += paths.len();
        let base = self.base.as_str();
        let auditor = &self.auditor;
        let chunk = paths.len().div_ceil(4).max(1);
        std::thread::scope(|s| {
            let handles: Vec<_> = paths
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|p| auditor.get(base, p))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("lookup thread"))
                .collect()
        })
    }

    fn check_stock(&mut self, products: &[usize]) {
        let paths: Vec<String> = products
            .iter()
            .map(|p| format!("/v1/products/{}", self.shop.products[*p].gtin))
            .collect();
        let answers = self.lookups(&paths);
        for ((&p, path), outcome) in products.iter().zip(&paths).zip(answers) {
            let want = (self.model.on_hand[p], self.model.available(self.shop, p));
            let got = match &outcome {
                Outcome::Answered { status: 200, body } => body["stock"]["on_hand"]
                    .as_i64()
                    .zip(body["stock"]["available"].as_i64()),
                _ => None,
            };
            if got == Some(want) {
                continue;
            }
            let what = match got {
                Some((on_hand, _)) if on_hand != want.0 => "on_hand",
                Some(_) => "available",
                None => "the lookup",
            };
            self.mismatch(
                format!("stock of a SKU after a round: {what} differs"),
                format!("GET {path} ({})", self.shop.products[p].sku),
                format!("on_hand {}, available {}", want.0, want.1),
                match got {
                    Some((o, a)) => format!("on_hand {o}, available {a}"),
                    None => outcome.describe(),
                },
            );
            if let Some((on_hand, available)) = got {
                // Take the agent's figures from here on: one divergence, one report.
                self.model.on_hand[p] = on_hand;
                let reserved = self.model.reserved(self.shop, p);
                self.model.reserved_fix[p] += (on_hand - available) - reserved;
            }
        }
    }

    fn check_balances(&mut self, customers: &[usize]) {
        let paths: Vec<String> = customers
            .iter()
            .map(|c| format!("/v1/customers/by-card/{}", self.shop.customers[*c].card))
            .collect();
        let answers = self.lookups(&paths);
        for ((&c, path), outcome) in customers.iter().zip(&paths).zip(answers) {
            let want = self.model.balance(self.shop, c);
            let got = match &outcome {
                Outcome::Answered { status: 200, body } => body["loyalty"]["balance"].as_i64(),
                _ => None,
            };
            if got == Some(want) {
                continue;
            }
            self.mismatch(
                "a customer's balance after a round differs".to_owned(),
                format!(
                    "GET {} ({})",
                    path.replace(&self.shop.customers[c].card, "<card>"),
                    self.shop.customers[c].id
                ),
                format!("balance {want}"),
                match got {
                    Some(b) => format!("balance {b}"),
                    None => outcome.describe(),
                },
            );
            if let Some(b) = got {
                self.model.balance_fix[c] += b - want;
            }
        }
    }

    /// Each purpose's consent in effect, and the marketing data shown exactly when marketing
    /// consent is.
    fn check_consent(&mut self, customers: &[usize]) {
        let paths: Vec<String> = customers
            .iter()
            .map(|c| format!("/v1/customers/by-card/{}", self.shop.customers[*c].card))
            .collect();
        let answers = self.lookups(&paths);
        for ((&c, path), outcome) in customers.iter().zip(&paths).zip(answers) {
            let id = &self.shop.customers[c].id;
            let marketing = self.model.consent(self.shop, c, 0);
            let want = json!({
                "marketing": marketing,
                "profiling": self.model.consent(self.shop, c, 1),
                "data": if marketing { shop::marketing_of(id) } else { Value::Null },
            });
            let got = match &outcome {
                Outcome::Answered { status: 200, body } => Some(json!({
                    "marketing": body["consent"]["marketing"]["granted"],
                    "profiling": body["consent"]["profiling"]["granted"],
                    "data": body.get("marketing").cloned().unwrap_or(Value::Null),
                })),
                _ => None,
            };
            if got.as_ref() == Some(&want) {
                continue;
            }
            self.mismatch(
                "a customer's consent or marketing data after a round differs".to_owned(),
                format!(
                    "GET {} ({id})",
                    path.replace(&self.shop.customers[c].card, "<card>")
                ),
                want.to_string(),
                got.as_ref()
                    .map_or_else(|| outcome.describe(), |g| g.to_string()),
            );
            // Follow the agent from here, so one divergence is reported once.
            if let Some(g) = got {
                self.model.consent[c] = [g["marketing"].as_bool(), g["profiling"].as_bool()];
            }
        }
    }

    fn check_pickups(&mut self) {
        let paths: Vec<String> = self
            .shop
            .orders
            .iter()
            .filter(|o| !o.ship)
            .map(|o| format!("/v1/pickups/{}", o.code))
            .collect();
        let answers = self.lookups(&paths);
        for (o, (path, outcome)) in paths.iter().zip(answers).enumerate() {
            let want = (
                self.model.pickup_status(self.shop, o),
                self.model.collected_seq[o],
            );
            let got = match &outcome {
                Outcome::Answered { status: 200, body } => body["status"]
                    .as_str()
                    .map(|s| (s.to_owned(), body["collected_here"]["seq"].as_u64())),
                _ => None,
            };
            if got.as_ref().map(|(s, seq)| (s.as_str(), *seq)) != Some(want) {
                self.mismatch(
                    "a pickup order's status at the end of the day differs".to_owned(),
                    format!("GET {path} ({})", self.shop.orders[o].id),
                    format!(
                        "status {}, collected_here.seq {}",
                        want.0,
                        want.1.map_or("null".to_owned(), |s| s.to_string())
                    ),
                    outcome.describe(),
                );
            }
        }
    }

    /// Every SKU and every customer.
    /// Every confirmed ticket that named a customer carries that customer's central id in its
    /// event, and no other ticket carries one: the card as spelled at the till never leaves.
    fn check_ticket_customers(&mut self) {
        let events = self.store.outbox_events();
        let by_id: HashMap<&str, &Value> = events
            .iter()
            .filter_map(|e| Some((e["id"].as_str()?, e)))
            .collect();
        let mut checks = Vec::new();
        for recorded in self.model.keys.values() {
            if recorded.path != "/v1/sales" && recorded.path != "/v1/returns" {
                continue;
            }
            let Some(id) = recorded.answer["id"].as_str() else {
                continue;
            };
            let named = &recorded.body["customer"];
            let expected = if let Some(id) = named["customer_id"].as_str() {
                Value::String(id.to_owned())
            } else if let Some(card) = named["card"].as_str() {
                let card: String = card
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .collect::<String>()
                    .to_ascii_uppercase();
                self.shop
                    .customers
                    .iter()
                    .find(|c| c.card == card)
                    .map_or(Value::Null, |c| Value::String(c.id.clone()))
            } else {
                Value::Null
            };
            let got = by_id.get(id).map_or(Value::String("no event".into()), |e| {
                e["payload"]["customer_id"].clone()
            });
            if got != expected {
                checks.push((recorded.body.to_string(), expected, got));
            }
        }
        for (request, expected, got) in checks {
            self.mismatch(
                "a ticket's event names another customer than the till did".to_owned(),
                request,
                format!("payload.customer_id = {expected}"),
                format!("payload.customer_id = {got}"),
            );
        }
    }

    fn sweep(&mut self) {
        let products: Vec<usize> = (0..self.shop.products.len()).collect();
        self.check_stock(&products);
        let customers: Vec<usize> = (0..self.shop.customers.len()).collect();
        self.check_balances(&customers);
        self.check_consent(&customers);
    }
}

/// One day from `seed`: `faults` kills the agent at seeded moments.
pub fn run(seed: u64, knobs: &Knobs, rounds: usize, faults: bool, report: &mut Report) {
    let started = Instant::now();
    let shop = shop::generate(seed, knobs.tills, knobs.max_lines);
    let store = shop::install(&shop);
    let agent = Agent::start(&store.config);
    let base = agent.base.clone();
    let tills = shop.tills.iter().map(|t| Client::new(&t.token)).collect();
    let auditor = Client::new(&shop.auditor.token);
    report.stats.seeds.push(seed);
    report.stats.days += 1;
    let mut day = Day {
        seed,
        scenario: if faults { "faults" } else { "steady" },
        shop: &shop,
        knobs,
        store,
        agent: Some(agent),
        base,
        tills,
        auditor,
        model: Model::new(&shop),
        round: 0,
        depth_fix: 0,
        round_time: Duration::from_millis(20),
        report,
    };
    let salt = if faults { 0xfa17_5eed } else { 0 };
    let mut planner = Generator::new(&shop, day.knobs, seed ^ salt);
    // The store as imported: proves the oracle's reading of the snapshots.
    day.sweep();
    let mut finished = true;
    for round in 0..rounds {
        day.round = round;
        if !day.play_round(&mut planner, faults) {
            finished = false;
            break;
        }
    }
    if finished {
        day.round = rounds;
        day.sweep();
        day.check_pickups();
        day.check_ticket_customers();
    }
    if day.report.total > 0
        && let Some(agent) = &day.agent
    {
        let log = agent.log_text();
        let tail: Vec<&str> = log.lines().rev().take(12).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        day.report.note(format!(
            "agent log of seed {seed} ({}), last lines:\n  {}",
            day.scenario,
            tail.join("\n  ")
        ));
    }
    day.report.stats.seconds += started.elapsed().as_secs_f64();
}
