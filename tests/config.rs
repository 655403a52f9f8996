#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! `relais config validate|show` and config errors at startup, through the real binary.

mod common;

use common::{BIN, Store, describe, status_code, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn validate(path: &Path) -> Output {
    common::run({
        let mut c = Command::new(BIN);
        c.args(["config", "validate"]).arg(path);
        c
    })
}

/// A config file whose body is the standard test config with `edit` applied.
fn config_with(store: &Store, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(&store.config).expect("read config");
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit did not change the config");
    let path = store.path(name);
    std::fs::write(&path, edited).expect("write config");
    path
}

fn assert_config_error_naming(out: &Output, key: &str) {
    assert_eq!(status_code(out), 78, "expected exit 78: {}", describe(out));
    let err = stderr(out);
    assert!(err.contains(key), "stderr does not name `{key}`:\n{err}");
}

#[test]
fn a_valid_config_file_validates_with_exit_status_0() {
    let store = Store::new();
    let out = validate(&store.config);
    assert_eq!(status_code(&out), 0, "{}", describe(&out));
    assert!(stdout(&out).contains("valid"), "{}", describe(&out));
}

#[test]
fn an_unknown_key_exits_78_and_stderr_names_the_key() {
    let store = Store::new();
    let path = config_with(&store, "unknown.toml", |t| {
        t.replace("[api]\n", "[api]\nmax_body_byte = 2048\n")
    });
    assert_config_error_naming(&validate(&path), "api.max_body_byte");
}

#[test]
fn a_value_of_the_wrong_type_exits_78_and_stderr_names_the_key() {
    let store = Store::new();
    let path = config_with(&store, "type.toml", |t| {
        t.replace("[api]\n", "[api]\nmax_body_bytes = \"big\"\n")
    });
    assert_config_error_naming(&validate(&path), "api.max_body_bytes");
}

#[test]
fn an_out_of_range_value_exits_78_and_stderr_names_the_key() {
    let store = Store::new();
    let path = config_with(&store, "range.toml", |t| {
        t.replace("[replica]\n", "[replica]\nreaders = 99\n")
    });
    let out = validate(&path);
    assert_config_error_naming(&out, "replica.readers");
    assert!(
        stderr(&out).contains("99"),
        "the value found is not shown:\n{}",
        stderr(&out)
    );
}

#[test]
fn a_stale_after_below_one_minute_exits_78_and_stderr_names_the_key() {
    let store = Store::new();
    let path = config_with(&store, "stale.toml", |t| {
        t.replace("[replica]\n", "[replica]\nstale_after = \"30s\"\n")
    });
    assert_config_error_naming(&validate(&path), "replica.stale_after");
}

#[test]
fn a_listen_address_with_a_host_name_exits_78_and_stderr_names_the_key() {
    let store = Store::new();
    let path = config_with(&store, "listen.toml", |t| {
        t.replace("127.0.0.1:0", "localhost:8750")
    });
    assert_config_error_naming(&validate(&path), "api.listen");
}

#[test]
fn every_bad_value_of_a_file_is_reported_at_once() {
    let store = Store::new();
    let path = config_with(&store, "many.toml", |t| {
        t.replace("127.0.0.1:0", "nowhere")
            .replace("[replica]\n", "[replica]\nreaders = 0\n")
    });
    let out = validate(&path);
    assert_config_error_naming(&out, "api.listen");
    assert_config_error_naming(&out, "replica.readers");
}

#[test]
fn running_with_a_config_file_that_does_not_exist_exits_78() {
    let store = Store::new();
    let missing = store.path("missing.toml");
    let out = common::run({
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&missing).arg("run");
        c
    });
    assert_eq!(status_code(&out), 78, "{}", describe(&out));
    assert!(stderr(&out).contains("missing.toml"), "{}", describe(&out));
    assert!(
        !store.data_dir.exists(),
        "a data dir was created despite the config error"
    );
}

#[test]
fn running_with_an_invalid_config_exits_78_before_creating_the_data_dir() {
    let store = Store::new();
    let path = config_with(&store, "bad-run.toml", |t| {
        t.replace("[api]\n", "[api]\nmax_body_bytes = 1\n")
    });
    let out = common::run({
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&path).arg("run");
        c
    });
    assert_config_error_naming(&out, "api.max_body_bytes");
    assert!(!store.data_dir.exists());
}

