//! Firmware profiles: every shipped file loads, the loader refuses what the schema forbids
//! (naming the key), hashes follow the bytes, and matching prefers the specific profile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use relais::devices::rfid::m100;
use relais::profiles::{DeviceKind, Profile, ProfileError, Profiles, SerialIdentity};
use std::path::{Path, PathBuf};

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles")
}

fn load_shipped() -> Profiles {
    let loaded = Profiles::load_dir(&shipped_dir()).expect("firmware-profiles is readable");
    let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "invalid shipped profiles:\n{}",
        errors.join("\n")
    );
    loaded.profiles
}

const SERIAL_OK: &str = r#"
[profile]
id = "acme-1000"
name = "Acme 1000"
version = "1.2.0"
vendor = "Acme"
model = "1000"
kind = "serial_scanner"

[match]
usb_vid_pid = ["1234:5678"]

[transport]
baud = 115200

[framing]
terminator = "\r\n"
aim_ids = true
gs_substitute = "^"
"#;

fn parse(name: &str, text: &str) -> Result<Profile, ProfileError> {
    Profile::from_bytes(
        Path::new(&format!("/profiles/{name}.toml")),
        text.as_bytes(),
    )
}

#[test]
fn every_shipped_profile_is_valid() {
    let profiles = load_shipped();
    let toml_files = std::fs::read_dir(shipped_dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count();
    assert_eq!(profiles.len(), toml_files);
    for p in profiles.iter() {
        assert_eq!(p.sha256.len(), 64, "{}", p.id);
        // Shipped profiles carry no uncited command: every command has a source by
        // construction; only the M100 module profile ships commands.
        for c in p.init.iter().chain(p.health.iter().map(|h| &h.command)) {
            assert!(!c.source.is_empty());
        }
        if p.id != "magicrf-m100" {
            assert!(p.init.is_empty() && p.health.is_none(), "{}", p.id);
        }
    }
    let module = profiles.get("magicrf-m100").unwrap();
    assert_eq!(module.kind, DeviceKind::RfidSerialReader);
    assert!(module.matching.fallback);
    assert_eq!(module.transport.as_ref().unwrap().to_string(), "115200 8N1");
    assert!(module.framing.is_none());
    // The commands are the ones the M100 codec encodes, byte for byte.
    assert_eq!(module.init[0].send, m100::stop_poll());
    assert_eq!(
        module.health.as_ref().unwrap().command.send,
        m100::module_info(m100::InfoKind::Hardware)
    );
    for id in ["serial-scanner-cr", "pcsc-contactless-generic"] {
        assert!(
            profiles.get(id).is_some_and(|p| p.matching.fallback),
            "generic profile {id} missing"
        );
    }
    let generic = profiles.get("serial-scanner-cr").unwrap();
    let t = generic.transport.as_ref().unwrap();
    assert_eq!(t.to_string(), "9600 8N1");
    assert_eq!(generic.framing.as_ref().unwrap().terminator, b"\r");
}

#[test]
fn a_valid_profile_parses_with_defaults() {
    let p = parse("acme-1000", SERIAL_OK).unwrap();
    assert_eq!(p.kind, DeviceKind::SerialScanner);
    let t = p.transport.unwrap();
    assert_eq!((t.baud, t.data_bits, t.stop_bits), (115_200, 8, 1));
    let f = p.framing.unwrap();
    assert_eq!(f.terminator, b"\r\n");
    assert_eq!(f.gs_substitute.as_deref(), Some(&b"^"[..]));
    assert_eq!((f.max_frame_bytes, f.inter_byte_timeout_ms), (4096, 200));
    assert_eq!(p.version, "1.2.0");
}

#[test]
fn an_init_command_without_source_is_rejected_naming_the_key() {
    let text = format!("{SERIAL_OK}\n[[init]]\nsend_hex = \"16 4D 0D\"\ndescription = \"x\"\n");
    let err = parse("acme-1000", &text).unwrap_err();
    assert_eq!(err.key(), Some("init[0].source"), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("acme-1000.toml"), "{msg}");
    assert!(msg.contains("init[0].source"), "{msg}");
    assert!(msg.contains("manual"), "{msg}");

    // A vague citation is refused too; a full one is accepted.
    let vague = format!("{SERIAL_OK}\n[[init]]\nsend = \"X\"\nsource = \"the manual\"\n");
    assert_eq!(
        parse("acme-1000", &vague).unwrap_err().key(),
        Some("init[0].source")
    );
    let cited = format!(
        "{SERIAL_OK}\n[[init]]\nsend = \"X\"\nsource = \"Acme 1000 Guide, AC-1000-UG rev B, \
         section 4.2 p. 31\"\n[health]\nsend = \"Y\"\n"
    );
    let err = parse("acme-1000", &cited).unwrap_err();
    assert_eq!(err.key(), Some("health.source"), "{err}");
}

#[test]
fn an_unknown_key_is_rejected_naming_it() {
    let text = SERIAL_OK.replace("aim_ids = true", "aim_ids = true\nterminater = \"\\r\"");
    let err = parse("acme-1000", &text).unwrap_err();
    let msg = err.to_string();
    assert!(err.key().is_some_and(|k| k.contains("framing")), "{msg}");
    assert!(msg.contains("terminater"), "{msg}");

    let top = format!("{SERIAL_OK}\n[extras]\nx = 1\n");
    let msg = parse("acme-1000", &top).unwrap_err().to_string();
    assert!(msg.contains("extras"), "{msg}");
}

#[test]
fn bad_values_name_key_and_fix() {
    let cases = [
        ("1234:5678", "12345678", "match.usb_vid_pid[0]"),
        ("baud = 115200", "baud = 7", "transport.baud"),
        (
            "version = \"1.2.0\"",
            "version = \"latest\"",
            "profile.version",
        ),
        (
            "gs_substitute = \"^\"",
            "gs_substitute = \"\\r\"",
            "framing.gs_substitute",
        ),
        ("id = \"acme-1000\"", "id = \"acme-2000\"", "profile.id"),
    ];
    for (from, to, key) in cases {
        let err = parse("acme-1000", &SERIAL_OK.replace(from, to)).unwrap_err();
        assert_eq!(err.key(), Some(key), "{from} -> {to}: {err}");
    }
    // A rule for another kind of device.
    let text = SERIAL_OK.replace("[match]", "[match]\nllrp_vendor = 25882");
    assert_eq!(
        parse("acme-1000", &text).unwrap_err().key(),
        Some("match.llrp_vendor")
    );
    // Syntax errors carry the line.
    let err = parse("acme-1000", "[profile\nid = 1").unwrap_err();
    assert!(
        matches!(err, ProfileError::Syntax { line: Some(1), .. }),
        "{err}"
    );
}

#[test]
fn the_content_hash_follows_the_file_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme-1000.toml");
    std::fs::write(&path, SERIAL_OK).unwrap();
    let a = Profile::load_file(&path).unwrap();
    std::fs::write(&path, SERIAL_OK).unwrap();
    let same = Profile::load_file(&path).unwrap();
    std::fs::write(&path, SERIAL_OK.replace("1.2.0", "1.2.1")).unwrap();
    let b = Profile::load_file(&path).unwrap();
    assert_eq!(a.sha256, same.sha256);
    assert_ne!(a.sha256, b.sha256);
    assert_eq!(b.version, "1.2.1");
    // sha256 of the bytes, as `sha256sum` prints it.
    assert_eq!(a.sha256, relais::profiles::sha256_hex(SERIAL_OK.as_bytes()));
}

