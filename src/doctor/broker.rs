//! The link to central, proved for real: an MQTT v5 connection with the agent's own TLS,
//! credentials and client (`sync::session::link_options`, `sync::mqtt`), the broker's limits
//! from CONNACK judged as the agent would use them, then the ACL — a subscription to the
//! agent's `cfg/desired` and a QoS 1 message to its own harmless `doctor` topic that must be
//! accepted (PUBACK) *and* delivered back (mosquitto grants every subscription and enforces
//! read access only on delivery, so the echo is the only proof the agent may read its own
//! topics).
//!
//! The client id is `{agent id}-doctor`: with the agent's own id, the broker would end the
//! running agent's session (MQTT session takeover).

use super::Finding;
use crate::config::Config;
use crate::sync::SyncError;
use crate::sync::limits::{BrokerLimits, LimitsError};
use crate::sync::mqtt::codec::{self, Incoming};
use crate::sync::mqtt::link::{Link, LinkError, LinkEvent};
use crate::sync::wire::Topics;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
const ACL_TIMEOUT: Duration = Duration::from_secs(5);

/// (broker finding, limits finding, acl finding).
pub(super) async fn check(config: &Config) -> (Finding, Finding, Finding) {
    let Some(broker) = &config.sync.broker else {
        return (
            Finding::pass(
                "broker",
                "not configured (offline): store facts are kept and delivered once sync.broker is set",
            ),
            Finding::pass("broker_limits", "not configured (offline)"),
            Finding::pass("acl", "not configured (offline)"),
        );
    };
    let url = broker.to_string();
    let agent_id = config.agent.id.to_string();
    let username = config
        .sync
        .username
        .clone()
        .unwrap_or_else(|| agent_id.clone());
    let not_checked = |what: &str| {
        Finding::warn(
            what,
            "not checked: no broker connection",
            "fix the broker check first",
        )
    };
    let client_id = format!(
        "{}-doctor",
        config.sync.client_id.as_deref().unwrap_or(&agent_id)
    );
    let mut options =
        match crate::sync::session::link_options(&config.sync, &agent_id, &client_id, None) {
            Ok(options) => options,
            Err(e) => {
                return (
                    setup_failure(&url, &e),
                    not_checked("broker_limits"),
                    not_checked("acl"),
                );
            }
        };
    options.connect_timeout = CONNECT_TIMEOUT;
    let how = if broker.tls {
        match (&config.sync.client_cert_file, &config.sync.password_file) {
            (Some(_), _) => "TLS with the client certificate",
            (None, Some(_)) => "TLS with username and password",
            (None, None) => "TLS",
        }
    } else {
        "plain MQTT (no TLS)"
    };
    let requested_keep_alive = options.connect.keep_alive;
    let (mut link, connack) = match Link::connect(options).await {
        Ok(connected) => connected,
        Err(e) => {
            return (
                connection_failure(
                    &url,
                    broker.tls && config.sync.client_cert_file.is_some(),
                    broker.tls,
                    &username,
                    &e,
                ),
                not_checked("broker_limits"),
                not_checked("acl"),
            );
        }
    };
    if connack.reason >= 0x80 {
        return (
            refused(&url, &username, connack.reason),
            not_checked("broker_limits"),
            not_checked("acl"),
        );
    }
    let link_ok = Finding::pass(
        "broker",
        format!("connected to {url} over {how} (username {username}, client id {client_id})"),
    );
    let evt_len = Topics::new(&agent_id).evt().len();
    let limits =
        match BrokerLimits::from_connack(&connack, requested_keep_alive, &config.sync, evt_len) {
            Ok(limits) => limits,
            Err(e) => {
                link.disconnect(e.disconnect_reason(), Duration::from_millis(300))
                    .await;
                return (link_ok, limits_failure(&e), not_checked("acl"));
            }
        };
    let limits_finding = judge_limits(&limits, &config.sync);
    let acl = acl(&mut link, &agent_id, &username, &limits).await;
    link.disconnect(0x00, Duration::from_millis(300)).await;
    (link_ok, limits_finding, acl)
}

