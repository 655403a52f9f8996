#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::defaults;
use crate::config::validate::check_log_filter;
use crate::config::{
    AgentId, Config, ConfigError, ConfigProblem, ConfigSource, LogFormat, load_with_default,
};
use crate::replica::Stream;
use crate::replica::freshness::StaleAfter;

const ORIGIN: &str = "/etc/relais/relais.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new(ORIGIN))
}

fn problems(text: &str) -> Vec<ConfigProblem> {
    match parse(text) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected ConfigError::Invalid for {text:?}, got {other:?}"),
    }
}

fn only_problem(text: &str) -> ConfigProblem {
    let mut p = problems(text);
    assert_eq!(p.len(), 1, "{p:#?}");
    p.remove(0)
}

fn custom() -> &'static str {
    r#"
[agent]
id = "store-0042/till_2"
data_dir = "state"

[api]
listen = "[::1]:9000"
max_body_bytes = 1024

[replica]
stale_after = "1d 12h 30m"
readers = 16

[outbox]
group_commit_max = 1
telemetry_quota_rows = 0

[disk]
low_free_mb = 1048576

[customers]
card_hash_key_file = "/run/secrets/card \"hash\".key"

[log]
level = "info,relais::outbox=debug,hyper=off"
format = "json"
"#
}

#[test]
fn an_empty_file_gives_the_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c, Config::defaults());
    assert_eq!(c.agent.id.to_string(), "demo-store/relais");
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:8750");
    assert_eq!(c.api.max_body_bytes, 65_536);
    assert_eq!(c.replica.stale_after, StaleAfter::DEFAULT);
    assert_eq!(
        c.replica.stale_after.get(Stream::Products),
        Duration::from_secs(7 * 86_400)
    );
    assert_eq!(
        c.replica.stale_after.get(Stream::Stock),
        Duration::from_secs(2 * 3600)
    );
    assert_eq!(c.replica.readers, 2);
    assert_eq!(c.outbox.group_commit_max, 1024);
    assert_eq!(c.outbox.telemetry_quota_rows, 200_000);
    assert_eq!(c.outbox.history_keep, Duration::from_secs(7 * 86_400));
    assert_eq!(c.outbox.keys_keep, Duration::from_secs(7 * 86_400));
    assert_eq!(c.disk.low_free_mb, 256);
    assert_eq!(
        c.customers.card_hash_key_file,
        c.agent.data_dir.join("card-hash.key")
    );
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Text);
    assert!(c.agent.data_dir.is_absolute());
}

#[test]
fn empty_sections_also_give_the_defaults() {
    let text = "[agent]\n[api]\n[replica]\n[outbox]\n[disk]\n[customers]\n[log]\n";
    assert_eq!(parse(text).unwrap(), Config::defaults());
}

#[test]
fn the_defaults_round_trip_through_to_toml() {
    let c = Config::defaults();
    assert_eq!(parse(&c.to_toml()).unwrap(), c);
}

#[test]
fn a_fully_customised_config_round_trips_through_to_toml() {
    let c = parse(custom()).unwrap();
    assert_eq!(c.agent.id.store, "store-0042");
    assert_eq!(c.agent.data_dir, PathBuf::from("/etc/relais/state"));
    assert_eq!(c.api.listen.to_string(), "[::1]:9000");
    assert_eq!(
        c.replica.stale_after,
        StaleAfter::uniform(Duration::from_secs(36 * 3600 + 30 * 60))
    );
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(
        c.customers.card_hash_key_file,
        PathBuf::from("/run/secrets/card \"hash\".key")
    );
    let text = c.to_toml();
    // Rendered from another origin to prove no path in the output is relative.
    let again = Config::from_toml_str(&text, Path::new("/somewhere/else.toml")).unwrap();
    assert_eq!(again, c, "{text}");
}

