#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! `relais doctor` against real parts: real databases (imported, then damaged), a real
//! Mosquitto with the contract's ACL, a real port with nothing behind it, a running agent.
//! Exit status is the worst finding: 0 pass, 1 warn, 2 fail.

#[path = "common/broker.rs"]
mod broker;
mod common;

use broker::{Broker, BrokerOptions};
use common::{Agent, Settings, Store, base_price, describe, gtin14, product, reservation, stock};
use serde_json::{Value, json};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// `relais doctor --json`: (exit status, report).
fn doctor(store: &Store) -> (i32, Value) {
    let out = store.relais(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json printed no JSON ({e}):\n{}", describe(&out)));
    (common::status_code(&out), report)
}

fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding in {report:#}"))
}

/// Every stream loaded with a little data: a replica that is complete and fresh.
fn import_every_stream(store: &Store) {
    let gtin = gtin14(400_638_133_393);
    store.import_ok(
        "products",
        "products.ndjson",
        &[product(&gtin, "SKU-1", "Item")],
    );
    store.import_ok(
        "prices",
        "prices.ndjson",
        &[base_price("SKU-1", 199, "2025-01-01T00:00:00Z")],
    );
    store.import_ok("stock", "stock.ndjson", &[stock("SKU-1", 5)]);
    store.import_ok(
        "customers",
        "customers.ndjson",
        &[
            json!({"customer_id": "C-1", "display_name": "Ada", "loyalty_balance": 10,
                 "card_tokens": []}),
        ],
    );
    store.import_ok(
        "reservations",
        "reservations.ndjson",
        &[reservation("WEB-1", "SKU-1", 1)],
    );
}

fn store_with_broker(url: &str) -> Store {
    Store::with(Settings {
        sync: format!("broker = \"{url}\"\n"),
        ..Settings::default()
    })
}

/// Give the store's API a fixed free port, so the doctor finds a running agent where the
/// config says it listens.
fn fixed_port(store: &Store) -> u16 {
    let port = broker::free_port();
    let text = std::fs::read_to_string(&store.config).unwrap();
    std::fs::write(
        &store.config,
        text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    port
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_healthy_offline_store_passes_every_check_and_exits_0() {
    let store = Store::new();
    import_every_stream(&store);
    let (code, report) = doctor(&store);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["status"], "pass", "{report:#}");
    for check in report["checks"].as_array().unwrap() {
        assert_eq!(check["status"], "pass", "{check:#}");
        assert!(check["fix"].is_null(), "{check:#}");
        assert!(!check["detail"].as_str().unwrap().is_empty(), "{check:#}");
    }
    // A deliberate offline store is healthy: the broker check says so instead of warning.
    let link = finding(&report, "broker");
    assert!(
        link["detail"]
            .as_str()
            .unwrap()
            .contains("not configured (offline)"),
        "{link:#}"
    );
    assert!(
        finding(&report, "integrity:outbox.db")["detail"]
            .as_str()
            .unwrap()
            .contains("quick_check ok")
    );

    // The human rendering: one line per check and the verdict.
    let out = store.relais(&["doctor"]);
    assert_eq!(common::status_code(&out), 0, "{}", describe(&out));
    let text = common::stdout(&out);
    assert!(text.contains("[ok]   broker"), "{text}");
    assert!(text.contains("pass: every check passed"), "{text}");
}

/// Overwrite the middle third of a database file, keeping its header page (as
/// tests/startup.rs damages files).
fn corrupt_middle(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    assert!(len >= 8 * 4096, "{} is only {len} bytes", path.display());
    let garbage: Vec<u8> = (0..(len / 3))
        .map(|i| (i as u8).wrapping_mul(37) ^ 0xA5)
        .collect();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&garbage, len / 3).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn a_corrupted_replica_fails_the_integrity_check_and_exits_2() {
    let store = Store::new();
    let products: Vec<Value> = (0..3000)
        .map(|i| {
            product(
                &gtin14(7_000_000_000 + i),
                &format!("SKU-{i}"),
                &format!("Product number {i} with a long enough name"),
            )
        })
        .collect();
    store.import_ok("products", "products.ndjson", &products);
    corrupt_middle(&store.replica_db());
    let before = std::fs::read(store.replica_db()).unwrap();

    let (code, report) = doctor(&store);
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(report["status"], "fail");
    let integrity = finding(&report, "integrity:replica.db");
    assert_eq!(integrity["status"], "fail", "{integrity:#}");
    assert!(
        integrity["detail"].as_str().unwrap().contains("damaged"),
        "{integrity:#}"
    );
    assert!(
        integrity["fix"]
            .as_str()
            .unwrap()
            .contains("replica_rebuilt"),
        "{integrity:#}"
    );
    assert_eq!(finding(&report, "integrity:outbox.db")["status"], "pass");
    // The doctor only looks: the damaged file is neither repaired nor moved aside.
    assert_eq!(std::fs::read(store.replica_db()).unwrap(), before);
}

#[test]
fn a_broker_that_is_down_fails_the_broker_check_with_a_fix_naming_the_url() {
    let url = format!("mqtt://127.0.0.1:{}", broker::free_port());
    let store = store_with_broker(&url);
    import_every_stream(&store);
    let started = Instant::now();
    let (code, report) = doctor(&store);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(code, 2, "{report:#}");
    let link = finding(&report, "broker");
    assert_eq!(link["status"], "fail", "{link:#}");
    assert!(
        link["detail"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{link:#}"
    );
    assert!(
        link["fix"]
            .as_str()
            .unwrap()
            .contains(&format!("sync.broker = \"{url}\"")),
        "{link:#}"
    );
    assert_eq!(finding(&report, "acl")["status"], "warn");
}

#[test]
fn with_a_real_mosquitto_the_broker_and_acl_checks_pass_without_disturbing_the_running_agent() {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return;
    }
    let mosquitto = Broker::start(BrokerOptions::default());
    let store = store_with_broker(&mosquitto.url());
    import_every_stream(&store);
    let port = fixed_port(&store);
    let agent = Agent::start(&store.config);
    wait_until("the agent connected", Duration::from_secs(20), || {
        agent.health()["sync"]["connected"] == json!(true)
    });

    let (_, report) = doctor(&store);
    let link = finding(&report, "broker");
    assert_eq!(link["status"], "pass", "{link:#}\n{}", mosquitto.log());
    assert!(
        link["detail"]
            .as_str()
            .unwrap()
            .contains("client id test-store/agent-1-doctor"),
        "{link:#}"
    );
    let acl = finding(&report, "acl");
    assert_eq!(acl["status"], "pass", "{acl:#}\n{}", mosquitto.log());
    assert!(
        acl["detail"].as_str().unwrap().contains("delivered back"),
        "{acl:#}"
    );
    let running = finding(&report, "agent");
    assert_eq!(running["status"], "pass", "{running:#}");
    let detail = running["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("running on 127.0.0.1:{port}")),
        "{detail}"
    );
    assert!(detail.contains("broker delivering"), "{detail}");
    // Read-only checks of databases the agent has open.
    assert_eq!(finding(&report, "integrity:outbox.db")["status"], "pass");
    assert_eq!(finding(&report, "integrity:replica.db")["status"], "pass");
    // The only warning: central cannot send this box signed configuration (no ops key).
    assert_eq!(finding(&report, "ops_keys")["status"], "warn", "{report:#}");

    // The doctor's own client id did not take the agent's session over.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(agent.health()["sync"]["connected"], json!(true));
    assert!(
        !agent.log_text().contains("the broker closed the session"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn a_username_the_broker_acl_does_not_cover_fails_the_acl_check() {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return;
    }
    let mosquitto = Broker::start(BrokerOptions::default());
    let store = Store::with(Settings {
        sync: format!(
            "broker = \"{}\"\nusername = \"other-store/agent-9\"\n",
            mosquitto.url()
        ),
        ..Settings::default()
    });
    let (code, report) = doctor(&store);
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(finding(&report, "broker")["status"], "pass", "{report:#}");
    let acl = finding(&report, "acl");
    assert_eq!(acl["status"], "fail", "{acl:#}");
    assert!(
        acl["detail"]
            .as_str()
            .unwrap()
            .contains("PUBACK 0x87 Not authorized"),
        "{acl:#}"
    );
    let fix = acl["fix"].as_str().unwrap();
    assert!(fix.contains("pattern readwrite relais/v1/%u/#"), "{fix}");
    assert!(fix.contains("test-store/agent-1"), "{fix}");
}

#[test]
fn a_serial_device_path_that_does_not_exist_fails_the_serial_check_naming_the_path() {
    let store = Store::new();
    import_every_stream(&store);
    let path = "/dev/serial/by-id/usb-Nobody_Scanner_0000-if00";
    let mut text = std::fs::read_to_string(&store.config).unwrap();
    text.push_str(&format!(
        "\n[[devices.serial]]\nname = \"till-1-scanner\"\npath = \"{path}\"\n"
    ));
    std::fs::write(&store.config, text).unwrap();
    let (code, report) = doctor(&store);
    assert_eq!(code, 2, "{report:#}");
    let serial = finding(&report, "serial:till-1-scanner");
    assert_eq!(serial["status"], "fail", "{serial:#}");
    assert!(
        serial["detail"].as_str().unwrap().contains(path),
        "{serial:#}"
    );
    assert!(
        serial["fix"]
            .as_str()
            .unwrap()
            .contains("devices.serial[0].path"),
        "{serial:#}"
    );
    // The generic profile still matches a port that is absent: the agent would use it.
    assert_eq!(finding(&report, "profiles")["status"], "pass", "{report:#}");
}

#[test]
fn an_invalid_config_fails_the_config_check_and_exits_2() {
    let store = Store::new();
    let text = std::fs::read_to_string(&store.config).unwrap();
    std::fs::write(
        &store.config,
        text.replace("[replica]\n", "[replica]\nstale_after = \"soon\"\n"),
    )
    .unwrap();
    let (code, report) = doctor(&store);
    assert_eq!(code, 2, "{report:#}");
    let config = finding(&report, "config");
    assert_eq!(config["status"], "fail");
    assert!(
        config["detail"]
            .as_str()
            .unwrap()
            .contains("replica.stale_after"),
        "{config:#}"
    );
    assert_eq!(report["checks"].as_array().unwrap().len(), 1);
}

#[test]
fn a_token_file_readable_by_others_fails_the_api_tokens_check() {
    let store = Store::new();
    import_every_stream(&store);
    let tokens = store.path("api-tokens");
    std::fs::write(&tokens, "till-1 dGhpcy1pcy1hLWxvbmctZW5vdWdoLXRva2Vu\n").unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = std::fs::read_to_string(&store.config).unwrap();
    std::fs::write(
        &store.config,
        text.replace(
            "[api]\n",
            &format!("[api]\ntoken_file = \"{}\"\n", tokens.display()),
        ),
    )
    .unwrap();
    let (code, report) = doctor(&store);
    assert_eq!(code, 2, "{report:#}");
    let check = finding(&report, "api_tokens");
    assert_eq!(check["status"], "fail", "{check:#}");
    assert!(
        check["fix"].as_str().unwrap().contains("chmod 600"),
        "{check:#}"
    );

    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, report) = doctor(&store);
    assert_eq!(code, 0, "{report:#}");
}

// ----- a provisioned box against a mutual-TLS Mosquitto --------------------------------------

mod tls {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    /// (certificate PEM, key PEM) signed by `ca`: a server for `localhost`, or a client whose
    /// CN is `cn`.
    pub fn issue(
        ca: &CertifiedIssuer<'static, KeyPair>,
        cn: &str,
        server: bool,
    ) -> (String, String) {
        let sans = if server {
            vec!["localhost".to_string()]
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
        let cert = params.signed_by(&key, ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Mosquitto as docs/mosquitto configures it: client certificates required, the CN as
    /// the username, the contract's ACL.
    pub struct TlsBroker {
        child: Child,
        pub port: u16,
        pub dir: tempfile::TempDir,
    }

    impl TlsBroker {
        pub fn start(ca: &CertifiedIssuer<'static, KeyPair>) -> TlsBroker {
            let dir = tempfile::tempdir().unwrap();
            let file = |name: &str, text: &str| -> PathBuf {
                let path = dir.path().join(name);
                std::fs::write(&path, text).unwrap();
                path
            };
            let (cert, key) = issue(ca, "localhost", true);
            let ca_file = file("ca.pem", &ca.pem());
            let cert_file = file("broker.pem", &cert);
            let key_file = file("broker.key", &key);
            let acl = file(
                "acl",
                "pattern readwrite relais/v1/%u/#\nuser central\ntopic readwrite relais/v1/#\n",
            );
            let port = super::broker::free_port();
            let conf = file(
                "mosquitto.conf",
                &format!(
                    "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
                     require_certificate true\nuse_identity_as_username true\n\
                     allow_anonymous false\nacl_file {}\npersistence false\nlog_dest stderr\n\
                     log_type error\nlog_type warning\nlog_type notice\n",
                    ca_file.display(),
                    cert_file.display(),
                    key_file.display(),
                    acl.display()
                ),
            );
            let log = std::fs::File::create(dir.path().join("mosquitto.log")).unwrap();
            let child = Command::new(super::broker::MOSQUITTO)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "mosquitto did not listen");
                std::thread::sleep(Duration::from_millis(20));
            }
            TlsBroker { child, port, dir }
        }

        pub fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
        }
    }

    impl Drop for TlsBroker {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A provisioning bundle for `agent` on `broker`, as central ops makes one.
    pub fn bundle(dir: &Path, ca: &CertifiedIssuer<'static, KeyPair>, agent: &str, broker: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let (cert, key) = issue(ca, agent, false);
        let (ops, _) = relais::fleet::SigningKey::generate().unwrap();
        for (name, text) in [
            (
                "bundle.toml",
                format!("agent_id = \"{agent}\"\nbroker = \"{broker}\"\n"),
            ),
            ("ca.pem", ca.pem()),
            ("client.pem", cert),
            ("client.key", key),
            ("ops.pub", format!("{}\n", ops.public_key().to_line())),
            (
                "api-tokens",
                "till-1 dGhpcy1pcy1hLWxvbmctZW5vdWdoLXRva2Vu\n".to_string(),
            ),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
}

#[test]
fn a_provisioned_box_passes_every_check_against_a_mutual_tls_mosquitto_and_a_wrong_ca_fails() {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return;
    }
    let fleet_ca = tls::new_ca("Relais fleet CA");
    let mosquitto = tls::TlsBroker::start(&fleet_ca);
    let store = Store::new();
    import_every_stream(&store);
    let bundle = store.path("bundle");
    let url = format!("mqtts://localhost:{}", mosquitto.port);
    tls::bundle(&bundle, &fleet_ca, common::AGENT_ID, &url);
    let secrets = store.path("etc-relais");
    let mut provision = std::process::Command::new(common::BIN);
    provision
        .arg("provision")
        .arg(&bundle)
        .arg("--config")
        .arg(&store.config)
        .arg("--secrets-dir")
        .arg(&secrets)
        .args(["--user", "nobody"]);
    let out = common::run(provision);
    assert_eq!(common::status_code(&out), 0, "{}", describe(&out));

    let (code, report) = doctor(&store);
    assert_eq!(code, 0, "{report:#}\n{}", mosquitto.log());
    let link = finding(&report, "broker");
    assert!(
        link["detail"]
            .as_str()
            .unwrap()
            .contains("TLS with the client certificate"),
        "{link:#}"
    );
    assert_eq!(finding(&report, "acl")["status"], "pass");
    assert_eq!(finding(&report, "ops_keys")["status"], "pass");
    assert_eq!(finding(&report, "api_tokens")["status"], "pass");

    // The box pins another CA than the one that signed the broker's certificate.
    std::fs::write(secrets.join("ca.pem"), tls::new_ca("Some other CA").pem()).unwrap();
    let (code, report) = doctor(&store);
    assert_eq!(code, 2, "{report:#}");
    let link = finding(&report, "broker");
    assert_eq!(link["status"], "fail", "{link:#}");
    assert!(
        link["detail"]
            .as_str()
            .unwrap()
            .contains("not signed by the pinned CA"),
        "{link:#}"
    );
    assert!(
        link["fix"].as_str().unwrap().contains("sync.ca_file"),
        "{link:#}"
    );
}

#[test]
fn a_client_certificate_from_another_ca_is_called_that_and_not_a_refused_username() {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return;
    }
    let fleet_ca = tls::new_ca("Relais fleet CA");
    let mosquitto = tls::TlsBroker::start(&fleet_ca);
    let store = Store::new();
    import_every_stream(&store);
    let bundle = store.path("bundle");
    let url = format!("mqtts://localhost:{}", mosquitto.port);
    tls::bundle(&bundle, &fleet_ca, common::AGENT_ID, &url);
    let mut provision = std::process::Command::new(common::BIN);
    provision
        .arg("provision")
        .arg(&bundle)
        .arg("--config")
        .arg(&store.config)
        .arg("--secrets-dir")
        .arg(store.path("etc-relais"))
        .args(["--user", "nobody"]);
    let out = common::run(provision);
    assert_eq!(common::status_code(&out), 0, "{}", describe(&out));
    // The right CA pinned, but the box's own certificate later replaced by one another CA
    // signed (a renewal from the wrong CA, copied by hand: `relais provision` refuses such a
    // bundle, so the box can only get there outside it).
    let (cert, key) = tls::issue(&tls::new_ca("Some other CA"), common::AGENT_ID, false);
    std::fs::write(store.path("etc-relais").join("client.pem"), cert).unwrap();
    std::fs::write(store.path("etc-relais").join("client.key"), key).unwrap();

    let (code, report) = doctor(&store);
    assert_eq!(code, 2, "{report:#}");
    let link = finding(&report, "broker");
    assert_eq!(link["status"], "fail", "{link:#}");
    let detail = link["detail"].as_str().unwrap();
    let fix = link["fix"].as_str().unwrap();
    assert!(
        detail.contains("does not accept this box's client certificate"),
        "{link:#}"
    );
    assert!(!fix.contains("refused username"), "{link:#}");
    assert!(fix.contains("relais provision"), "{link:#}");
}

#[test]
fn a_data_dir_the_agent_cannot_write_fails_the_data_dir_check_and_is_not_called_damaged() {
    let store = Store::new();
    import_every_stream(&store);
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    mode(&store.data_dir, 0o555);
    // Root may write anywhere: as root, look as an unprivileged account does.
    let root = rustix::process::geteuid().is_root();
    let out = if root {
        mode(store.tmp.path(), 0o755);
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            common::BIN,
        ])
        .arg("--config")
        .arg(&store.config)
        .args(["doctor", "--json"]);
        common::run(cmd)
    } else {
        store.relais(&["doctor", "--json"])
    };
    mode(&store.data_dir, 0o700);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", describe(&out)));
    assert_eq!(common::status_code(&out), 2, "{report:#}");
    let dir = finding(&report, "data_dir");
    assert_eq!(dir["status"], "fail", "{dir:#}");
    assert!(
        dir["detail"].as_str().unwrap().contains("not writable"),
        "{dir:#}"
    );
    // Databases this user cannot open are not reported damaged.
    for check in ["integrity:replica.db", "integrity:outbox.db"] {
        assert_ne!(finding(&report, check)["status"], "fail", "{report:#}");
    }
}

#[test]
fn a_fake_listener_on_the_api_port_gets_no_token_from_the_doctor_and_is_called_out() {
    let store = Store::new();
    import_every_stream(&store);
    let token = "till-1-secret-token-0123456789abcdef";
    let tokens = store.path("api-tokens");
    std::fs::write(&tokens, format!("till-1 {token}\n")).unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = fixed_port(&store);
    let text = std::fs::read_to_string(&store.config).unwrap();
    std::fs::write(
        &store.config,
        text.replace(
            &format!("listen = \"127.0.0.1:{port}\"\n"),
            &format!(
                "listen = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
                tokens.display()
            ),
        ),
    )
    .unwrap();
    // The agent is down; a local user binds its port and answers every request like it.
    let fake = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = std::sync::Arc::clone(&heard);
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in fake.incoming() {
            let Ok(mut conn) = conn else { break };
            let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
            // The whole request head, however many writes it came in.
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            sink.lock().unwrap().extend_from_slice(&request);
            let body = "{\"status\":\"ok\",\"version\":\"0.1.0\"}";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    // A doctor key from an earlier run of the agent is still on disk.
    std::fs::write(store.data_dir.join("doctor.key"), [7u8; 32]).unwrap();
    let (code, report) = doctor(&store);
    let heard = String::from_utf8_lossy(&heard.lock().unwrap()).to_lowercase();
    assert!(!heard.is_empty(), "the doctor did knock on the port");
    assert!(
        !heard.contains(token) && !heard.contains("authorization"),
        "the doctor sent a secret to whatever listened: {heard}"
    );
    let agent = finding(&report, "agent");
    assert_eq!(agent["status"], "fail", "{agent:#}");
    assert!(
        agent["detail"].as_str().unwrap().contains("did not prove"),
        "{agent:#}"
    );
    assert_eq!(code, 2);
}

#[test]
fn the_doctor_reads_the_running_agents_full_health_with_its_key_and_no_token() {
    let store = Store::new();
    import_every_stream(&store);
    fixed_port(&store);
    let agent = store.start();
    let (_code, report) = doctor(&store);
    let found = finding(&report, "agent");
    assert!(
        found["detail"].as_str().unwrap().contains("running on"),
        "{found:#}"
    );
    assert!(
        found["detail"].as_str().unwrap().contains("version"),
        "{found:#}"
    );
    // Anyone else asking that route is refused.
    let (status, _) = agent.get_json("/v1/health/doctor");
    assert_eq!(status, 401);
}

#[test]
fn a_replica_with_streams_never_loaded_names_each_of_them_once() {
    let store = Store::new();
    store.import_ok(
        "products",
        "products.ndjson",
        &[product(&gtin14(400_638_133_393), "SKU-1", "Item")],
    );
    let (_, report) = doctor(&store);
    let replica = finding(&report, "replica");
    assert_eq!(replica["status"], "warn", "{replica:#}");
    let detail = replica["detail"].as_str().unwrap();
    for stream in ["prices", "stock", "customers", "reservations"] {
        assert_eq!(detail.matches(stream).count(), 1, "{stream} in {detail}");
    }
}

#[test]
fn a_box_with_the_packages_config_and_no_agent_id_is_called_not_provisioned() {
    let store = Store::new();
    let text = std::fs::read_to_string(&store.config).unwrap();
    let shipped: String = text
        .lines()
        .filter(|l| !l.starts_with("id = "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&store.config, shipped).unwrap();
    let (code, report) = doctor(&store);
    assert_eq!(code, 1, "{report:#}");
    let config = finding(&report, "config");
    assert!(
        config["detail"]
            .as_str()
            .unwrap()
            .contains("this box is not provisioned"),
        "{config:#}"
    );
    assert!(
        config["fix"]
            .as_str()
            .unwrap()
            .contains("sudo relais provision BUNDLE"),
        "{config:#}"
    );
}
