#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! systemd delivery: the shipped unit is valid and hardened, and the real binary speaks
//! sd_notify (READY, STATUS, WATCHDOG, STOPPING) the way `Type=notify` + `WatchdogSec=` expect.

mod common;

use common::{BIN, Store};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/relais.service");
/// What the README promises; the unit is measured against it on every test run.
const MAX_EXPOSURE: f64 = 2.0;

/// `systemd-analyze`, or `None` (with a line saying the test is skipped) where it is missing.
/// scripts/test.sh installs it, so CI always runs these tests.
fn systemd_analyze(test: &str) -> Option<Command> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        println!("{test}: skipped, systemd-analyze is not installed (scripts/test.sh installs it)");
        return None;
    }
    Some(Command::new("systemd-analyze"))
}

/// The shipped unit with ExecStart pointing at the binary cargo just built, in a temp dir
/// (verify insists that the executable exists).
fn unit_with_real_binary(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(UNIT).expect("read systemd/relais.service");
    assert!(
        text.contains("ExecStart=/usr/bin/relais "),
        "the unit's ExecStart no longer starts /usr/bin/relais:\n{text}"
    );
    let path = dir.join("relais.service");
    std::fs::write(
        &path,
        text.replace("ExecStart=/usr/bin/relais ", &format!("ExecStart={BIN} ")),
    )
    .expect("write unit copy");
    path
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Some(mut cmd) = systemd_analyze("the_unit_passes_systemd_analyze_verify") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let unit = unit_with_real_binary(tmp.path());
    let out = cmd.arg("verify").arg(&unit).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // verify exits 0 on an unknown or misspelt directive and only warns: any line about our
    // unit (a typo, a bad value) is a failure too.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("relais.service"))
        .collect();
    assert!(
        about_unit.is_empty(),
        "systemd-analyze verify warned about the unit:\n{}",
        about_unit.join("\n")
    );
}

#[test]
fn the_unit_exposure_score_is_at_most_two() {
    let Some(mut cmd) = systemd_analyze("the_unit_exposure_score_is_at_most_two") else {
        return;
    };
    let out = cmd
        .args(["security", "--offline=true", "--no-pager"])
        .arg(UNIT)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line in:\n{stdout}\n{stderr}"));
    // "→ Overall exposure level for relais.service: 1.5 OK 🙂"
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    println!("systemd-analyze security: {}", line.trim());
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}; what is exposed:\n{stdout}"
    );
}

/// Datagrams received on the fake NOTIFY_SOCKET until `want` shows up in one of them.
fn wait_for(socket: &UnixDatagram, want: &str, within: Duration, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {want:?} on NOTIFY_SOCKET within {within:?}; received: {seen:?}"
        );
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(msg.clone());
                if msg.lines().any(|l| l == want) {
                    return msg;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv on NOTIFY_SOCKET: {e}"),
        }
    }
}

#[test]
fn the_agent_reports_ready_once_health_answers_then_feeds_the_watchdog_and_says_stopping() {
    let store = Store::new();
    let socket_path = store.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&store.config)
        .arg("run")
        .env("NOTIFY_SOCKET", &socket_path)
        // 2 s: the agent must ping every second, so one arrives well within 3 s.
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = common::KillOnDrop(child);
    let mut seen = Vec::new();

    let ready = wait_for(&socket, "READY=1", Duration::from_secs(30), &mut seen);
    // The STATUS line names the address: the test finds the API through it.
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("READY=1 came without STATUS=: {ready:?}"));
    assert!(
        status.contains("offline"),
        "a store without a broker should say offline: {status:?}"
    );
    let addr = status
        .strip_prefix("serving on ")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no address in STATUS={status}"));
    // Ready means serving: a single request right now must succeed, no polling.
    let health = common::http_client()
        .get(format!("http://{addr}/v1/health"))
        .send()
        .unwrap();
    assert!(
        health.status().is_success(),
        "/v1/health answered {} after READY=1",
        health.status()
    );

    wait_for(&socket, "WATCHDOG=1", Duration::from_secs(3), &mut seen);

    let pid = rustix::process::Pid::from_raw(child.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    wait_for(&socket, "STOPPING=1", Duration::from_secs(20), &mut seen);
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "relais did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "relais exited with {status} after SIGTERM"
    );
}

#[test]
fn the_status_line_says_the_broker_is_failing_with_its_reason_instead_of_configured() {
    // A port nothing listens on: every connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = Store::with(common::Settings {
        sync: format!("broker = \"mqtt://127.0.0.1:{port}\"\n"),
        ..common::Settings::default()
    });
    let socket_path = store.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&store.config)
        .arg("run")
        .env("NOTIFY_SOCKET", &socket_path)
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _child = common::KillOnDrop(child);
    let mut seen = Vec::new();
    wait_for(&socket, "READY=1", Duration::from_secs(30), &mut seen);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 4096];
    let failing = loop {
        if let Some(line) = seen
            .iter()
            .flat_map(|m| m.lines())
            .filter_map(|l| l.strip_prefix("STATUS="))
            .find(|s| s.contains("broker failing"))
        {
            break line.to_owned();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no failing STATUS= within 20 s: {seen:?}");
        socket.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    assert!(failing.contains(&format!("127.0.0.1:{port}")), "{failing}");
    assert!(!failing.contains("broker configured"), "{failing}");
}
