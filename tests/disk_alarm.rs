#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! The disk watermark on a real small volume: a tmpfs mounted on the data directory, filled
//! and emptied under a running agent that records nothing meanwhile. The `disk_low` alarm
//! must show in `/v1/health` from the writer's own timer, not wait for a sale or telemetry.

mod common;

use common::Store;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The tmpfs size and the watermark: a fresh agent leaves well above 8 MiB free; the filler
/// brings it under.
const TMPFS_MIB: u64 = 24;
const WATERMARK_MIB: u64 = 8;
const FILLER_MIB: u64 = 20;
/// The writer's timer (10 s) plus its once-a-second rate limit, with room for a slow box.
const WITHIN: Duration = Duration::from_secs(20);

/// A tmpfs mounted on a directory, unmounted when dropped (after the agent using it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (with the reason) where this process may not mount.
    fn mount(at: &Path, mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0750"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn disk_low(health: &serde_json::Value) -> Option<String> {
    health["alarms"].as_array()?.iter().find_map(|a| {
        (a["code"] == "disk_low").then(|| a["message"].as_str().unwrap_or("").to_owned())
    })
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "no {what} within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    started.elapsed()
}

#[test]
fn a_disk_that_fills_under_an_idle_agent_raises_disk_low_in_health_without_any_sale_and_clears_when_freed()
 {
    let store = Store::new();
    let _tmpfs = match Tmpfs::mount(&store.data_dir, TMPFS_MIB) {
        Ok(mounted) => mounted,
        Err(why) => {
            println!("skipped: a tmpfs cannot be mounted here ({why}); run as root");
            return;
        }
    };
    let mut config = std::fs::read_to_string(&store.config).unwrap();
    config.push_str(&format!("\n[disk]\nlow_free_mb = {WATERMARK_MIB}\n"));
    std::fs::write(&store.config, config).unwrap();
    let agent = store.start();
    agent.wait_healthy();
    let health = agent.health();
    assert!(disk_low(&health).is_none(), "{health:#}");

    // Fill the volume under the watermark; nothing is recorded from now on.
    let filler = store.data_dir.join("filler");
    std::fs::write(&filler, vec![0x5Au8; (FILLER_MIB * 1024 * 1024) as usize]).unwrap();
    let mut message = None;
    let raised = wait_for("disk_low alarm in /v1/health", WITHIN, || {
        message = disk_low(&agent.health());
        message.is_some()
    });
    let message = message.unwrap();
    println!("disk_low raised {raised:?} after the disk filled: {message}");
    assert!(message.contains("lower disk.low_free_mb"), "{message}");
    // Nothing was recorded to notice it: the outbox holds no event of either class.
    let health = agent.health();
    assert_eq!(health["status"], "degraded", "{health:#}");
    assert_eq!(health["outbox"]["store_fact"]["depth"], 0, "{health:#}");
    assert_eq!(health["outbox"]["telemetry"]["depth"], 0, "{health:#}");

    std::fs::remove_file(&filler).unwrap();
    let cleared = wait_for("disk_low cleared", WITHIN, || {
        disk_low(&agent.health()).is_none()
    });
    println!("disk_low cleared {cleared:?} after space was freed");
    drop(agent);
}