#[test]
fn to_toml_lists_every_section_and_key_in_a_stable_order() {
    let text = Config::defaults().to_toml();
    let mut at = 0;
    for spec in defaults::KEYS {
        let header = format!("[{}]", spec.section);
        let h = text.find(&header).unwrap_or_else(|| panic!("{header}"));
        // Optional keys without a default (sync.broker, …) are listed commented out.
        let k = text[h..]
            .find(&format!("\n{} = ", spec.key))
            .or_else(|| text[h..].find(&format!("\n# {} = ", spec.key)))
            .unwrap_or_else(|| panic!("{}.{}", spec.section, spec.key))
            + h;
        assert!(k > at, "{}.{} out of order", spec.section, spec.key);
        at = k;
    }
    assert!(
        text.contains(
            "\n[replica.stale_after]\nproducts = \"7d\"\nprices = \"36h\"\nstock = \"2h\"\n"
        ),
        "{text}"
    );
    assert_eq!(text, Config::defaults().to_toml());
}

#[test]
fn an_unknown_key_is_named_with_its_section_and_line() {
    let p = only_problem("[api]\nlisten = \"127.0.0.1:1\"\nmax_body = 5\n");
    assert_eq!(p.key, "api.max_body");
    assert_eq!(p.location.map(|l| (l.line, l.column)), Some((3, 1)));
    assert!(p.message.contains("unknown key `max_body` in [api]"), "{p}");
    assert!(p.fix.contains("listen, max_body_bytes"), "{p}");
    let shown = parse("[api]\nmax_body = 5\n").unwrap_err().to_string();
    assert!(
        shown.contains("/etc/relais/relais.toml:2:1: api.max_body"),
        "{shown}"
    );
}

#[test]
fn an_unknown_section_lists_the_valid_sections() {
    let p = only_problem("[agent]\n\n[mqtt]\nhost = \"x\"\n");
    assert_eq!(p.key, "mqtt");
    assert_eq!(p.location.map(|l| l.line), Some(3));
    assert!(p.fix.contains("[agent], [api], [replica]"), "{p}");
}

#[test]
fn a_wrong_type_names_the_key_and_the_expected_type() {
    let p = only_problem("[api]\nmax_body_bytes = \"64k\"\n");
    assert_eq!(p.key, "api.max_body_bytes");
    assert!(p.message.contains("expected an integer"), "{p}");
    assert!(p.found.as_deref().unwrap().contains("\"64k\""), "{p}");
    assert_eq!(p.location.map(|l| (l.line, l.column)), Some((2, 18)));
    assert!(p.fix.contains("max_body_bytes = 65536"), "{p}");

    let p = only_problem("[replica]\nstale_after = 36\n");
    assert_eq!(p.key, "replica.stale_after");
    assert!(p.message.contains("expected a duration string"), "{p}");
}

#[test]
fn a_section_that_is_not_a_table_is_reported() {
    let p = only_problem("api = 3\n");
    assert_eq!(p.key, "api");
    assert!(p.message.contains("must be a table"), "{p}");
}

#[test]
fn an_out_of_range_value_names_key_value_and_range() {
    let p = only_problem("[api]\nmax_body_bytes = 12\n");
    assert_eq!(p.key, "api.max_body_bytes");
    assert_eq!(p.found.as_deref(), Some("12"));
    assert!(p.message.contains("1024..=16777216"), "{p}");
    assert_eq!(p.location.map(|l| (l.line, l.column)), Some((2, 18)));

    for (text, key, range) in [
        ("[replica]\nreaders = 0", "replica.readers", "1..=16"),
        ("[replica]\nreaders = 17", "replica.readers", "1..=16"),
        (
            "[outbox]\ngroup_commit_max = 65537",
            "outbox.group_commit_max",
            "1..=65536",
        ),
        (
            "[outbox]\ntelemetry_quota_rows = 100000001",
            "outbox.telemetry_quota_rows",
            "0..=100000000",
        ),
        (
            "[disk]\nlow_free_mb = 1048577",
            "disk.low_free_mb",
            "0..=1048576",
        ),
    ] {
        let p = only_problem(text);
        assert_eq!(p.key, key);
        assert!(p.message.contains(range), "{p}");
    }
}

#[test]
fn a_negative_size_is_an_out_of_range_value_not_a_type_error() {
    let p = only_problem("[disk]\nlow_free_mb = -1\n");
    assert_eq!(p.key, "disk.low_free_mb");
    assert!(p.message.contains("out of range"), "{p}");
}

