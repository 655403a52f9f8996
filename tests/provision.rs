#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! `relais provision`: a bundle made the way central ops makes one (an rcgen fleet CA and a
//! client certificate with CN = agent id, an ops key from `relais::fleet`, tokens) is checked in
//! full, installed with the right modes and owner, merged into the config file, and a second
//! run changes nothing. A bad bundle is refused with exit 78 and nothing is written.

mod common;

use common::{BIN, describe, run, status_code, stdout};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const AGENT: &str = "store-0042/till-1";
const BROKER: &str = "mqtts://broker.example.com:8883";
const TOKENS: &str = "# tills\ntill-1 c2VjcmV0LXRva2VuLWZvci10aWxsLTEtMDAwMDAw\nback-office b2ZmaWNlLXRva2VuLXRoYXQtaXMtbG9uZy1lbm91Z2g\n";
/// Files are given to this account when the test runs as root (it exists on every Debian).
const USER: &str = "nobody";

/// The bundle's files by name.
fn bundle_files(cn: &str) -> BTreeMap<&'static str, Vec<u8>> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Relais fleet CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let (ops, _) = relais::fleet::SigningKey::generate().unwrap();
    let mut files = BTreeMap::new();
    files.insert(
        "bundle.toml",
        format!(
            "agent_id = \"{AGENT}\"\nbroker = \"{BROKER}\"\nsnapshot_url = \"https://central.example.com/snapshots/store-0042/manifest.json\"\n"
        )
        .into_bytes(),
    );
    files.insert("ca.pem", ca.pem().into_bytes());
    files.insert("client.pem", cert.pem().into_bytes());
    files.insert("client.key", key.serialize_pem().into_bytes());
    files.insert(
        "ops.pub",
        format!("# ops key\n{}\n", ops.public_key().to_line()).into_bytes(),
    );
    files.insert("api-tokens", TOKENS.as_bytes().to_vec());
    files.insert(
        "card-hash.key",
        b"fleet-card-hash-key-of-32-bytes!".to_vec(),
    );
    files
}

fn write_dir(dir: &Path, files: &BTreeMap<&'static str, Vec<u8>>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    dir.to_path_buf()
}

/// As ops would: `tar czf bundle.tar.gz store-0042_till-1/`.
fn write_tar_gz(path: &Path, files: &BTreeMap<&'static str, Vec<u8>>) -> PathBuf {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, format!("store-0042_till-1/{name}"), &bytes[..])
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
    path.to_path_buf()
}

/// A box: its /etc/relais (secrets and config) in a temp dir.
struct Box_ {
    tmp: tempfile::TempDir,
    etc: PathBuf,
    config: PathBuf,
}

impl Box_ {
    fn new() -> Box_ {
        let tmp = tempfile::tempdir().unwrap();
        let etc = tmp.path().join("etc-relais");
        let config = tmp.path().join("relais.toml");
        Box_ { tmp, etc, config }
    }

    fn provision(&self, bundle: &Path, extra: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("provision")
            .arg(bundle)
            .arg("--config")
            .arg(&self.config)
            .arg("--secrets-dir")
            .arg(&self.etc)
            .args(["--user", USER])
            .args(extra);
        run(cmd)
    }

    fn mode(&self, name: &str) -> u32 {
        std::fs::metadata(self.etc.join(name)).unwrap().mode() & 0o7777
    }

    /// Every file under the box's directories, with its content.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        for dir in [self.tmp.path(), self.etc.as_path()] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_file() {
                    out.insert(path.clone(), std::fs::read(&path).unwrap());
                }
            }
        }
        out
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn uid_of(user: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == user).then(|| f[2].parse().unwrap())
        })
        .unwrap()
}

