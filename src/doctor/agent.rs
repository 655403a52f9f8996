//! The running agent, if any: `/v1/health/ready` (public) says whether it serves, and
//! `/v1/health` (protected: the first token of the token file when it is readable) what it
//! sees — alarms, sync, staleness. Plain HTTP/1.1 on the local API; the doctor needs no HTTP
//! client library for two GETs.

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

/// (status code, body) of `GET path`.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\naccept: application/json\r\n\r\n"
    )?;
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
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
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

/// The first token of the token file, if this user can read it.
fn first_token(config: &Config) -> Option<String> {
    let text = std::fs::read_to_string(config.api.token_file.as_ref()?).ok()?;
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find(|l| !l.is_empty())
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_owned)
}

pub(super) fn running(config: &Config) -> Finding {
    const CHECK: &str = "agent";
    let addr = local_address(config);
    let (status, body) = match get(addr, "/v1/health/ready", None) {
        Ok(answer) => answer,
        Err(_) => {
            return Finding::pass(
                CHECK,
                format!(
                    "not running (nothing answers on {addr}); the checks above read its files \
                     directly. Start it with `systemctl start relais`"
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
            "see `journalctl -u relais` for why storage or the outbox writer is down; `systemctl \
             restart relais`",
        );
    }
    let token = first_token(config);
    let health = match get(addr, "/v1/health", token.as_deref()) {
        Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body).ok(),
        _ => None,
    };
    let Some(health) = health else {
        return Finding::pass(
            CHECK,
            format!(
                "running and ready on {addr} (full health needs a token from api.token_file, \
                 which this user cannot read)"
            ),
        );
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
    let detail = if alarms.is_empty() {
        format!("{summary}; degraded: a replica stream is stale (see the replica check)")
    } else {
        format!("{summary}; alarms: {}", alarms.join(", "))
    };
    Finding::warn(
        CHECK,
        detail,
        format!(
            "each alarm is explained in docs/operations.md; once handled, acknowledge it: `curl \
             -X DELETE http://{addr}/v1/alarms/CODE` (with -H 'authorization: Bearer TOKEN' when \
             api.token_file is set)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn a_chunked_body_is_reassembled_byte_for_byte() {
        let body = "8\r\n{\"a\":\"é\r\n3\r\n\"}\n\r\n0\r\n\r\n".as_bytes();
        assert_eq!(dechunk(body), "{\"a\":\"é\"}\n".as_bytes());
        assert_eq!(dechunk(b"zz\r\n"), b"");
    }
}