#[test]
fn range_bounds_are_inclusive() {
    let c = parse(
        "[api]\nmax_body_bytes = 16777216\n[replica]\nreaders = 1\nstale_after = \"365d\"\n\
         [outbox]\ntelemetry_quota_rows = 100000000\n[disk]\nlow_free_mb = 0\n",
    )
    .unwrap();
    assert_eq!(c.api.max_body_bytes, 16_777_216);
    assert_eq!(
        c.replica.stale_after,
        StaleAfter::uniform(Duration::from_secs(365 * 86_400))
    );
    assert_eq!(c.disk.low_free_mb, 0);
    let c = parse("[replica]\nstale_after = \"1m\"\n").unwrap();
    assert_eq!(
        c.replica.stale_after,
        StaleAfter::uniform(Duration::from_secs(60))
    );
}

#[test]
fn a_bad_agent_id_is_rejected_with_the_reason() {
    let long = "a".repeat(65);
    for (id, why) in [
        ("nostore", "exactly one '/'"),
        ("a/b/c", "exactly one '/'"),
        ("/relais", "store part is empty"),
        ("store/", "agent part is empty"),
        ("store/re+lais", "'+'"),
        ("store/#", "'#'"),
        ("my store/relais", "' '"),
        ("stóre/relais", "'ó'"),
        (&format!("{long}/relais"), "65 characters"),
    ] {
        let p = only_problem(&format!("[agent]\nid = {id:?}\n"));
        assert_eq!(p.key, "agent.id");
        assert!(p.message.contains(why), "{id}: {p}");
        assert!(p.fix.contains("STORE/AGENT"), "{p}");
        assert_eq!(p.location.map(|l| l.line), Some(2));
    }
    let max = "a".repeat(64);
    let c = parse(&format!("[agent]\nid = \"{max}/A_z-9\"\n")).unwrap();
    assert_eq!(c.agent.id.store, max);
    assert_eq!(c.agent.id.agent, "A_z-9");
}

#[test]
fn agent_id_displays_as_store_slash_agent_and_parses_back() {
    let id: AgentId = "s-1/a_2".parse().unwrap();
    assert_eq!(id.to_string(), "s-1/a_2");
    assert!("s/a/b".parse::<AgentId>().is_err());
}

#[test]
fn a_bad_listen_address_explains_the_ip_port_form() {
    for bad in [
        "localhost:8750",
        "127.0.0.1",
        "8750",
        "::1:8750",
        "127.0.0.1:99999",
    ] {
        let p = only_problem(&format!("[api]\nlisten = {bad:?}\n"));
        assert_eq!(p.key, "api.listen");
        assert_eq!(p.found, Some(format!("{bad:?}")));
        assert!(p.fix.contains("IP:PORT"), "{p}");
        assert!(p.fix.contains("[::1]:8750"), "{p}");
    }
}

#[test]
fn a_bad_duration_is_rejected_and_so_are_out_of_range_ones() {
    let p = only_problem("[replica]\nstale_after = \"36 hours please\"\n");
    assert_eq!(p.key, "replica.stale_after");
    assert!(p.message.contains("not a duration"), "{p}");
    assert!(p.fix.contains("\"36h\""), "{p}");
    for short_or_long in ["59s", "366d", "0s"] {
        let p = only_problem(&format!("[replica]\nstale_after = {short_or_long:?}\n"));
        assert!(p.message.contains("1m..=365d"), "{p}");
    }
}

#[test]
fn malformed_toml_reports_file_line_and_column() {
    let err = parse("[agent]\nid = \"x/y\"\n[api\nlisten = 1\n").unwrap_err();
    match &err {
        ConfigError::Syntax { path, location, .. } => {
            assert_eq!(path, Path::new(ORIGIN));
            assert_eq!(location.map(|l| l.line), Some(3));
        }
        other => panic!("{other:?}"),
    }
    let shown = err.to_string();
    assert!(shown.starts_with("/etc/relais/relais.toml:3:"), "{shown}");
    assert!(shown.contains("malformed TOML"), "{shown}");
}