#[test]
fn a_directory_bundle_is_installed_with_private_modes_and_merged_into_the_existing_config() {
    let b = Box_::new();
    std::fs::write(
        &b.config,
        "# store 42, till 1\n[agent]\nid = \"demo-store/relais\"\ndata_dir = \"/var/lib/relais\"\n\n[log]\nlevel = \"debug\"  # keep while commissioning\n",
    )
    .unwrap();
    let bundle = write_dir(&b.tmp.path().join("bundle"), &bundle_files(AGENT));
    let out = b.provision(&bundle, &[]);
    assert_eq!(status_code(&out), 0, "{}", describe(&out));
    assert!(
        stdout(&out).contains("systemctl restart relais"),
        "{}",
        describe(&out)
    );
    assert!(stdout(&out).contains("relais doctor"), "{}", describe(&out));

    // Trust anchors (the broker's CA, the ops keys) are root's: the service user reads them but
    // could never swap in a key of its own.
    for (name, mode, trust_anchor) in [
        ("client.key", 0o600, false),
        ("api-tokens", 0o600, false),
        ("card-hash.key", 0o600, false),
        ("ca.pem", 0o644, true),
        ("client.pem", 0o644, false),
        ("ops.pub", 0o640, true),
    ] {
        assert_eq!(b.mode(name), mode, "mode of {name}");
        if is_root() {
            let meta = std::fs::metadata(b.etc.join(name)).unwrap();
            let expected = if trust_anchor { 0 } else { uid_of(USER) };
            assert_eq!(meta.uid(), expected, "owner of {name}");
        }
    }
    assert_eq!(
        std::fs::read(b.etc.join("api-tokens")).unwrap(),
        TOKENS.as_bytes()
    );

    // The config validates as the agent would load it and names every installed file.
    let mut validate = Command::new(BIN);
    validate.args(["config", "validate"]).arg(&b.config);
    let valid = run(validate);
    assert_eq!(status_code(&valid), 0, "{}", describe(&valid));
    let text = std::fs::read_to_string(&b.config).unwrap();
    assert!(text.starts_with("# store 42, till 1\n"), "{text}");
    assert!(
        text.contains("level = \"debug\"  # keep while commissioning"),
        "{text}"
    );
    let table: toml::Table = text.parse().unwrap();
    let etc = |name: &str| b.etc.join(name).display().to_string();
    let expect = [
        ("agent", "id", AGENT.to_string()),
        ("agent", "data_dir", "/var/lib/relais".to_string()),
        ("api", "token_file", etc("api-tokens")),
        ("customers", "card_hash_key_file", etc("card-hash.key")),
        ("sync", "broker", BROKER.to_string()),
        ("sync", "ca_file", etc("ca.pem")),
        ("sync", "client_cert_file", etc("client.pem")),
        ("sync", "client_key_file", etc("client.key")),
        (
            "sync",
            "snapshot_url",
            "https://central.example.com/snapshots/store-0042/manifest.json".to_string(),
        ),
        ("fleet", "ops_public_keys_file", etc("ops.pub")),
    ];
    for (section, key, value) in expect {
        assert_eq!(
            table[section][key].as_str(),
            Some(value.as_str()),
            "{section}.{key} in\n{text}"
        );
    }
    // The previous config is kept for a rollback.
    let backups: Vec<_> = std::fs::read_dir(b.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("relais.toml.bak-"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(
        std::fs::read_to_string(b.tmp.path().join(&backups[0]))
            .unwrap()
            .contains("demo-store/relais")
    );
}

#[test]
fn provisioning_the_same_tar_gz_twice_changes_nothing_the_second_time() {
    let b = Box_::new();
    let bundle = write_tar_gz(&b.tmp.path().join("bundle.tar.gz"), &bundle_files(AGENT));
    let first = b.provision(&bundle, &[]);
    assert_eq!(status_code(&first), 0, "{}", describe(&first));
    // A new config file: created 0640, readable by the service user's group.
    assert_eq!(std::fs::metadata(&b.config).unwrap().mode() & 0o7777, 0o640);
    let inodes = |b: &Box_| -> Vec<u64> {
        b.snapshot()
            .keys()
            .map(|p| std::fs::metadata(p).unwrap().ino())
            .collect()
    };
    let before = b.snapshot();
    let before_inodes = inodes(&b);

    let second = b.provision(&bundle, &[]);
    assert_eq!(status_code(&second), 0, "{}", describe(&second));
    assert!(
        stdout(&second).contains("unchanged: this box already holds this bundle"),
        "{}",
        describe(&second)
    );
    assert_eq!(b.snapshot(), before, "the second run changed files");
    assert_eq!(inodes(&b), before_inodes, "the second run rewrote files");
}

#[test]
fn a_new_bundle_replaces_what_changed_and_keeps_the_previous_files_as_backups() {
    let b = Box_::new();
    let mut files = bundle_files(AGENT);
    let first = b.provision(&write_dir(&b.tmp.path().join("b1"), &files), &[]);
    assert_eq!(status_code(&first), 0, "{}", describe(&first));
    let old_config = std::fs::read_to_string(&b.config).unwrap();

    files.insert(
        "bundle.toml",
        format!("agent_id = \"{AGENT}\"\nbroker = \"mqtts://broker-2.example.com:8883\"\n")
            .into_bytes(),
    );
    files.insert(
        "api-tokens",
        b"till-1 bmV3LXRva2VuLWFmdGVyLXJvdGF0aW9uLTAwMDAw\n".to_vec(),
    );
    let second = b.provision(&write_dir(&b.tmp.path().join("b2"), &files), &[]);
    assert_eq!(status_code(&second), 0, "{}", describe(&second));
    let text = std::fs::read_to_string(&b.config).unwrap();
    assert!(text.contains("mqtts://broker-2.example.com:8883"), "{text}");
    // The snapshot URL of the first bundle stays: a bundle without one does not remove it.
    assert!(text.contains("snapshot_url"), "{text}");
    let names: Vec<String> = b
        .snapshot()
        .keys()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let backup_of = |prefix: &str| {
        b.snapshot()
            .into_iter()
            .find(|(p, _)| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{prefix}.bak-"))
            })
            .unwrap_or_else(|| panic!("no backup of {prefix} in {names:?}"))
            .1
    };
    assert_eq!(backup_of("relais.toml"), old_config.as_bytes());
    assert_eq!(backup_of("api-tokens"), TOKENS.as_bytes());
    // Unchanged files get no backup.
    assert!(
        !names.iter().any(|n| n.starts_with("client.key.bak-")),
        "{names:?}"
    );
    assert_eq!(b.mode("api-tokens"), 0o600);
}

#[test]
fn a_dry_run_checks_the_bundle_and_writes_nothing() {
    let b = Box_::new();
    let bundle = write_tar_gz(&b.tmp.path().join("bundle.tar.gz"), &bundle_files(AGENT));
    let before = b.snapshot();
    let out = b.provision(&bundle, &["--dry-run"]);
    assert_eq!(status_code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("would create"), "{text}");
    assert!(text.contains("sync.broker"), "{text}");
    assert!(text.contains("nothing was written"), "{text}");
    assert_eq!(b.snapshot(), before);
    assert!(!b.etc.exists());
}

/// Refused with exit 78, the message naming `needle`, and not a byte written.
fn assert_refused(files: BTreeMap<&'static str, Vec<u8>>, needle: &str) {
    let b = Box_::new();
    std::fs::write(&b.config, "[log]\nlevel = \"info\"\n").unwrap();
    let bundle = write_tar_gz(&b.tmp.path().join("bundle.tar.gz"), &files);
    let before = b.snapshot();
    let out = b.provision(&bundle, &[]);
    assert_eq!(status_code(&out), 78, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(needle),
        "expected {needle:?} in {}",
        describe(&out)
    );
    assert!(err.contains("nothing was installed"), "{}", describe(&out));
    assert_eq!(b.snapshot(), before, "a refused bundle wrote files");
    assert!(!b.etc.exists(), "a refused bundle created the secrets dir");
}

#[test]
fn a_bundle_with_a_too_short_token_is_refused_with_exit_78_and_nothing_is_written() {
    let mut files = bundle_files(AGENT);
    files.insert("api-tokens", b"till-1 short\n".to_vec());
    assert_refused(files, "the token is too short");
}

#[test]
fn a_bundle_with_an_unparseable_certificate_is_refused_with_exit_78_and_nothing_is_written() {
    let mut files = bundle_files(AGENT);
    files.insert(
        "client.pem",
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
            .to_vec(),
    );
    assert_refused(files, "client.pem: not a valid X.509 certificate");
}

#[test]
fn a_certificate_issued_for_another_agent_is_refused() {
    assert_refused(
        bundle_files("store-0042/till-2"),
        "CN \"store-0042/till-2\"",
    );
}

#[test]
fn a_key_that_does_not_belong_to_the_certificate_is_refused() {
    let mut files = bundle_files(AGENT);
    let other = bundle_files(AGENT);
    files.insert("client.key", other["client.key"].clone());
    assert_refused(files, "client.key does not belong to client.pem");
}

#[test]
fn a_missing_service_user_is_named_with_how_to_create_it() {
    if !is_root() {
        println!("skipped: only root gives files to the service user");
        return;
    }
    let b = Box_::new();
    let bundle = write_dir(&b.tmp.path().join("bundle"), &bundle_files(AGENT));
    let mut cmd = Command::new(BIN);
    cmd.arg("provision")
        .arg(&bundle)
        .arg("--config")
        .arg(&b.config)
        .arg("--secrets-dir")
        .arg(&b.etc)
        .args(["--user", "no-such-relais-user"]);
    let out = run(cmd);
    assert_eq!(status_code(&out), 1, "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("systemd-sysusers"),
        "{}",
        describe(&out)
    );
    assert!(!b.etc.exists() && !b.config.exists());
}

/// The box's secrets directory after a refused run holds nothing.
fn assert_refused_with(b: &Box_, bundle: &Path, needle: &str) {
    let out = b.provision(bundle, &[]);
    assert_eq!(status_code(&out), 78, "{}", describe(&out));
    let text = format!("{}{}", stdout(&out), common::stderr(&out));
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
    assert!(!b.etc.join("api-tokens").exists(), "nothing was installed");
}

#[test]
fn a_directory_bundle_with_a_link_to_a_root_only_file_a_device_or_a_pipe_is_refused() {
    let files = bundle_files(AGENT);
    // A link to a file only root may read, which provisioning (as root) would have installed
    // for the service user.
    let b = Box_::new();
    let bundle = write_dir(&b.tmp.path().join("bundle-link"), &files);
    std::fs::remove_file(bundle.join("api-tokens")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", bundle.join("api-tokens")).unwrap();
    assert_refused_with(&b, &bundle, "is a link");
    // A link to a device that never ends.
    let b = Box_::new();
    let bundle = write_dir(&b.tmp.path().join("bundle-dev"), &files);
    std::fs::remove_file(bundle.join("ca.pem")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", bundle.join("ca.pem")).unwrap();
    assert_refused_with(&b, &bundle, "is a link");
    // A named pipe nobody writes to: refused at once, not waited on.
    let b = Box_::new();
    let bundle = write_dir(&b.tmp.path().join("bundle-fifo"), &files);
    std::fs::remove_file(bundle.join("ops.pub")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        bundle.join("ops.pub"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    assert_refused_with(&b, &bundle, "not a regular file");
}

#[test]
fn a_small_tar_gz_that_expands_to_a_huge_long_name_is_refused_before_it_fills_memory() {
    let b = Box_::new();
    let path = b.tmp.path().join("bomb.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::best(),
    );
    let mut tar = tar::Builder::new(gz);
    // A GNU long-name record of 256 MB of zeros: the tar reader buffers a long name whole.
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_path("././@LongLink").unwrap();
    header.set_size(256 << 20);
    header.set_cksum();
    tar.append(&header, std::io::Read::take(std::io::repeat(0), 256 << 20))
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 1 << 20, "the archive is small: {size} bytes");
    let started = std::time::Instant::now();
    assert_refused_with(&b, &path, "expands past");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn an_entry_name_with_terminal_escapes_is_printed_escaped() {
    let b = Box_::new();
    let mut files = bundle_files(AGENT);
    files.insert("notes\u{1b}[2J\u{1b}[31mREAD ME", b"x".to_vec());
    let bundle = write_tar_gz(&b.tmp.path().join("escapes.tar.gz"), &files);
    let out = b.provision(&bundle, &["--dry-run"]);
    let text = format!("{}{}", stdout(&out), common::stderr(&out));
    assert!(
        !text.contains('\u{1b}'),
        "a raw escape reached the terminal: {text:?}"
    );
    assert!(text.contains("\\u{1b}[2J"), "{text}");
}

/// A complete, valid bundle for `agent` (its own CA, a certificate with CN = `agent`).
fn bundle_files_for(agent: &str) -> BTreeMap<&'static str, Vec<u8>> {
    let mut files = bundle_files(agent);
    files.insert(
        "bundle.toml",
        format!("agent_id = \"{agent}\"\nbroker = \"{BROKER}\"\n").into_bytes(),
    );
    files
}

fn agent_id_in(config: &Path) -> String {
    let table: toml::Table = std::fs::read_to_string(config).unwrap().parse().unwrap();
    table["agent"]["id"].as_str().unwrap().to_owned()
}

#[test]
fn another_tills_valid_bundle_is_refused_on_this_box_and_changes_nothing_without_replace_identity()
{
    let b = Box_::new();
    let mine = b.provision(
        &write_dir(&b.tmp.path().join("till-1"), &bundle_files(AGENT)),
        &[],
    );
    assert_eq!(status_code(&mine), 0, "{}", describe(&mine));
    let before = b.snapshot();

    // till-2's bundle is valid in every respect: only the box's identity says it is wrong here.
    let till_2 = write_dir(
        &b.tmp.path().join("till-2"),
        &bundle_files_for("store-0042/till-2"),
    );
    let refused = b.provision(&till_2, &[]);
    assert_eq!(status_code(&refused), 78, "{}", describe(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    for needle in [
        "this box is store-0042/till-1",
        "the bundle is for store-0042/till-2",
        "--replace-identity",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    assert_eq!(b.snapshot(), before, "a refused bundle changed files");
    assert_eq!(agent_id_in(&b.config), AGENT);

    // A box that really becomes till-2 says so, and the output names the change.
    let replaced = b.provision(&till_2, &["--replace-identity"]);
    assert_eq!(status_code(&replaced), 0, "{}", describe(&replaced));
    assert!(
        stdout(&replaced).contains("changes from store-0042/till-1 to store-0042/till-2"),
        "{}",
        describe(&replaced)
    );
    assert_eq!(agent_id_in(&b.config), "store-0042/till-2");
}

#[test]
fn a_ca_that_did_not_issue_the_client_certificate_is_refused() {
    let b = Box_::new();
    let mut files = bundle_files(AGENT);
    // The CA of another fleet: a valid CA, a valid certificate, but not each other's.
    files.insert("ca.pem", bundle_files(AGENT)["ca.pem"].clone());
    let out = b.provision(&write_dir(&b.tmp.path().join("bundle"), &files), &[]);
    assert_eq!(status_code(&out), 78, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ca.pem did not issue client.pem"),
        "{}",
        describe(&out)
    );
    assert!(!b.config.exists(), "nothing is written");

    // The same files with their own CA pass, and the check says so.
    let ok = b.provision(
        &write_dir(&b.tmp.path().join("good"), &bundle_files(AGENT)),
        &["--dry-run"],
    );
    assert_eq!(status_code(&ok), 0, "{}", describe(&ok));
    assert!(
        stdout(&ok).contains("issued by ca.pem for TLS clients"),
        "{}",
        describe(&ok)
    );
}

#[test]
fn the_bundle_sets_the_delivery_mode_and_a_box_without_one_acks_end_to_end() {
    let show_ack = |config: &Path| {
        let mut cmd = Command::new(BIN);
        cmd.args(["--config"]).arg(config).args(["config", "show"]);
        let out = run(cmd);
        assert_eq!(status_code(&out), 0, "{}", describe(&out));
        stdout(&out)
            .lines()
            .find(|l| l.trim_start().starts_with("ack "))
            .unwrap_or_default()
            .to_owned()
    };
    // No `ack` in the bundle: the box deletes a fact only on central's end-to-end ack.
    let plain = Box_::new();
    let out = plain.provision(
        &write_dir(&plain.tmp.path().join("b"), &bundle_files(AGENT)),
        &[],
    );
    assert_eq!(status_code(&out), 0, "{}", describe(&out));
    assert!(
        show_ack(&plain.config).contains("\"central\""),
        "{}",
        show_ack(&plain.config)
    );

    // A bundle may set it, and the config then says it explicitly.
    let b = Box_::new();
    let mut files = bundle_files(AGENT);
    files.insert(
        "bundle.toml",
        format!("agent_id = \"{AGENT}\"\nbroker = \"{BROKER}\"\nack = \"puback\"\n").into_bytes(),
    );
    let out = b.provision(&write_dir(&b.tmp.path().join("b"), &files), &[]);
    assert_eq!(status_code(&out), 0, "{}", describe(&out));
    assert!(
        stdout(&out).contains("a broker crash can lose them"),
        "{}",
        describe(&out)
    );
    let table: toml::Table = std::fs::read_to_string(&b.config).unwrap().parse().unwrap();
    assert_eq!(table["sync"]["ack"].as_str(), Some("puback"));

    // A mode that does not exist is refused, naming the two that do.
    files.insert(
        "bundle.toml",
        format!("agent_id = \"{AGENT}\"\nbroker = \"{BROKER}\"\nack = \"qos2\"\n").into_bytes(),
    );
    let bad = Box_::new();
    let out = bad.provision(&write_dir(&bad.tmp.path().join("b"), &files), &[]);
    assert_eq!(status_code(&out), 78, "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be \"central\""),
        "{}",
        describe(&out)
    );
}