fn limits_failure(e: &LimitsError) -> Finding {
    let fix = match e {
        LimitsError::QosZeroOnly => "allow QoS 1 for the agents' client ids on the broker",
        _ => "fix the broker's configuration (it breaks MQTT 5.0 in CONNACK)",
    };
    Finding::fail("broker_limits", e.to_string(), fix)
}

/// The limits as the agent will use them: a warning where they cost something.
fn judge_limits(limits: &BrokerLimits, config: &crate::config::SyncConfig) -> Finding {
    let summary = limits.summary();
    let mut costs = Vec::new();
    if limits.batch_max_bytes < config.batch_max_bytes {
        costs.push(format!(
            "batches are cut to {} B by the broker's maximum packet size (sync.batch_max_bytes is {}); a single event larger than that is parked as a dead letter (alarm uplink_too_large)",
            limits.batch_max_bytes, config.batch_max_bytes
        ));
    }
    if !limits.retain_available {
        costs.push(
            "no retained messages: state and cfg/reported are published without retain, and central must keep each agent's last state itself (contract §3.1)".to_string(),
        );
    }
    if limits.inflight_batches < config.inflight_batches {
        costs.push(format!(
            "the broker's Receive Maximum {} allows {} batches in flight (sync.inflight_batches is {})",
            limits.receive_maximum, limits.inflight_batches, config.inflight_batches
        ));
    }
    if limits.keep_alive_s == 0 {
        costs.push(
            "the broker switched keep-alive off (Server Keep Alive 0): an idle dead link is noticed only at the next publish's PUBACK timeout".to_string(),
        );
    }
    if costs.is_empty() {
        Finding::pass("broker_limits", summary)
    } else {
        Finding::warn(
            "broker_limits",
            format!(
                "{summary}. The agent works within them: {}",
                costs.join("; ")
            ),
            "nothing to do for delivery; raise the broker's limits to lift these costs",
        )
    }
}

fn refused(url: &str, username: &str, code: u8) -> Finding {
    let name = codec::reason_name(code);
    let fix = match code {
        0x86 | 0x87 | 0x8C => format!(
            "the broker refused username {username:?}: it must be the agent id (leave sync.username \
             unset); with mutual TLS the client certificate's CN must be the agent id and be issued \
             by the fleet CA; with a password check sync.password_file"
        ),
        0x84 => "the broker must speak MQTT 5.0".to_string(),
        _ => "see the broker's log for the reason".to_string(),
    };
    Finding::fail(
        "broker",
        format!("{url} refused the connection: CONNACK 0x{code:02X} {name}"),
        fix,
    )
}

fn reach_fix(url: &str) -> String {
    format!(
        "check sync.broker = \"{url}\" (host and port), that the broker runs, and that this box \
         reaches it through the WAN and firewalls (`timeout 5 bash -c '</dev/tcp/HOST/PORT' && \
         echo open`); store facts are kept meanwhile"
    )
}

fn setup_failure(url: &str, e: &SyncError) -> Finding {
    let fix = match e {
        SyncError::Tls(_) => {
            "check sync.ca_file, sync.client_cert_file and sync.client_key_file (readable PEM \
             files; `relais provision BUNDLE` installs them)"
        }
        SyncError::Secret { .. } => "provision the broker credentials or fix sync.password_file",
        _ => "check the [sync] section (/usr/share/doc/relais/config.md)",
    };
    Finding::fail("broker", format!("{url}: {e}"), fix)
}

fn client_certificate_refused(url: &str, text: &str) -> (String, String) {
    (
        format!(
            "{url}: the broker does not accept this box's client certificate: it is not issued \
             by a CA the broker trusts, or is expired or revoked ({text})"
        ),
        "sync.client_cert_file must be the certificate central ops issued for this box with the \
         fleet CA: provision the box again with its own bundle (`sudo relais provision BUNDLE`); \
         if it is, central ops must check the broker's cafile"
            .to_string(),
    )
}