#[test]
fn all_validation_errors_are_collected_one_per_line() {
    let text = "[agent]\nid = \"bad id\"\ndata_dir = \"\"\n[api]\nlisten = \"nope\"\n\
                max_body_bytes = 1\n[replica]\nstale_after = \"soon\"\nreaders = 99\n\
                [log]\nlevel = \"loud\"\nformat = \"xml\"\n";
    let err = parse(text).unwrap_err();
    let keys: Vec<String> = err.problems().iter().map(|p| p.key.clone()).collect();
    assert_eq!(
        keys,
        [
            "agent.id",
            "agent.data_dir",
            "api.listen",
            "api.max_body_bytes",
            "replica.stale_after",
            "replica.readers",
            "log.level",
            "log.format"
        ]
    );
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 9, "{shown}");
    assert!(lines[0].contains("8 problems"), "{shown}");
    assert!(
        lines[4].starts_with("  /etc/relais/relais.toml:6:18: api.max_body_bytes"),
        "{shown}"
    );
}

#[test]
fn a_missing_explicit_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let err = Config::load(Some(&path)).unwrap_err();
    assert!(matches!(&err, ConfigError::Missing { path: p } if *p == path));
    let shown = err.to_string();
    assert!(shown.contains("nope.toml does not exist"), "{shown}");
    assert!(shown.contains("--config"), "{shown}");
}

#[test]
fn a_missing_default_file_falls_back_to_built_in_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let (c, source) = load_with_default(None, &dir.path().join("relais.toml")).unwrap();
    assert_eq!(source, ConfigSource::BuiltInDefaults);
    assert_eq!(c, Config::defaults());
}

#[test]
fn an_existing_default_file_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    std::fs::write(&path, "[agent]\nid = \"s/a\"\ndata_dir = \"data\"\n").unwrap();
    let (c, source) = load_with_default(None, &path).unwrap();
    assert_eq!(source, ConfigSource::File(path.clone()));
    assert_eq!(c.agent.id.to_string(), "s/a");
    assert_eq!(c.agent.data_dir, dir.path().join("data"));
}

#[test]
fn an_explicit_file_is_loaded_and_reported_as_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custom.toml");
    std::fs::write(&path, custom()).unwrap();
    let (c, source) = Config::load(Some(&path)).unwrap();
    assert_eq!(source, ConfigSource::File(path));
    assert_eq!(c.agent.data_dir, dir.path().join("state"));
}

#[test]
fn an_unreadable_file_is_reported_with_its_path_and_reason() {
    // A directory cannot be read as a file even by root, unlike mode 000.
    let dir = tempfile::tempdir().unwrap();
    let err = Config::load(Some(dir.path())).unwrap_err();
    assert!(matches!(&err, ConfigError::Unreadable { path, .. } if path == dir.path()));
    let shown = err.to_string();
    assert!(shown.contains(&dir.path().display().to_string()), "{shown}");
    assert!(shown.contains("cannot read config file"), "{shown}");

    let file = dir.path().join("latin1.toml");
    std::fs::write(&file, b"[log]\nlevel = \"\xe9\"\n").unwrap();
    assert!(matches!(
        Config::load(Some(&file)),
        Err(ConfigError::Unreadable { .. })
    ));
}

#[test]
fn relative_paths_resolve_against_the_config_file_directory() {
    let text = "[agent]\ndata_dir = \"./data/../state\"\n[customers]\ncard_hash_key_file = \"keys/card.key\"\n";
    let c = Config::from_toml_str(text, Path::new("/etc/relais/relais.toml")).unwrap();
    assert_eq!(c.agent.data_dir, PathBuf::from("/etc/relais/data/../state"));
    assert_eq!(
        c.customers.card_hash_key_file,
        PathBuf::from("/etc/relais/keys/card.key")
    );

    let c = Config::from_toml_str("[agent]\ndata_dir = \"d\"\n", Path::new("relais.toml")).unwrap();
    assert_eq!(c.agent.data_dir, std::env::current_dir().unwrap().join("d"));
}

#[test]
fn card_hash_key_file_defaults_inside_the_configured_data_dir() {
    let c = parse("[agent]\ndata_dir = \"/srv/relais\"\n").unwrap();
    assert_eq!(
        c.customers.card_hash_key_file,
        PathBuf::from("/srv/relais/card-hash.key")
    );
}

