//! The running agent, if any: `/v1/health/ready` (public) says whether it serves, and
//! `/v1/health/doctor` what it sees — alarms, sync, staleness — asked and answered with the key
//! the agent wrote in its data directory at start (`api::doctor_link`). No API token is ever
//! sent: whatever listens on `api.listen` may not be the agent (docs/security.md, finding 5).
//! Plain HTTP/1.1 on the local API; the doctor needs no HTTP client library for two GETs.

use super::Finding;
use crate::config::Config;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);
/// A health answer is a few KiB; anything past this is not our agent.
const MAX_RESPONSE: u64 = 1024 * 1024;

/// The API address to reach locally (`0.0.0.0` → loopback).
pub(crate) fn local_address(config: &Config) -> SocketAddr {
    let mut addr = config.api.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// An answer: status, the head's lines (lower case), the body.
pub(crate) struct Answer {
    pub status: u16,
    head: String,
    pub body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            (n.trim() == name).then(|| v.trim())
        })
    }
}

/// `GET path`, with `extra` header lines.
fn get(addr: SocketAddr, path: &str, extra: &str) -> std::io::Result<Answer> {
    request(addr, "GET", path, extra)
}

/// `METHOD path` without a body, with `extra` header lines.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    // One write: a peer that answers after its first read must still get the whole request.
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{extra}content-length: 0\r\nconnection: close\r\naccept: application/json\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(bad)?;
    // Chunk sizes count bytes: undo the chunking before decoding the text.
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok(Answer {
        status,
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The body of a chunked answer (hyper chunks a body whose length it does not know).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let rest = &body[end + 2..];
        let Some(size) = size.filter(|&n| n > 0 && n <= rest.len()) else {
            break;
        };
        out.extend_from_slice(&rest[..size]);
        body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
    }
    out
}

/// The agent's full health, from `/v1/health/doctor`: `Ok(None)` when this user cannot read the
/// doctor key, `Err` with what is wrong when the answer is not the agent's.
fn full_health(config: &Config, addr: SocketAddr) -> Result<Option<serde_json::Value>, String> {
    use crate::api::doctor_link::{self, DoctorKey};
    let key = match DoctorKey::read(&config.agent.data_dir) {
        Ok(key) => key,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(None),
        Err(e) => return Err(format!("cannot read the agent's doctor key: {e}")),
    };
    let challenge = doctor_link::challenge();
    let extra = format!(
        "{}: {}\r\n",
        doctor_link::REQUEST_HEADER,
        key.request(&challenge)
    );
    let answer = get(addr, "/v1/health/doctor", &extra).map_err(|e| e.to_string())?;
    let proved = answer
        .header(doctor_link::PROOF_HEADER)
        .is_some_and(|proof| key.verify(&challenge, answer.body.as_bytes(), proof));
    if answer.status != 200 || !proved {
        return Err(format!(
            "what answers on {addr} did not prove it is this box's agent (HTTP {}): another \
             program may hold the port; nothing secret was sent to it",
            answer.status
        ));
    }
    serde_json::from_str(&answer.body)
        .map(Some)
        .map_err(|e| format!("the agent's health is not JSON: {e}"))
}

/// Why an administrator's action on the running agent did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BoxActionError {
    #[error(
        "cannot read the agent's key {path}: run this with sudo (root or the service user may \
         read it)"
    )]
    NoAccess { path: std::path::PathBuf },
    #[error(
        "the agent is not running (no {path}, or nothing answers on {addr}): start it with \
         `sudo systemctl start relais`, then try again"
    )]
    NotRunning {
        path: std::path::PathBuf,
        addr: SocketAddr,
    },
    #[error("what answers on {addr} refused the request (HTTP {status}): {body}")]
    Refused {
        addr: SocketAddr,
        status: u16,
        body: String,
    },
}

/// `method path` on the running agent, proved with this boot's doctor key instead of a token
/// (`api::auth::require_token_or_box_key`): the HTTP status and body of a 2xx or 404 answer.
pub fn box_action(
    config: &Config,
    method: &str,
    path: &str,
) -> Result<(u16, String), BoxActionError> {
    use crate::api::doctor_link::{self, DoctorKey};
    let addr = local_address(config);
    let key_path = config.agent.data_dir.join(doctor_link::KEY_FILE);
    let key = match DoctorKey::read(&config.agent.data_dir) {
        Ok(key) => key,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(BoxActionError::NoAccess { path: key_path });
        }
        Err(_) => {
            return Err(BoxActionError::NotRunning {
                path: key_path,
                addr,
            });
        }
    };
    let extra = format!(
        "{}: {}\r\n",
        doctor_link::REQUEST_HEADER,
        key.request_action(&doctor_link::challenge(), method, path)
    );
    let answer = request(addr, method, path, &extra).map_err(|_| BoxActionError::NotRunning {
        path: key_path,
        addr,
    })?;
    if (200..300).contains(&answer.status) || answer.status == 404 {
        Ok((answer.status, answer.body))
    } else {
        Err(BoxActionError::Refused {
            addr,
            status: answer.status,
            body: answer.body.chars().take(500).collect(),
        })
    }
}

