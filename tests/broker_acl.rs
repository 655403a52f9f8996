#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! The sample broker configuration (docs/mosquitto/) enforces the contract's security model,
//! checked against a real mosquitto: mutual TLS with the fleet CA, the certificate CN as the
//! username, and the ACL confining every agent to `relais/v1/{its id}/#`.
//!
//! The broker runs with docs/mosquitto/mosquitto.conf and docs/mosquitto/acl as written; only
//! the listener port, file paths and log destination are substituted (see `broker_config`).

mod common;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Packet, PubAck, PubAckReason, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const AGENT_A: &str = "store-a/agent-1";
const AGENT_B: &str = "store-b/agent-1";
const CENTRAL: &str = "central";
/// Every test, broker start and certificates included, must finish within this.
const BUDGET: Duration = Duration::from_secs(10);
/// How long "never receives" waits.
const QUIET: Duration = Duration::from_millis(800);

fn mosquitto_missing() -> bool {
    if Path::new(MOSQUITTO).exists() {
        return false;
    }
    println!("skipped: {MOSQUITTO} is not installed (scripts/test.sh installs mosquitto)");
    true
}

/// Run a test body within the real-time budget.
async fn within_budget(body: impl std::future::Future<Output = ()>) {
    let started = Instant::now();
    tokio::time::timeout(BUDGET, body)
        .await
        .unwrap_or_else(|_| panic!("the test took longer than {BUDGET:?}"));
    assert!(started.elapsed() < BUDGET);
}

// ----- certificates ------------------------------------------------------------------------

/// A certificate and its key, as PEM files.
struct Identity {
    cert: PathBuf,
    key: PathBuf,
}

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn new_ca(dir: &Path, name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let pem = dir.join(format!("{name}.pem"));
    write(&pem, &issuer.pem());
    Ca { issuer, pem }
}

/// A leaf certificate signed by `ca`: a server (with SANs) or a client (CN = the identity).
fn issue(ca: &Ca, dir: &Path, file: &str, cn: &str, server: bool) -> Identity {
    let sans = if server {
        vec!["localhost".to_string(), "127.0.0.1".to_string()]
    } else {
        Vec::new()
    };
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let identity = Identity {
        cert: dir.join(format!("{file}.pem")),
        key: dir.join(format!("{file}.key")),
    };
    write(&identity.cert, &cert.pem());
    write(&identity.key, &key.serialize_pem());
    identity
}

// ----- the broker --------------------------------------------------------------------------

/// The fleet PKI of one test and a mosquitto running the documented configuration.
struct Broker {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    ca: Ca,
}