#[test]
fn empty_paths_are_rejected() {
    let p = problems("[agent]\ndata_dir = \"\"\n[customers]\ncard_hash_key_file = \"\"\n");
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["agent.data_dir", "customers.card_hash_key_file"]);
    assert!(p[0].message.contains("must not be empty"));
}

#[test]
fn the_default_data_dir_depends_on_root_and_xdg_state_home() {
    let cwd = Path::new("/home/op/work");
    let f = defaults::data_dir_for;
    assert_eq!(
        f(true, Some("/x".into()), Some(cwd)),
        PathBuf::from("/var/lib/relais")
    );
    assert_eq!(
        f(false, Some("/home/op/.local/state".into()), Some(cwd)),
        PathBuf::from("/home/op/.local/state/relais")
    );
    assert_eq!(
        f(false, Some("".into()), Some(cwd)),
        cwd.join("relais-data")
    );
    assert_eq!(
        f(false, Some("relative".into()), Some(cwd)),
        cwd.join("relais-data")
    );
    assert_eq!(f(false, None, Some(cwd)), cwd.join("relais-data"));
}

#[test]
fn log_level_accepts_levels_and_directive_lists() {
    for ok in [
        "error",
        "warn",
        "info",
        "debug",
        "trace",
        "INFO",
        "info,relais::outbox=debug",
        "relais=trace",
        "warn,hyper=off,relais::api=info",
    ] {
        assert_eq!(check_log_filter(ok), Ok(()), "{ok}");
        assert_eq!(
            parse(&format!("[log]\nlevel = {ok:?}\n"))
                .unwrap()
                .log
                .level,
            ok
        );
    }
}

#[test]
fn log_level_rejects_malformed_directives() {
    for bad in [
        "",
        "loud",
        "info,",
        ",info",
        "=debug",
        "relais=",
        "relais::outbox=verbose",
        "relais outbox=debug",
        "relais[span]=debug",
        "info, relais=debug",
    ] {
        assert!(check_log_filter(bad).is_err(), "{bad:?}");
        let p = only_problem(&format!("[log]\nlevel = {bad:?}\n"));
        assert_eq!(p.key, "log.level");
        assert!(p.fix.contains("info,relais::outbox=debug"), "{p}");
    }
}

#[test]
fn an_unknown_log_format_is_rejected() {
    let p = only_problem("[log]\nformat = \"JSON\"\n");
    assert_eq!(p.key, "log.format");
    assert!(p.fix.contains("\"json\""), "{p}");
}

#[test]
fn every_default_and_bound_fits_its_field_type() {
    for (d, lo, hi) in [
        defaults::MAX_BODY_BYTES,
        defaults::READERS,
        defaults::GROUP_COMMIT_MAX,
        defaults::TELEMETRY_QUOTA_ROWS,
        defaults::LOW_FREE_MB,
    ] {
        assert!(lo >= 0 && lo <= d && d <= hi);
        assert!(usize::try_from(hi).is_ok());
    }
}

#[test]
fn durations_render_in_their_largest_whole_unit() {
    use crate::config::render::duration;
    assert_eq!(duration(Duration::from_secs(36 * 3600)), "36h");
    assert_eq!(duration(Duration::from_secs(2 * 86_400)), "2d");
    assert_eq!(duration(Duration::from_secs(90)), "90s");
    assert_eq!(duration(Duration::from_secs(120)), "2m");
    assert_eq!(duration(Duration::from_millis(60_500)), "1m 500ms");
}

#[test]
fn the_exit_code_is_ex_config() {
    assert_eq!(ConfigError::EXIT_CODE, 78);
}

#[test]
fn a_sync_section_with_every_key_round_trips_through_to_toml() {
    let text = r#"
[sync]
broker = "mqtts://broker.example.com"
username = "store-0042/till_2"
ca_file = "/etc/relais/ca.pem"
client_cert_file = "/etc/relais/client.pem"
client_key_file = "/etc/relais/client.key"
keep_alive = "45s"
ack = "central"
ack_timeout = "2m"
batch_max_events = 2000
batch_max_bytes = 1048576
inflight_batches = 4
reconnect_max = "5m"
snapshot_url = "https://central.example/s/manifest.json"
"#;
    let c = parse(text).unwrap();
    let broker = c.sync.broker.clone().unwrap();
    assert_eq!(
        (broker.tls, broker.port),
        (true, 8883),
        "mqtts defaults to 8883"
    );
    assert_eq!(c.sync.ack, crate::config::AckMode::Central);
    let again = Config::from_toml_str(&c.to_toml(), Path::new("/x.toml")).unwrap();
    assert_eq!(again, c);
}

