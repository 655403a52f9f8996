//! The link to central, proved for real: an MQTT v5 connection with the agent's own TLS and
//! credentials (`sync::session::broker_options`), then the ACL — a subscription to the agent's
//! `cfg/desired` and a QoS 1 message to its own harmless `doctor` topic that must be accepted
//! (PUBACK) *and* delivered back (mosquitto grants every subscription and enforces read access
//! only on delivery, so the echo is the only proof the agent may read its own topics).
//!
//! The client id is `{agent id}-doctor`: with the agent's own id, the broker would end the
//! running agent's session (MQTT session takeover).

use super::Finding;
use crate::config::Config;
use crate::sync::SyncError;
use crate::sync::wire::Topics;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
const ACL_TIMEOUT: Duration = Duration::from_secs(5);

/// (broker finding, acl finding).
pub(super) async fn check(config: &Config) -> (Finding, Finding) {
    let Some(broker) = &config.sync.broker else {
        return (
            Finding::pass(
                "broker",
                "not configured (offline): store facts are kept and delivered once sync.broker is set",
            ),
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
    let not_checked = || {
        Finding::warn(
            "acl",
            "not checked: no broker connection",
            "fix the broker check first",
        )
    };
    let client_id = format!("{agent_id}-doctor");
    let mut options =
        match crate::sync::session::broker_options(&config.sync, &agent_id, &client_id) {
            Ok(options) => options,
            Err(e) => return (setup_failure(&url, &e), not_checked()),
        };
    options.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
    let (client, mut events) = AsyncClient::new(options, 16);
    let connected = tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    let how = if broker.tls {
        match (&config.sync.client_cert_file, &config.sync.password_file) {
            (Some(_), _) => "TLS with the client certificate",
            (None, Some(_)) => "TLS with username and password",
            (None, None) => "TLS",
        }
    } else {
        "plain MQTT (no TLS)"
    };
    let link = match connected {
        Ok(Ok(())) => Finding::pass(
            "broker",
            format!("connected to {url} over {how} (username {username}, client id {client_id})"),
        ),
        Ok(Err(e)) => {
            return (
                connection_failure(&url, broker.tls, &username, &e),
                not_checked(),
            );
        }
        Err(_) => {
            return (
                Finding::fail(
                    "broker",
                    format!(
                        "{url}: no CONNACK within {} s",
                        CONNECT_TIMEOUT.as_secs() + 1
                    ),
                    reach_fix(&url),
                ),
                not_checked(),
            );
        }
    };
    let acl = acl(&client, &mut events, &agent_id, &username).await;
    let _ = client.disconnect().await;
    // Let the DISCONNECT go out; the broker would otherwise log a lost connection.
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        while events.poll().await.is_ok() {}
    })
    .await;
    (link, acl)
}

fn reach_fix(url: &str) -> String {
    format!(
        "check sync.broker = \"{url}\" (host and port), that the broker runs, and that this box \
         reaches it through the WAN and firewalls (`nc -vz HOST PORT`); store facts are kept \
         meanwhile"
    )
}

fn setup_failure(url: &str, e: &SyncError) -> Finding {
    let fix = match e {
        SyncError::Tls(_) => {
            "check sync.ca_file, sync.client_cert_file and sync.client_key_file (readable PEM \
             files; `relais provision BUNDLE` installs them)"
        }
        SyncError::Secret { .. } => "provision the broker credentials or fix sync.password_file",
        _ => "check the [sync] section (docs/config.md)",
    };
    Finding::fail("broker", format!("{url}: {e}"), fix)
}