fn docs_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/mosquitto")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// docs/mosquitto/mosquitto.conf with this test's port, files and log; every other line as
/// documented. Fails if a directive the substitution relies on disappeared from the docs.
fn broker_config(docs: &str, dir: &Path, port: u16) -> String {
    let replacements: [(&str, String); 7] = [
        ("listener", format!("listener {port} 127.0.0.1")),
        (
            "cafile",
            format!("cafile {}", dir.join("fleet-ca.pem").display()),
        ),
        (
            "certfile",
            format!("certfile {}", dir.join("broker.pem").display()),
        ),
        (
            "keyfile",
            format!("keyfile {}", dir.join("broker.key").display()),
        ),
        (
            "acl_file",
            format!("acl_file {}", dir.join("acl").display()),
        ),
        (
            "persistence_location",
            format!("persistence_location {}/", dir.display()),
        ),
        (
            "log_dest",
            format!("log_dest file {}", dir.join("mosquitto.log").display()),
        ),
    ];
    let mut used = [false; 7];
    let mut out = String::new();
    for line in docs.lines() {
        let directive = line.split_whitespace().next().unwrap_or("");
        match replacements.iter().position(|(key, _)| *key == directive) {
            Some(i) => {
                assert!(
                    !used[i],
                    "docs/mosquitto/mosquitto.conf has two `{directive}` lines"
                );
                used[i] = true;
                out.push_str(&replacements[i].1);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for (i, (key, _)) in replacements.iter().enumerate() {
        assert!(
            used[i],
            "docs/mosquitto/mosquitto.conf no longer sets `{key}`"
        );
    }
    // Denied publishes and subscriptions are logged at debug level: keep them for diagnostics.
    out.push_str("log_type debug\n");
    // Run as root (a CI container), mosquitto would switch to the `mosquitto` user, which cannot
    // write its persistence file into this test's private directory. Production runs it as
    // `mosquitto` from systemd, with /var/lib/mosquitto owned by that user.
    if rustix::process::geteuid().is_root() {
        out.push_str("user root\n");
    }
    out
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = new_ca(dir.path(), "fleet-ca");
        issue(&ca, dir.path(), "broker", "broker.test", true);
        let port = free_port();
        write(&dir.path().join("acl"), &docs_file("acl"));
        let conf = dir.path().join("mosquitto.conf");
        write(
            &conf,
            &broker_config(&docs_file("mosquitto.conf"), dir.path(), port),
        );
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mosquitto");
        let mut broker = Broker {
            child,
            port,
            dir,
            ca,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = broker.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                panic!("mosquitto exited ({status}): {stderr}\n{}", broker.log());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}: {}",
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// A client certificate from the fleet CA.
    fn client_identity(&self, cn: &str) -> Identity {
        let file = format!("client-{}", cn.replace('/', "_"));
        issue(&self.ca, self.dir.path(), &file, cn, false)
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- clients -----------------------------------------------------------------------------

/// A connected MQTT v5 client whose event loop runs on a task; incoming packets (or the
/// connection error that ended the loop) arrive on `incoming`.
struct Peer {
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Result<Packet, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connect over TLS as the agent does: client id = the certificate's CN, clean start, no MQTT
/// username or password. Err carries the connection error when the broker refused us.
async fn connect(
    broker: &Broker,
    client_id: &str,
    identity: Option<&Identity>,
    ca: &Path,
) -> Result<Peer, String> {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", broker.port);
    options.set_clean_start(true);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_connection_timeout(5);
    // Room for the size-limit test's messages coming back (none should).
    options.set_max_packet_size(Some(8 << 20));
    let tls = relais::tls::client_config(
        Some(ca),
        identity.map(|i| (i.cert.as_path(), i.key.as_path())),
    )
    .expect("client TLS configuration");
    options.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(tls)),
    ));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let (tx, mut incoming) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if tx.send(Ok(packet)).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(5), incoming.recv()).await;
    let peer = Peer {
        client,
        incoming,
        task,
    };
    match first {
        Err(_) => Err("no CONNACK and no error within 5 s".into()),
        Ok(None) => Err("the event loop ended before CONNACK".into()),
        Ok(Some(Err(e))) => Err(e),
        Ok(Some(Ok(Packet::ConnAck(ack)))) if ack.code == ConnectReturnCode::Success => Ok(peer),
        Ok(Some(Ok(other))) => Err(format!("expected a successful CONNACK, got {other:?}")),
    }
}

async fn connect_as(broker: &Broker, cn: &str) -> Peer {
    let identity = broker.client_identity(cn);
    let ca = broker.ca.pem.clone();
    connect(broker, cn, Some(&identity), &ca)
        .await
        .unwrap_or_else(|e| panic!("{cn} could not connect: {e}\n{}", broker.log()))
}

impl Peer {
    /// The next incoming packet other than PINGRESP, or None after `within`.
    async fn next(&mut self, within: Duration) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Err(_) => return None,
                Ok(None) => panic!("the client's event loop ended"),
                Ok(Some(Err(e))) => panic!("the connection failed: {e}"),
                Ok(Some(Ok(Packet::PingResp(_)))) => continue,
                Ok(Some(Ok(packet))) => return Some(packet),
            }
        }
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish request");
    }

    async fn puback(&mut self) -> PubAck {
        match self.next(Duration::from_secs(5)).await {
            Some(Packet::PubAck(ack)) => ack,
            other => panic!("expected a PUBACK, got {other:?}"),
        }
    }

    async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe request");
        match self.next(Duration::from_secs(5)).await {
            Some(Packet::SubAck(ack)) if ack.return_codes.len() == 1 => ack.return_codes[0],
            other => panic!("expected a SUBACK for {filter}, got {other:?}"),
        }
    }

    /// The error that ends the connection (within 5 s; no other packet may come first).
    async fn connection_error(&mut self) -> String {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.incoming.recv()).await {
                Err(_) => panic!("the connection is still up after 5 s"),
                Ok(None) => panic!("the client's event loop ended without an error"),
                Ok(Some(Err(e))) => return e,
                Ok(Some(Ok(Packet::PingResp(_)))) => continue,
                Ok(Some(Ok(packet))) => panic!("expected the connection to fail, got {packet:?}"),
            }
        }
    }

    /// Topics of the PUBLISH packets received within `within`.
    async fn received(&mut self, within: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        let mut topics = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                None => return topics,
                Some(Packet::Publish(p)) => topics.push(String::from_utf8_lossy(&p.topic).into()),
                Some(other) => panic!("unexpected packet {other:?}"),
            }
        }
    }
}