#[test]
fn a_bad_file_is_reported_and_the_others_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("acme-1000.toml"), SERIAL_OK).unwrap();
    std::fs::write(dir.path().join("broken.toml"), "[profile]\nid = ").unwrap();
    std::fs::write(dir.path().join("README.md"), "not a profile").unwrap();
    std::fs::write(dir.path().join(".acme-1000.toml.swp"), "x").unwrap();
    let loaded = Profiles::load_dir(dir.path()).unwrap();
    assert_eq!(loaded.profiles.len(), 1);
    assert_eq!(loaded.errors.len(), 1);
    assert!(loaded.errors[0].file().ends_with("broken.toml"));
    assert!(Profiles::load_dir(&dir.path().join("missing")).is_err());
    // Reload = load again: a changed file gives a new hash and a new fingerprint.
    let before = loaded.profiles.fingerprint();
    std::fs::write(
        dir.path().join("acme-1000.toml"),
        SERIAL_OK.replace("1.2.0", "1.3.0"),
    )
    .unwrap();
    let again = Profiles::load_dir(dir.path()).unwrap();
    assert_ne!(again.profiles.fingerprint(), before);
}

#[test]
fn matching_prefers_the_specific_profile_over_the_generic_one() {
    let shipped = load_shipped();
    // Unknown USB serial device: the generic CR profile.
    let unknown = SerialIdentity {
        usb: Some((0x1111, 0x2222)),
        by_id: Some("usb-Foo_Bar-if00".into()),
    };
    assert_eq!(
        shipped.match_serial(&unknown).unwrap().id,
        "serial-scanner-cr"
    );
    assert_eq!(
        shipped.match_serial(&SerialIdentity::default()).unwrap().id,
        "serial-scanner-cr"
    );
    // A Honeywell vendor id: the vendor profile.
    let honeywell = SerialIdentity {
        usb: Some((0x0c2e, 0x0b61)),
        by_id: None,
    };
    assert_eq!(
        shipped.match_serial(&honeywell).unwrap().id,
        "honeywell-usb-serial"
    );

    // An exact vid:pid outranks the vendor-wide profile.
    let mut list: Vec<Profile> = shipped.iter().map(|p| (**p).clone()).collect();
    let exact = SERIAL_OK
        .replace("acme-1000", "honeywell-1900")
        .replace("1234:5678", "0c2e:0b61");
    list.push(parse("honeywell-1900", &exact).unwrap());
    let with_exact = Profiles::from_profiles(list).0;
    assert_eq!(
        with_exact.match_serial(&honeywell).unwrap().id,
        "honeywell-1900"
    );

    // PC/SC: the model profile by reader name, else the generic one.
    assert_eq!(
        shipped
            .match_pcsc("ACS ACR122U PICC Interface 00 00", None)
            .unwrap()
            .id,
        "acs-acr122u"
    );
    assert_eq!(
        shipped
            .match_pcsc(
                "ACS ACR1252 Dual Reader [ACR1252 Dual Reader PICC] 00 00",
                Some(&[0x3B, 0x80])
            )
            .unwrap()
            .id,
        "acs-acr1252u"
    );
    assert_eq!(
        shipped
            .match_pcsc("Identiv uTrust 3700 F CL Reader 00 00", None)
            .unwrap()
            .id,
        "pcsc-contactless-generic"
    );
    // LLRP: Impinj by its IANA number, anything else generic.
    assert_eq!(shipped.match_llrp(25882).unwrap().id, "impinj-llrp");
    assert_eq!(shipped.match_llrp(161).unwrap().id, "llrp-generic");
}