pub(super) fn running(config: &Config) -> Finding {
    const CHECK: &str = "agent";
    let addr = local_address(config);
    let (status, body) = match get(addr, "/v1/health/ready", "") {
        Ok(answer) => (answer.status, answer.body),
        Err(_) => {
            return Finding::pass(
                CHECK,
                format!(
                    "not running (nothing answers on {addr}); the checks above read its files \
                     directly. Start it with `sudo systemctl start relais`"
                ),
            );
        }
    };
    if status != 200 {
        return Finding::warn(
            CHECK,
            format!(
                "running on {addr} but not ready: HTTP {status} {}",
                super::truncate(&body, 200)
            ),
            "see `sudo journalctl -u relais` for why storage or the outbox writer is down; `sudo systemctl \
             restart relais`",
        );
    }
    let health = match full_health(config, addr) {
        Ok(Some(health)) => health,
        Ok(None) => {
            return Finding::warn(
                CHECK,
                format!(
                    "running and ready on {addr}; its full health needs the agent's doctor key, \
                     which this user cannot read"
                ),
                "run `sudo relais doctor`",
            );
        }
        Err(why) => {
            return Finding::fail(
                CHECK,
                why,
                "find what holds the port (`sudo ss -ltnp`), stop it, and start the agent \
                 (`sudo systemctl restart relais`)",
            );
        }
    };
    let alarms: Vec<String> = health["alarms"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|a| a["code"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default();
    let sync = &health["sync"];
    // The agent's own words for a link that does not deliver (ADR 0018): what ended its last
    // session and what to do.
    let link_problem = match (sync["configured"].as_bool(), sync["connected"].as_bool()) {
        (Some(true), Some(false)) => match sync["link"].as_str() {
            Some(state @ ("stalled" | "refused")) => Some(format!(
                "{state}: {}",
                sync["last_error"].as_str().unwrap_or("no reason recorded")
            )),
            Some(state) => sync["last_error"]
                .as_str()
                .map(|e| format!("{state} (last session: {e})")),
            None => None,
        },
        _ => None,
    };
    let summary = format!(
        "running on {addr}: version {}, up {}, health {}, broker {}, {} store fact(s) waiting",
        health["version"].as_str().unwrap_or("?"),
        super::age(health["uptime_s"].as_f64().unwrap_or(0.0)),
        health["status"].as_str().unwrap_or("?"),
        match (sync["configured"].as_bool(), sync["connected"].as_bool()) {
            (Some(false), _) => "offline (not configured)".to_string(),
            (_, Some(true)) => "delivering".to_string(),
            _ => match &link_problem {
                Some(problem) => problem.clone(),
                None => "not connected".to_string(),
            },
        },
        health["outbox"]["store_fact"]["depth"]
            .as_u64()
            .unwrap_or(0),
    );
    if link_problem.is_some() {
        return Finding::warn(
            CHECK,
            summary,
            "the broker takes the agent's connection but does not let it deliver: see the broker \
             and broker_limits checks and the broker's log; store facts stay queued meanwhile",
        );
    }
    if health["status"] == "ok" {
        return Finding::pass(CHECK, summary);
    }
    degraded(&summary, &alarms)
}

/// A running agent whose health is not `ok`: its alarms with how to acknowledge them, or,
/// with none raised, the stale replica that degrades it (nothing to acknowledge then).
fn degraded(summary: &str, alarms: &[String]) -> Finding {
    const CHECK: &str = "agent";
    if alarms.is_empty() {
        return Finding::warn(
            CHECK,
            format!("{summary}; degraded: a replica stream is stale (see the replica check)"),
            "follow the replica check's fix; health is ok again once every stream is fresh",
        );
    }
    Finding::warn(
        CHECK,
        format!("{summary}; alarms: {}", alarms.join(", ")),
        "each alarm's message says what to do (\"Alarms\" in \
         /usr/share/doc/relais/operations.md); once handled, acknowledge it on the box: `sudo \
         relais alarms ack CODE`",
    )
}

#[cfg(test)]
mod tests {
    use super::{dechunk, degraded};

    #[test]
    fn a_degraded_agent_without_alarms_is_not_told_to_acknowledge_one() {
        let none = degraded("running", &[]);
        let fix = none.fix.unwrap_or_default();
        assert!(!fix.contains("alarms ack"), "{fix}");
        assert!(fix.contains("replica"), "{fix}");
        let some = degraded("running", &["disk_low".to_owned()]);
        assert!(some.detail.contains("disk_low"));
        assert!(
            some.fix
                .unwrap_or_default()
                .contains("sudo relais alarms ack CODE")
        );
    }

    #[test]
    fn a_chunked_body_is_reassembled_byte_for_byte() {
        let body = "8\r\n{\"a\":\"é\r\n3\r\n\"}\n\r\n0\r\n\r\n".as_bytes();
        assert_eq!(dechunk(body), "{\"a\":\"é\"}\n".as_bytes());
        assert_eq!(dechunk(b"zz\r\n"), b"");
    }
}
