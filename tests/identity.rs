#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! `relais identity`, the box label: on a box provisioned by the real `relais provision` from a
//! bundle made as central ops makes one (rcgen fleet CA, client certificate with CN = agent id,
//! an ops key), the label names the agent, store, certificate and ops key; its PNG is a real
//! PNG whose QR code decodes back to the payload printed. An unprovisioned box gets 78.

mod common;

use common::{BIN, describe, run, status_code, stderr, stdout};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const AGENT: &str = "store-0042/till-1";
const BROKER: &str = "mqtts://broker.example.com:8883";
const NOT_AFTER: &str = "2031-05-17T00:00:00Z";

struct Cert {
    pem: String,
    key_pem: String,
    ca_pem: String,
}

/// A client certificate issued by a fleet CA, valid from `from` to `until` (y, m, d).
fn client_cert(cn: &str, from: (i32, u8, u8), until: (i32, u8, u8)) -> Cert {
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
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0xc0, 0xff, 0xee]));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    Cert {
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_pem: ca.pem(),
    }
}

/// A box provisioned by the real `relais provision`: (temp dir, config path, ops key id).
fn provisioned_box() -> (tempfile::TempDir, PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let cert = client_cert(AGENT, (2025, 1, 1), (2031, 5, 17));
    let (ops, _) = relais::fleet::SigningKey::generate().unwrap();
    let files: [(&str, Vec<u8>); 7] = [
        (
            "bundle.toml",
            format!("agent_id = \"{AGENT}\"\nbroker = \"{BROKER}\"\n").into_bytes(),
        ),
        ("ca.pem", cert.ca_pem.into_bytes()),
        ("client.pem", cert.pem.into_bytes()),
        ("client.key", cert.key_pem.into_bytes()),
        (
            "ops.pub",
            format!("{}\n", ops.public_key().to_line()).into_bytes(),
        ),
        (
            "api-tokens",
            b"till-1 c2VjcmV0LXRva2VuLWZvci10aWxsLTEtMDAwMDAw\n".to_vec(),
        ),
        (
            "card-hash.key",
            b"fleet-card-hash-key-of-32-bytes!".to_vec(),
        ),
    ];
    for (name, bytes) in files {
        std::fs::write(bundle.join(name), bytes).unwrap();
    }
    let config = tmp.path().join("relais.toml");
    let mut cmd = Command::new(BIN);
    cmd.arg("provision")
        .arg(&bundle)
        .arg("--config")
        .arg(&config)
        .arg("--secrets-dir")
        .arg(tmp.path().join("etc-relais"))
        .args(["--user", "nobody"]);
    let out = run(cmd);
    assert_eq!(status_code(&out), 0, "provision: {}", describe(&out));
    (tmp, config, ops.public_key().key_id().to_owned())
}

fn identity(config: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(config).arg("identity").args(extra);
    run(cmd)
}

/// The text of the one QR code in a PNG, read back with a decoder that shares no code with
/// the encoder.
fn decode_png(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let (w, h) = (info.width as usize, info.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "expected exactly one QR code in the PNG");
    grids[0].decode().unwrap().1
}

/// The text of the terminal QR code, drawn as it shows on a terminal's dark background:
/// a drawn half block is a light module, a blank one dark.
fn decode_terminal(text: &str) -> String {
    let rows: Vec<Vec<char>> = text
        .lines()
        .filter(|l| l.contains('█') && l.chars().all(|c| matches!(c, '█' | '▀' | '▄' | ' ')))
        .map(|l| l.chars().collect())
        .collect();
    const SCALE: usize = 4;
    let (w, h) = (rows[0].len() * SCALE, rows.len() * 2 * SCALE);
    let mut pixels = vec![0u8; w * h];
    for (r, row) in rows.iter().enumerate() {
        for (x, c) in row.iter().enumerate() {
            let (top, bottom) = match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (false, false),
            };
            for (half, lit) in [(0, top), (1, bottom)] {
                if !lit {
                    continue;
                }
                for y in (2 * r + half) * SCALE..(2 * r + half + 1) * SCALE {
                    pixels[y * w + x * SCALE..y * w + (x + 1) * SCALE].fill(255);
                }
            }
        }
    }
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    let grids = image.detect_grids();
    assert_eq!(
        grids.len(),
        1,
        "expected exactly one QR code on the terminal"
    );
    grids[0].decode().unwrap().1
}