#[test]
fn every_bad_sync_setting_is_named_with_its_fix() {
    let p = problems(
        "[sync]\nbroker = \"http://broker:1883\"\nclient_cert_file = \"/c.pem\"\nack = \"never\"\n\
         batch_max_bytes = 16777216\nsnapshot_url = \"ftp://x\"\nkeep_alive = \"1s\"\n",
    );
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "sync.broker",
        "sync.client_cert_file",
        "sync.ack",
        "sync.batch_max_bytes",
        "sync.snapshot_url",
        "sync.keep_alive",
    ] {
        assert!(keys.contains(&key), "{key} missing from {p:#?}");
    }
    assert!(p.iter().all(|p| !p.fix.is_empty()));
}

#[test]
fn retention_periods_are_settable_down_to_one_second_for_tests_and_not_below() {
    let c = parse("[outbox]\nhistory_keep = \"1s\"\nkeys_keep = \"2h\"\n").unwrap();
    assert_eq!(c.outbox.history_keep, Duration::from_secs(1));
    assert_eq!(c.outbox.keys_keep, Duration::from_secs(7200));
    for key in ["history_keep", "keys_keep"] {
        let p = only_problem(&format!("[outbox]\n{key} = \"500ms\"\n"));
        assert_eq!(p.key, format!("outbox.{key}"));
    }
}

#[test]
fn the_scalar_stale_after_still_applies_to_every_stream() {
    let c = parse("[replica]\nstale_after = \"12h\"\n").unwrap();
    for stream in Stream::ALL {
        assert_eq!(
            c.replica.stale_after.get(stream),
            Duration::from_secs(12 * 3600)
        );
    }
    assert!(
        c.to_toml()
            .contains("[replica]\nstale_after = \"12h\"\nreaders")
    );
}

#[test]
fn a_stale_after_table_sets_its_streams_and_leaves_the_others_at_their_defaults() {
    let c = parse("[replica.stale_after]\nproducts = \"3d\"\nstock = \"30m\"\n").unwrap();
    let limits = c.replica.stale_after;
    assert_eq!(
        limits.get(Stream::Products),
        Duration::from_secs(3 * 86_400)
    );
    assert_eq!(limits.get(Stream::Stock), Duration::from_secs(30 * 60));
    assert_eq!(
        limits.get(Stream::Prices),
        StaleAfter::DEFAULT.get(Stream::Prices)
    );
    let text = c.to_toml();
    assert!(text.contains("products = \"3d\"\n"), "{text}");
    assert!(text.contains("stock = \"30m\"\n"), "{text}");
    let again = Config::from_toml_str(&text, Path::new(ORIGIN)).unwrap();
    assert_eq!(again, c, "{text}");
}

#[test]
fn a_bad_per_stream_stale_after_names_its_own_key() {
    let p = only_problem("[replica.stale_after]\nprices = \"daily\"\nstock = \"2h\"\n");
    assert_eq!(p.key, "replica.stale_after.prices");
    assert!(p.message.contains("not a duration"), "{}", p.message);
    let p = only_problem("[replica.stale_after]\nstock = \"10s\"\n");
    assert_eq!(p.key, "replica.stale_after.stock");
    assert!(
        p.fix.contains("\"2h\""),
        "the fix names the stream's default: {}",
        p.fix
    );
    let p = only_problem("[replica.stale_after]\ncatalogue = \"3d\"\n");
    assert_eq!(p.key, "replica.stale_after.catalogue");
    assert!(p.fix.contains("products, prices, stock"), "{}", p.fix);
    let p = only_problem("[replica.stale_after]\nstock = 7200\n");
    assert_eq!(p.key, "replica.stale_after.stock");
}