fn connection_failure(url: &str, tls: bool, username: &str, e: &ConnectionError) -> Finding {
    let text = e.to_string();
    let lower = text.to_lowercase();
    let credentials_fix = format!(
        "the broker refused username {username:?}: it must be the agent id (leave sync.username \
         unset); with mutual TLS the client certificate's CN must be the agent id and be issued \
         by the fleet CA; with a password check sync.password_file"
    );
    let (detail, fix) = match e {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword
            | ConnectReturnCode::NotAuthorized
            | ConnectReturnCode::BadAuthenticationMethod,
        ) => (
            format!("{url} refused the connection: {text}"),
            credentials_fix,
        ),
        ConnectionError::ConnectionRefused(_) => (
            format!("{url} refused the connection: {text}"),
            "see the broker's log for the reason".to_string(),
        ),
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
            format!("{url}: connection refused (nothing listens there)"),
            reach_fix(url),
        ),
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
                "the broker refused our client certificate or we refused its certificate: check \
                 sync.ca_file, sync.client_cert_file, sync.client_key_file; {credentials_fix}"
            ),
        ),
        _ if lower.contains("lookup")
            || lower.contains("resolve")
            || lower.contains("name or service") =>
        {
            (
                format!("{url}: the host name does not resolve ({text})"),
                format!(
                    "check the host in sync.broker and the box's DNS (`resolvectl query HOST`); {}",
                    reach_fix(url)
                ),
            )
        }
        _ => (format!("{url}: {text}"), reach_fix(url)),
    };
    Finding::fail("broker", detail, fix)
}

async fn acl(
    client: &AsyncClient,
    events: &mut EventLoop,
    agent_id: &str,
    username: &str,
) -> Finding {
    let topics = Topics::new(agent_id);
    let desired = topics.cfg_desired();
    let probe = format!("{}/doctor", topics.base());
    let fix = format!(
        "the broker ACL must let username {username:?} read and write {base}/#; with \
         docs/mosquitto/acl (`pattern readwrite relais/v1/%u/#`) the username — the client \
         certificate's CN, or sync.username — must be exactly the agent id {agent_id}",
        base = topics.base()
    );
    let nonce = format!(
        "{{\"doctor\":\"{}\",\"at_ms\":{}}}",
        uuid::Uuid::now_v7(),
        crate::storage::now_unix_ms()
    );
    for topic in [&desired, &probe] {
        if let Err(e) = client.subscribe(topic.as_str(), QoS::AtLeastOnce).await {
            return Finding::fail("acl", format!("cannot subscribe: {e}"), fix);
        }
    }
    let mut subacks: Vec<SubscribeReasonCode> = Vec::new();
    let mut published = false;
    let mut puback: Option<PubAckReason> = None;
    let mut echoed = false;
    let outcome = tokio::time::timeout(ACL_TIMEOUT, async {
        loop {
            if puback.is_some() && echoed {
                return Ok(());
            }
            if let Some(reason) = &puback
                && !matches!(
                    reason,
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                )
            {
                return Ok(());
            }
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    subacks.extend(ack.return_codes);
                    if subacks.len() >= 2 && !published {
                        if subacks
                            .iter()
                            .any(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                        {
                            return Ok(());
                        }
                        published = true;
                        if let Err(e) = client
                            .publish(
                                probe.as_str(),
                                QoS::AtLeastOnce,
                                false,
                                nonce.clone().into_bytes(),
                            )
                            .await
                        {
                            return Err(e.to_string());
                        }
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => puback = Some(ack.reason),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if p.topic.as_ref() == probe.as_bytes()
                        && p.payload.as_ref() == nonce.as_bytes()
                    {
                        echoed = true;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
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
        .filter(|(_, code)| !matches!(code, SubscribeReasonCode::Success(_)))
        .map(|(topic, code)| format!("{topic} ({code:?})"))
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
    match puback {
        None if subacks.len() < 2 => Finding::fail(
            "acl",
            format!("no SUBACK within {} s", ACL_TIMEOUT.as_secs()),
            fix,
        ),
        None => Finding::fail(
            "acl",
            format!(
                "no PUBACK for a QoS 1 message to {probe} within {} s",
                ACL_TIMEOUT.as_secs()
            ),
            fix,
        ),
        Some(PubAckReason::Success | PubAckReason::NoMatchingSubscribers) if echoed => {
            Finding::pass(
                "acl",
                format!(
                    "subscribed to {desired}; a QoS 1 message to {probe} was accepted and \
                     delivered back"
                ),
            )
        }
        Some(PubAckReason::Success | PubAckReason::NoMatchingSubscribers) => Finding::fail(
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
            format!("the broker refused a QoS 1 message to {probe}: PUBACK {reason:?}"),
            fix,
        ),
    }
}