pub(super) fn connection_failure(
    url: &str,
    mutual_tls: bool,
    tls: bool,
    username: &str,
    e: &LinkError,
) -> Finding {
    let text = e.to_string();
    let lower = text.to_lowercase();
    let credentials_fix = format!(
        "the broker refused username {username:?} or our certificate: it must be the agent id \
         (leave sync.username unset); with mutual TLS the client certificate's CN must be the \
         agent id and be issued by the fleet CA; with a password check sync.password_file"
    );
    let (detail, fix) = match e {
        LinkError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            (
                format!("{url}: connection refused (nothing listens there)"),
                reach_fix(url),
            )
        }
        _ if mutual_tls && crate::sync::ending::refuses_client_certificate(&lower) => {
            client_certificate_refused(url, &text)
        }
        // TLS 1.3 judges the client certificate after the client's handshake is done: a
        // broker that refuses it may just close before CONNACK, with no alert to read.
        LinkError::ClosedBeforeConnAck if mutual_tls => client_certificate_refused(url, &text),
        LinkError::ConnectTimeout { .. } | LinkError::NoConnAck(_) => {
            (format!("{url}: {text}"), reach_fix(url))
        }
        _ if tls && (lower.contains("unknownissuer") || lower.contains("unknown issuer")) => (
            format!("{url}: the broker's certificate is not signed by the pinned CA ({text})"),
            "sync.ca_file must hold central's CA (the bundle's ca.pem: `relais provision \
             BUNDLE`); if the broker's certificate changed CA, central ops must send the new one"
                .to_string(),
        ),
        _ if tls && (lower.contains("notvalidforname") || lower.contains("not valid for name")) => {
            (
                format!("{url}: the broker's certificate is not for this host name ({text})"),
                "use the host name the broker's certificate is issued for in sync.broker"
                    .to_string(),
            )
        }
        _ if tls && lower.contains("expired") => (
            format!("{url}: a certificate is expired or not yet valid ({text})"),
            "check the clock (clock check above); if it is right, central ops must renew the \
             certificate"
                .to_string(),
        ),
        _ if tls && (lower.contains("alert") || lower.contains("certificate")) => (
            format!("{url}: the TLS handshake failed: {text}"),
            format!(
                "check sync.ca_file, sync.client_cert_file, sync.client_key_file (`sudo relais \
                 provision BUNDLE` installs them); {credentials_fix}"
            ),
        ),
        _ if lower.contains("lookup")
            || lower.contains("resolve")
            || lower.contains("name or service") =>
        {
            (
                format!("{url}: the host name does not resolve ({text})"),
                format!(
                    "check the host in sync.broker and the box's DNS (`getent hosts HOST`); {}",
                    reach_fix(url)
                ),
            )
        }
        _ => (format!("{url}: {text}"), reach_fix(url)),
    };
    Finding::fail("broker", detail, fix)
}