fn evt(agent: &str) -> String {
    format!("relais/v1/{agent}/evt")
}

// ----- tests -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_publishing_under_its_own_topics_gets_a_successful_puback_and_central_receives_it()
{
    if mosquitto_missing() {
        return;
    }
    within_budget(async {
        let broker = Broker::start();
        let mut central = connect_as(&broker, CENTRAL).await;
        assert_eq!(
            central.subscribe("relais/v1/+/+/evt").await,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        );
        let mut a = connect_as(&broker, AGENT_A).await;
        a.publish(&evt(AGENT_A), br#"{"v":1}"#.to_vec()).await;
        assert_eq!(a.puback().await.reason, PubAckReason::Success);
        assert_eq!(central.received(QUIET).await, vec![evt(AGENT_A)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nobody_subscribed_the_broker_acknowledges_with_no_matching_subscribers() {
    if mosquitto_missing() {
        return;
    }
    within_budget(async {
        let broker = Broker::start();
        let mut a = connect_as(&broker, AGENT_A).await;
        a.publish(&evt(AGENT_A), br#"{"v":1}"#.to_vec()).await;
        // 0x10 is a success code: in `ack = "puback"` mode the agent deletes the rows although
        // nobody will ever read them (docs/contract.md, "What a PUBACK proves").
        assert_eq!(a.puback().await.reason, PubAckReason::NoMatchingSubscribers);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_publishing_under_another_agents_topics_gets_not_authorized_and_nothing_is_delivered()
 {
    if mosquitto_missing() {
        return;
    }
    within_budget(async {
        let broker = Broker::start();
        let mut central = connect_as(&broker, CENTRAL).await;
        assert_eq!(
            central.subscribe("relais/v1/#").await,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        );
        let mut b = connect_as(&broker, AGENT_B).await;
        assert_eq!(
            b.subscribe(&format!("relais/v1/{AGENT_B}/#")).await,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        );
        let mut a = connect_as(&broker, AGENT_A).await;
        for topic in [
            evt(AGENT_B),
            format!("relais/v1/{AGENT_B}/state"),
            "relais/v1/x".into(),
        ] {
            a.publish(&topic, br#"{"v":1}"#.to_vec()).await;
            let ack = a.puback().await;
            assert_eq!(
                ack.reason,
                PubAckReason::NotAuthorized,
                "publishing to {topic}: {ack:?}\n{}",
                broker.log()
            );
        }
        // The refusal does not end the session: A's own topics still work.
        a.publish(&evt(AGENT_A), br#"{"v":1}"#.to_vec()).await;
        assert_eq!(a.puback().await.reason, PubAckReason::Success);
        assert_eq!(b.received(QUIET).await, Vec::<String>::new());
        assert_eq!(central.received(QUIET).await, vec![evt(AGENT_A)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_subscribing_to_another_agents_topics_is_granted_but_receives_none_of_their_messages()
 {
    if mosquitto_missing() {
        return;
    }
    within_budget(async {
        let broker = Broker::start();
        // B's retained birth is what a nosy agent would most like to read.
        let mut b = connect_as(&broker, AGENT_B).await;
        let b_state = format!("relais/v1/{AGENT_B}/state");
        b.client
            .publish(
                b_state.as_str(),
                QoS::AtLeastOnce,
                true,
                br#"{"v":1}"#.to_vec(),
            )
            .await
            .expect("publish request");
        assert_eq!(b.puback().await.reason, PubAckReason::NoMatchingSubscribers);

        let mut a = connect_as(&broker, AGENT_A).await;
        // mosquitto 2.0 grants any syntactically valid subscription (SUBACK 0x01, never 0x87
        // for an ACL denial) and checks read access for every message it would deliver,
        // retained ones included. A broker answering 0x87 here would be as safe; if one does,
        // update this assertion and docs/mosquitto/README.md.
        for filter in [
            format!("relais/v1/{AGENT_B}/#"),
            b_state.clone(),
            "relais/v1/+/+/ack".to_string(),
            "#".to_string(),
        ] {
            assert_eq!(
                a.subscribe(&filter).await,
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                "subscribing to {filter}\n{}",
                broker.log()
            );
        }
        let central = connect_as(&broker, CENTRAL).await;
        for agent in [AGENT_B, AGENT_A] {
            central
                .publish(
                    &format!("relais/v1/{agent}/ack"),
                    br#"{"v":1,"seqs":[[1,1]]}"#.to_vec(),
                )
                .await;
        }
        let got = a.received(QUIET).await;
        // Only A's own ack, once per matching subscription (`relais/v1/+/+/ack` and `#`);
        // neither B's retained state nor B's ack.
        assert!(
            !got.iter().any(|t| t.contains("store-b")),
            "A received B's messages: {got:?}"
        );
        let own = format!("relais/v1/{AGENT_A}/ack");
        assert!(!got.is_empty() && got.iter().all(|t| *t == own), "{got:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_during_the_tls_handshake() {
    if mosquitto_missing() {
        return;
    }
    within_budget(async {
        let broker = Broker::start();
        let ca = broker.ca.pem.clone();
        let error = match connect(&broker, AGENT_A, None, &ca).await {
            Ok(_) => panic!("a client without a certificate was accepted"),
            Err(e) => e,
        };
        // TLS 1.3: the client finishes its side of the handshake, the broker then answers
        // with a fatal alert instead of reading CONNECT; no CONNACK is ever sent.
        assert!(
            error.contains("received fatal alert: CertificateRequired"),
            "not a TLS refusal: {error}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_certificate_from_another_ca_is_refused_during_the_tls_handshake() {
    if mosquitto_missing() {
        return;
    }
    within_budget(async {
        let broker = Broker::start();
        // Same CN as a real agent, issued by a CA the broker does not trust.
        let rogue = new_ca(broker.dir(), "rogue-ca");
        let identity = issue(&rogue, broker.dir(), "rogue-agent", AGENT_A, false);
        let ca = broker.ca.pem.clone();
        let error = match connect(&broker, AGENT_A, Some(&identity), &ca).await {
            Ok(_) => panic!("a certificate from another CA was accepted"),
            Err(e) => e,
        };
        assert!(
            error.contains("received fatal alert: UnknownCA"),
            "not a TLS refusal: {error}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_contract_limit_is_dropped_by_the_broker_and_its_puback_ends_the_connection()
 {
    if mosquitto_missing() {
        return;
    }
    within_budget(async {
        let broker = Broker::start();
        // message_size_limit in the sample config is the contract's MAX_DOWNLINK_BYTES.
        let limit = relais::sync::wire::MAX_DOWNLINK_BYTES;
        let mut a = connect_as(&broker, AGENT_A).await;
        a.publish(&evt(AGENT_A), vec![b' '; limit]).await;
        assert_eq!(a.puback().await.reason, PubAckReason::NoMatchingSubscribers);

        a.publish(&evt(AGENT_A), vec![b' '; limit + 1]).await;
        // mosquitto 2.0.11 drops it and answers PUBACK with reason 0x95 (packet too large; its
        // manual says 0x83). 0x95 is not a PUBACK reason in MQTT 5, so rumqttc 0.25 cannot
        // decode the PUBACK and ends the connection: the publisher never sees a refusal it could
        // dead-letter, it reconnects and sends the same message again. Hence the contract rule
        // that no message may exceed the limit (docs/contract.md, "Size limits").
        let error = a.connection_error().await;
        assert!(
            error.contains("response for connect = 149"),
            "unexpected end of the connection: {error}"
        );
        assert!(
            broker.log().contains("Dropped too large PUBLISH"),
            "{}",
            broker.log()
        );
    })
    .await;
}

/// The real agent binary, configured like a store box: mTLS with a client certificate whose CN
/// is its agent id, no username or password; its events reach central through the documented
/// broker configuration and ACL.
#[test]
fn the_real_agent_connects_with_its_client_certificate_and_central_receives_its_events() {
    if mosquitto_missing() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = Broker::start();
    let me = broker.client_identity(common::AGENT_ID);
    let mut central = rt.block_on(connect_as(&broker, CENTRAL));
    assert_eq!(
        rt.block_on(central.subscribe("relais/v1/+/+/evt")),
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    let store = common::Store::with(common::Settings {
        sync: format!(
            "broker = \"mqtts://127.0.0.1:{}\"\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            broker.port,
            broker.ca.pem.display(),
            me.cert.display(),
            me.key.display()
        ),
        ..common::Settings::default()
    });
    let agent = store.start();
    let deadline = Instant::now() + BUDGET;
    while agent.health()["sync"]["connected"] != serde_json::json!(true) {
        assert!(
            Instant::now() < deadline,
            "the agent did not connect over mTLS: {}\n{}\n{}",
            agent.health(),
            agent.log_text(),
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) =
        agent.post_movement(&serde_json::json!({"kind": "adjustment", "sku": "SKU-1", "qty": 1}));
    assert_eq!(status, 201, "{body}");
    let topics = rt.block_on(central.received(Duration::from_secs(5)));
    assert!(
        topics.contains(&evt(common::AGENT_ID)),
        "central got {topics:?}\n{}",
        agent.log_text()
    );
}