#[test]
fn atr_and_by_id_rules_add_specificity() {
    let base = r#"
[profile]
id = "ID"
name = "n"
version = "1.0"
vendor = "v"
model = "m"
kind = "pcsc_reader"
[match]
"#;
    let by_name = format!(
        "{}pcsc_reader_name = \"ACR122U\"\n",
        base.replace("ID", "a")
    );
    let by_atr = format!(
        "{}pcsc_reader_name = \"ACR122U\"\natr = \"3B 8F 80 01 80 4F 0C A0 00 00 03 06 ?? ?? ?? \
         00 00 00 00 ??\"\n",
        base.replace("ID", "b")
    );
    let (set, errors) = Profiles::from_profiles(vec![
        parse("a", &by_name).unwrap(),
        parse("b", &by_atr).unwrap(),
    ]);
    assert!(errors.is_empty());
    let atr = [
        0x3B, 0x8F, 0x80, 0x01, 0x80, 0x4F, 0x0C, 0xA0, 0x00, 0x00, 0x03, 0x06, 0x03, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x6A,
    ];
    assert_eq!(set.match_pcsc("ACS ACR122U", Some(&atr)).unwrap().id, "b");
    assert_eq!(
        set.match_pcsc("ACS ACR122U", Some(&[0x3B, 0x00]))
            .unwrap()
            .id,
        "a"
    );
    assert_eq!(set.match_pcsc("ACS ACR122U", None).unwrap().id, "a");
    assert!(set.match_pcsc("Other", None).is_none());

    // Serial by-id: a glob must match the by-id name.
    let glob = SERIAL_OK.replace(
        "usb_vid_pid = [\"1234:5678\"]",
        "serial_by_id = \"usb-Acme_1000*-if00\"",
    );
    let (set, _) = Profiles::from_profiles(vec![parse("acme-1000", &glob).unwrap()]);
    let hit = SerialIdentity {
        usb: None,
        by_id: Some("usb-Acme_1000_SN42-if00".into()),
    };
    assert_eq!(set.match_serial(&hit).unwrap().id, "acme-1000");
    let miss = SerialIdentity {
        usb: None,
        by_id: Some("usb-Acme_2000-if00".into()),
    };
    assert!(set.match_serial(&miss).is_none());
}