async fn acl(link: &mut Link, agent_id: &str, username: &str, limits: &BrokerLimits) -> Finding {
    let topics = Topics::new(agent_id);
    let desired = topics.cfg_desired();
    let probe = format!("{}/doctor", topics.base());
    let fix = format!(
        "the broker ACL must let username {username:?} read and write {base}/#; with the \
         fleet's ACL (`pattern readwrite relais/v1/%u/#`) the username — the client \
         certificate's CN, or sync.username — must be exactly the agent id {agent_id}",
        base = topics.base()
    );
    let nonce = format!(
        "{{\"doctor\":\"{}\",\"at_ms\":{}}}",
        uuid::Uuid::now_v7(),
        crate::storage::now_unix_ms()
    );
    const SUBSCRIBE_ID: u16 = 1;
    const PUBLISH_ID: u16 = 2;
    let filters = vec![(desired.clone(), 1), (probe.clone(), 1)];
    let Some(subscribe) = codec::encode_subscribe(SUBSCRIBE_ID, &filters) else {
        return Finding::fail("acl", "SUBSCRIBE too large", fix);
    };
    if let Err(e) = link.send(subscribe).await {
        return Finding::fail("acl", format!("cannot subscribe: {e}"), fix);
    }
    let mut subacks: Vec<u8> = Vec::new();
    let mut published = false;
    let mut puback: Option<u8> = None;
    let mut echoed = false;
    let outcome = tokio::time::timeout(ACL_TIMEOUT, async {
        loop {
            if puback.is_some() && echoed {
                return Ok(());
            }
            if let Some(reason) = puback
                && reason >= 0x80
            {
                return Ok(());
            }
            match link.next_event().await {
                Some(LinkEvent::Packet(Incoming::SubAck(ack))) if ack.pkid == SUBSCRIBE_ID => {
                    subacks.extend(ack.reasons);
                    if subacks.len() >= 2 && !published {
                        if subacks.iter().any(|c| *c >= 0x80) {
                            return Ok(());
                        }
                        published = true;
                        let Some(packet) = codec::encode_publish(
                            &probe,
                            None,
                            1,
                            false,
                            PUBLISH_ID,
                            nonce.as_bytes(),
                        ) else {
                            return Err("the probe message is too large".to_string());
                        };
                        link.send(packet).await.map_err(|e| e.to_string())?;
                    }
                }
                Some(LinkEvent::Packet(Incoming::PubAck(ack))) if ack.pkid == PUBLISH_ID => {
                    puback = Some(ack.reason)
                }
                Some(LinkEvent::Packet(Incoming::Publish(p))) => {
                    if p.qos == 1 {
                        let _ = link.send(codec::encode_puback(p.pkid, 0)).await;
                    }
                    if p.topic == probe && p.payload.as_ref() == nonce.as_bytes() {
                        echoed = true;
                    }
                }
                Some(LinkEvent::Packet(Incoming::Disconnect(d))) => {
                    return Err(format!(
                        "the broker sent DISCONNECT 0x{:02X} {}",
                        d.reason,
                        codec::reason_name(d.reason)
                    ));
                }
                Some(LinkEvent::Packet(_)) => {}
                Some(LinkEvent::Closed(why)) => return Err(why.to_string()),
                None => return Err("the connection closed".to_string()),
            }
        }
    })
    .await;
    if let Ok(Err(e)) = outcome {
        return Finding::fail(
            "acl",
            format!("the connection failed during the ACL check: {e}"),
            fix,
        );
    }
    let refused: Vec<String> = [&desired, &probe]
        .iter()
        .zip(&subacks)
        .filter(|(_, code)| **code >= 0x80)
        .map(|(topic, code)| format!("{topic} (0x{code:02X} {})", codec::reason_name(*code)))
        .collect();
    if !refused.is_empty() {
        return Finding::fail(
            "acl",
            format!(
                "the broker refused the subscription to {}",
                refused.join(", ")
            ),
            fix,
        );
    }
    let _ = limits;
    match puback {
        None if subacks.len() < 2 => Finding::fail(
            "acl",
            format!("no SUBACK within {} s", ACL_TIMEOUT.as_secs()),
            fix,
        ),
        None => Finding::fail(
            "acl",
            format!(
                "no PUBACK for a QoS 1 message to {probe} within {} s: the broker takes \
                 messages but acknowledges none, so the agent cannot deliver (it closes such a \
                 link after sync.puback_timeout)",
                ACL_TIMEOUT.as_secs()
            ),
            "see the broker's log and load; a broker that withholds PUBACKs is broken or overloaded".to_string(),
        ),
        Some(0x00 | 0x10) if echoed => Finding::pass(
            "acl",
            format!(
                "subscribed to {desired}; a QoS 1 message to {probe} was accepted and delivered \
                 back"
            ),
        ),
        Some(0x00 | 0x10) => Finding::fail(
            "acl",
            format!(
                "a QoS 1 message to {probe} was accepted but not delivered back within {} s: \
                 the broker does not let {username:?} read its own topics (cfg/desired, ack, \
                 rpl would never arrive)",
                ACL_TIMEOUT.as_secs()
            ),
            fix,
        ),
        Some(reason) => Finding::fail(
            "acl",
            format!(
                "the broker refused a QoS 1 message to {probe}: PUBACK 0x{reason:02X} {}",
                codec::reason_name(reason)
            ),
            fix,
        ),
    }
}
