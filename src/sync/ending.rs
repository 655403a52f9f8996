//! Why a broker session ended, in words an operator can act on; and what the next connection
//! learns from it. Every way a session can end is one variant, so none ends silently.

use super::LinkState;
use super::limits::LimitsError;
use super::mqtt::codec::reason_name;
use super::mqtt::link::{Closed, LinkError};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("shutting down")]
    Shutdown,
    #[error("{0}")]
    Setup(#[from] super::SyncError),
    #[error(
        "broker connection failed: {0}.{hint} Store facts keep being recorded and are delivered after reconnect",
        hint = connect_hint(.0)
    )]
    Connect(#[from] LinkError),
    #[error("the broker refused the connection: CONNACK 0x{code:02X} {}{}. {}", reason_name(*code), detail(reason_string), connack_fix(*code))]
    Refused {
        code: u8,
        reason_string: Option<String>,
    },
    #[error("{0}")]
    Limits(#[from] LimitsError),
    #[error(
        "the broker broke the MQTT 5.0 protocol: {0}; the agent closed the connection (DISCONNECT 0x82) and retries with backoff"
    )]
    Protocol(String),
    #[error(
        "no PUBACK within {} s for {what}: the broker takes messages but acknowledges none; the agent closed the connection and sends the unacknowledged events again after reconnecting",
        waited.as_secs()
    )]
    PubackTimeout { what: String, waited: Duration },
    #[error(
        "{0}; the agent closed the connection and sends the unacknowledged events again after reconnecting"
    )]
    Liveness(String),
    #[error("the broker closed the session: DISCONNECT 0x{code:02X} {}{}{}. {}", reason_name(*code), detail(reason_string), reference(server_reference), disconnect_advice(*code))]
    ServerDisconnect {
        code: u8,
        reason_string: Option<String>,
        server_reference: Option<String>,
    },
    #[error("lost the broker connection: {0}; unacknowledged events will be sent again")]
    Closed(Closed),
}

/// The broker's TLS alert for a client certificate it does not accept (rustls and OpenSSL
/// spellings of the alerts a broker sends for it).
pub(crate) fn refuses_client_certificate(lower: &str) -> bool {
    [
        "unknownca",
        "unknown ca",
        "badcertificate",
        "bad certificate",
        "certificateunknown",
        "certificate unknown",
        "certificaterequired",
        "certificate required",
        "unsupportedcertificate",
    ]
    .iter()
    .any(|alert| lower.contains(alert))
}

/// A failed connection's cause where the error text alone would mislead.
fn connect_hint(e: &LinkError) -> &'static str {
    if refuses_client_certificate(&e.to_string().to_lowercase()) {
        " The broker does not accept this box's client certificate (not issued by a CA it \
         trusts, or expired): provision the box with its own bundle (`sudo relais provision \
         BUNDLE`)."
    } else {
        ""
    }
}

fn detail(reason_string: &Option<String>) -> String {
    reason_string
        .as_ref()
        .map(|s| format!(" ({s:?})"))
        .unwrap_or_default()
}

fn reference(server_reference: &Option<String>) -> String {
    server_reference
        .as_ref()
        .map(|s| {
            format!(", server reference {s:?} (not followed: sync.broker is the pinned broker)")
        })
        .unwrap_or_default()
}

fn connack_fix(code: u8) -> &'static str {
    match code {
        0x84 => "The broker does not speak MQTT 5.0: Relais needs an MQTT 5.0 broker",
        0x85 => {
            "The broker refuses the client id (the agent id): allow client ids of up to 129 characters with '/'"
        }
        0x86 | 0x87 | 0x8C => {
            "Check the credentials: the username (certificate CN, or sync.username) must be the agent id; with a password check sync.password_file"
        }
        0x8A => "The broker banned this client: ask the broker's operator",
        0x88 | 0x89 | 0x9F => "The broker is overloaded; the agent retries with backoff",
        0x95 => "The CONNECT packet (with its Will) is over the broker's packet limit",
        0x9A => "The next connection sends its Will without retain",
        0x9B => "The broker does not accept a QoS 1 Will: allow QoS 1 for this client",
        0x9C | 0x9D => "The broker points elsewhere: point sync.broker at the new address",
        _ => "See the broker's log for the reason",
    }
}

fn disconnect_advice(code: u8) -> &'static str {
    match code {
        0x00 => "Reconnecting with backoff",
        0x89 | 0x8B | 0x97 | 0x96 | 0x9F | 0x88 => {
            "A transient condition at the broker: reconnecting with backoff"
        }
        0x8E => {
            "Another client connected with this agent id: two boxes share one identity (check the other box), or a replacement took over"
        }
        0x95 => "A batch was over the broker's packet limit: the next batches are half as large",
        0x9A => {
            "The broker has no retained messages: the next connection publishes state without retain"
        }
        0x9B => "The broker refused QoS 1: allow QoS 1 for this client; facts stay queued",
        0x87 | 0x90 => {
            "Check the broker ACL: username = agent id with readwrite on relais/v1/{agent id}/#"
        }
        0x9C | 0x9D => "The broker points elsewhere: point sync.broker at the new address",
        _ => "Reconnecting with backoff; see the broker's log for the cause",
    }
}

impl SessionEnd {
    /// What health says until the next session delivers.
    pub fn link_state(&self) -> LinkState {
        match self {
            SessionEnd::PubackTimeout { .. } | SessionEnd::Liveness(_) => LinkState::Stalled,
            SessionEnd::Closed(Closed::WriteStalled(_)) => LinkState::Stalled,
            SessionEnd::Limits(_) | SessionEnd::Protocol(_) | SessionEnd::Setup(_) => {
                LinkState::Refused
            }
            SessionEnd::Refused { code, .. } if !matches!(code, 0x88 | 0x89 | 0x9A | 0x9F) => {
                LinkState::Refused
            }
            _ => LinkState::Disconnected,
        }
    }
}

/// What one connection teaches the next (kept across sessions of one `run`).
#[derive(Debug, Clone)]
pub struct Learned {
    /// Send the Will and `state` with retain: false once the broker said it has none.
    pub retain: bool,
    /// A payload size the broker refused (DISCONNECT 0x95): later batches stay below.
    pub max_payload: Option<usize>,
}

impl Default for Learned {
    fn default() -> Learned {
        Learned {
            retain: true,
            max_payload: None,
        }
    }
}