#[test]
fn duplicate_ids_are_refused() {
    let a = parse("acme-1000", SERIAL_OK).unwrap();
    let mut b = a.clone();
    b.file = PathBuf::from("/elsewhere/acme-1000.toml");
    let (set, errors) = Profiles::from_profiles(vec![a, b]);
    assert_eq!(set.len(), 1);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key(), Some("profile.id"));
}

#[test]
fn a_uhf_serial_module_profile_needs_a_transport_refuses_framing_and_matches_its_own_kind_only() {
    const MODULE: &str = r#"
[profile]
id = "acme-uhf"
name = "Acme UHF module"
version = "1.0.0"
vendor = "Acme"
model = "U1"
kind = "rfid_serial_reader"

[match]
usb_vid_pid = ["10c4:ea60"]
serial_by_id = "usb-Acme_UHF*"

[transport]
baud = 115200
"#;
    let p = parse("acme-uhf", MODULE).unwrap();
    assert_eq!(p.kind, DeviceKind::RfidSerialReader);
    assert_eq!(p.transport.as_ref().unwrap().to_string(), "115200 8N1");

    let framed = format!("{MODULE}\n[framing]\nterminator = \"\\r\"\n");
    assert_eq!(
        parse("acme-uhf", &framed).unwrap_err().key(),
        Some("framing")
    );
    let bare = MODULE.replace("[transport]\nbaud = 115200\n", "");
    assert_eq!(
        parse("acme-uhf", &bare).unwrap_err().key(),
        Some("transport")
    );

    let mut list = vec![p];
    list.extend(load_shipped().iter().map(|p| (**p).clone()));
    let (profiles, errors) = Profiles::from_profiles(list);
    assert!(errors.is_empty());
    let port = SerialIdentity {
        usb: Some((0x10c4, 0xea60)),
        by_id: Some("usb-Acme_UHF_U1_0001-if00-port0".into()),
    };
    let kind = DeviceKind::RfidSerialReader;
    assert_eq!(
        profiles.match_serial_port(kind, &port).unwrap().id,
        "acme-uhf"
    );
    // Another port gets the fallback M100 profile; scanners never get a module profile.
    let other = SerialIdentity::default();
    assert_eq!(
        profiles.match_serial_port(kind, &other).unwrap().id,
        "magicrf-m100"
    );
    assert_eq!(
        profiles.match_serial(&port).unwrap().id,
        "serial-scanner-cr"
    );
}