#[test]
fn config_show_prints_toml_that_config_validate_accepts() {
    let store = Store::new();
    let out = store.relais(&["config", "show"]);
    assert_eq!(status_code(&out), 0, "{}", describe(&out));
    let shown = stdout(&out);
    assert!(
        shown.contains(&store.data_dir.display().to_string()),
        "{shown}"
    );
    assert!(shown.contains("test-store/agent-1"), "{shown}");
    // Defaults are filled in, and every value says where it came from.
    assert!(
        shown.contains("max_body_bytes = 65536  # default"),
        "{shown}"
    );
    assert!(shown.contains("\"test-store/agent-1\"  # file"), "{shown}");
    assert!(shown.contains("stale_after"), "{shown}");
    let path = store.path("shown.toml");
    std::fs::write(&path, &shown).expect("write");
    let again = validate(&path);
    assert_eq!(
        status_code(&again),
        0,
        "shown config rejected: {}\n{shown}",
        describe(&again)
    );
    // And it shows the same effective config a second time.
    let twice = common::run({
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&path).args(["config", "show"]);
        c
    });
    // Sources differ (the second file sets every key); the values may not.
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split("  # ").next().unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&stdout(&twice)), strip(&shown));
}

#[test]
fn a_uhf_serial_module_section_is_validated_shown_and_listed_with_its_profile() {
    let store = Store::new();
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles");
    let section = format!(
        "\n[devices]\nprofiles_dir = \"{}\"\n[[devices.rfid_serial]]\nname = \"fitting-room\"\npath = \"/dev/serial/by-id/usb-absent-module\"\ndebounce_window = \"4s\"\n",
        profiles.display()
    );
    let path = config_with(&store, "rfid.toml", |t| format!("{t}{section}"));
    let out = validate(&path);
    assert_eq!(status_code(&out), 0, "{}", describe(&out));

    let run = |args: &[&str]| {
        common::run({
            let mut c = Command::new(BIN);
            c.arg("--config").arg(&path).args(args);
            c
        })
    };
    let shown = stdout(&run(&["config", "show"]));
    assert!(shown.contains("[[devices.rfid_serial]]"), "{shown}");
    assert!(shown.contains("fitting-room"), "{shown}");

    let listed = run(&["devices", "list", "--json"]);
    assert_eq!(status_code(&listed), 0, "{}", describe(&listed));
    let json: serde_json::Value = serde_json::from_str(&stdout(&listed)).unwrap();
    let module = &json["configured"]["rfid_serial"][0];
    assert_eq!(module["name"], "fitting-room", "{json}");
    assert_eq!(module["present"], false, "{json}");
    assert!(
        module["profile"]
            .as_str()
            .is_some_and(|p| p.starts_with("magicrf-m100@1.0.0")),
        "{json}"
    );

    // A key the driver does not know is refused by name, like every other section.
    let bad = config_with(&store, "rfid-bad.toml", |t| {
        format!(
            "{t}{}",
            section.replace("debounce_window", "baud = 9600\ndebounce_window")
        )
    });
    assert_config_error_naming(&validate(&bad), "devices.rfid_serial[0]");
}

#[test]
fn per_stream_stale_after_is_shown_with_its_source_and_a_bad_one_exits_78_naming_its_key() {
    let store = Store::with(common::Settings {
        replica: "stale_after = { products = \"3d\", stock = \"45m\" }".into(),
        ..common::Settings::default()
    });
    let out = store.relais(&["config", "show"]);
    assert_eq!(status_code(&out), 0, "{}", describe(&out));
    let shown = stdout(&out);
    assert!(shown.contains("[replica.stale_after]\n"), "{shown}");
    assert!(shown.contains("products = \"3d\"  # file"), "{shown}");
    assert!(shown.contains("stock = \"45m\"  # file"), "{shown}");
    // The streams the file leaves out are shown at their defaults.
    assert!(shown.contains("prices = \"36h\""), "{shown}");
    assert!(shown.contains("reservations = \"2h\""), "{shown}");

    let path = config_with(&store, "bad-stream-limit.toml", |t| {
        t.replace("stock = \"45m\"", "stock = \"45 minutes-ish\"")
    });
    assert_config_error_naming(&validate(&path), "replica.stale_after.stock");
}