#[test]
fn the_label_of_a_provisioned_box_names_its_agent_store_certificate_and_ops_key_and_its_png_decodes_to_the_payload()
 {
    let (tmp, config, key_id) = provisioned_box();
    let png_path = tmp.path().join("label.png");
    let out = identity(&config, &["--png", png_path.to_str().unwrap()]);
    assert_eq!(status_code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("agent        {AGENT}")), "{text}");
    assert!(text.contains("store        store-0042"), "{text}");
    assert!(text.contains(&format!("broker       {BROKER}")), "{text}");
    assert!(text.contains(&format!("subject    CN={AGENT}")), "{text}");
    assert!(text.contains("issuer     CN=Relais fleet CA"), "{text}");
    assert!(text.contains("serial     01c0ffee"), "{text}");
    assert!(
        text.contains(&format!("not after  {NOT_AFTER} (")),
        "{text}"
    );
    assert!(text.contains("days left)"), "{text}");
    assert!(text.contains(&key_id), "the ops key id is missing: {text}");
    assert!(
        !text.contains("MISMATCH") && !text.contains("EXPIRED"),
        "{text}"
    );
    // The terminal code: rows of half blocks.
    assert!(
        text.lines()
            .filter(|l| l.contains('▀') || l.contains('▄'))
            .count()
            > 10,
        "{text}"
    );
    assert!(!text.contains("PRIVATE KEY"), "{text}");

    let printed = text
        .lines()
        .find_map(|l| l.strip_prefix("QR payload: "))
        .unwrap_or_else(|| panic!("no payload line: {text}"));
    let decoded = decode_png(&png_path);
    assert_eq!(decoded, printed);
    assert_eq!(decode_terminal(&text), printed);
    let payload: Value = serde_json::from_str(&decoded).unwrap();
    assert_eq!(payload["v"], 1);
    assert_eq!(payload["agent"], AGENT);
    assert_eq!(payload["store"], "store-0042");
    assert_eq!(payload["subject"], format!("CN={AGENT}"));
    assert_eq!(payload["not_after"], NOT_AFTER);
    assert_eq!(payload["ops_keys"], serde_json::json!([key_id]));
    assert_eq!(payload["broker"], BROKER);
    // Nothing but the label: no temp file beside it.
    assert!(!tmp.path().join("label.png.tmp").exists());

    let json = identity(&config, &["--json"]);
    assert_eq!(status_code(&json), 0, "{}", describe(&json));
    let id: Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(id["agent_id"], AGENT);
    assert_eq!(id["certificate"]["state"], "read");
    assert_eq!(id["certificate"]["expired"], false);
    assert!(id["certificate"]["days_left"].as_i64().unwrap() > 0);
}

#[test]
fn an_unprovisioned_box_is_told_so_with_exit_78_and_no_label_is_written() {
    let store = common::Store::new();
    let png_path = store.path("label.png");
    let out = identity(&store.config, &["--png", png_path.to_str().unwrap()]);
    assert_eq!(status_code(&out), 78, "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("this box is not provisioned") && err.contains("relais provision"),
        "{err}"
    );
    assert_eq!(stdout(&out), "");
    assert!(!png_path.exists());
}

#[test]
fn an_expired_certificate_and_a_missing_ops_key_file_are_each_called_out_on_the_label() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = client_cert(AGENT, (2020, 1, 1), (2024, 1, 1));
    std::fs::write(tmp.path().join("client.pem"), cert.pem).unwrap();
    std::fs::write(tmp.path().join("client.key"), cert.key_pem).unwrap();
    let config = tmp.path().join("relais.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nid = \"{AGENT}\"\ndata_dir = \"{data}\"\n\n[sync]\nbroker = \"{BROKER}\"\n\
             client_cert_file = \"client.pem\"\nclient_key_file = \"client.key\"\n\n\
             [fleet]\nops_public_keys_file = \"ops.pub\"\n",
            data = tmp.path().join("data").display()
        ),
    )
    .unwrap();
    let out = identity(&config, &[]);
    assert_eq!(status_code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("not after  2024-01-01T00:00:00Z: EXPIRED")
            && text.contains("relais provision"),
        "{text}"
    );
    assert!(text.contains("ops keys     UNREADABLE"), "{text}");

    std::fs::remove_file(tmp.path().join("client.pem")).unwrap();
    let out = identity(&config, &[]);
    assert_eq!(status_code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("certificate  MISSING"), "{text}");
    // The label still carries who the box is.
    assert!(text.contains(&format!("\"agent\":\"{AGENT}\"")), "{text}");
}
