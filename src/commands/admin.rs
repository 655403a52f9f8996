//! `relais alarms ack CODE` and `relais outbox requeue`: what the doctor's fixes ask the box's
//! administrator to do, done on the box itself — no till's token, no HTTP client to install.
//! The request is proved with the running agent's per-boot key (`api::doctor_link`).

use relais::config::Config;
use relais::doctor::{BoxActionError, box_action};

/// Exit status: 0 done, 3 nothing to do (no such alarm), 1 anything else (the message says what).
pub fn acknowledge_alarm(config: &Config, code: &str) -> u8 {
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        eprintln!(
            "relais alarms ack: {code:?} is not an alarm code (lower-case words joined by `_`, as \
             `relais doctor` and /v1/health name them, e.g. disk_low)"
        );
        return 1;
    }
    match box_action(config, "DELETE", &format!("/v1/alarms/{code}")) {
        Ok((404, _)) => {
            println!("no alarm {code} is raised: nothing to acknowledge");
            3
        }
        Ok(_) => {
            println!("alarm {code} acknowledged");
            0
        }
        Err(e) => fail("alarms ack", &e),
    }
}

pub fn requeue_dead_letters(config: &Config) -> u8 {
    match box_action(config, "POST", "/v1/outbox/requeue") {
        Ok((_, body)) => {
            let n = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["requeued"].as_u64());
            match n {
                Some(0) => println!("no dead letters: nothing to requeue"),
                Some(n) => println!("{n} dead letter(s) queued again for delivery"),
                None => println!("requeued"),
            }
            0
        }
        Err(e) => fail("outbox requeue", &e),
    }
}

fn fail(what: &str, e: &BoxActionError) -> u8 {
    eprintln!("relais {what}: {e}");
    1
}
