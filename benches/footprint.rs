//! `footprint`: resident memory of the real release binary serving a 1M-product + 1M-customer
//! replica: VmRSS after 2 s idle and after 1,000 product lookups over HTTP, clean exit on
//! SIGTERM, and the size of the (stripped) release binary. Goal: ≤ 30 MB idle.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{Scratch, emit, median, pass_str};
use relais::cards::CardHasher;
use relais::demo::{self, Rng, StoreSize};
use relais::replica::import::{Progress, import_file};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_relais");
const GOAL_IDLE_MB: f64 = 30.0;

#[derive(Clone, Copy, Default, Debug)]
struct Mem {
    rss_kb: u64,
    hwm_kb: u64,
    anon_kb: u64,
    file_kb: u64,
}

fn mem(pid: u32) -> Mem {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
        anon_kb: field("RssAnon:"),
        file_kb: field("RssFile:"),
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

struct RunResult {
    idle: Mem,
    after: Mem,
    startup_s: f64,
    exit_ok: bool,
}

fn terminate(child: &mut Child) -> Option<std::process::ExitStatus> {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().expect("wait for relais") {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("relais did not exit within 30 s of SIGTERM; killing it");
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn run_once(config: &Path, codes: &[String]) -> RunResult {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel::<String>();
    let drain = std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut tail = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("relais: listening on http://") {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            }
            tail.push(line);
            if tail.len() > 50 {
                tail.remove(0);
            }
        }
        tail
    });
    let addr = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let tail = drain.join().unwrap_or_default();
            panic!(
                "relais never printed its listening address; stderr:\n{}",
                tail.join("\n")
            );
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.get(format!("{base}/v1/health")).send() {
            Ok(r) if r.status().is_success() => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            other => panic!("GET /v1/health never answered 200: {other:?}"),
        }
    }
    let startup_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let pid = child.id();
    let idle = mem(pid);
    for code in codes {
        let r = client
            .get(format!("{base}/v1/products/{code}"))
            .send()
            .expect("GET /v1/products");
        assert!(
            r.status().is_success(),
            "GET /v1/products/{code}: {}",
            r.status()
        );
        let _ = r.bytes().expect("body");
    }
    let after = mem(pid);
    let status = terminate(&mut child);
    let tail = drain.join().unwrap_or_default();
    let exit_ok = status.is_some_and(|s| s.success());
    if !exit_ok {
        eprintln!(
            "relais exit status {status:?}; stderr tail:\n{}",
            tail.join("\n")
        );
    }
    RunResult {
        idle,
        after,
        startup_s,
        exit_ok,
    }
}

fn main() {
    let n = common::scaled(1_000_000, 1_000);
    let runs = common::runs();
    eprintln!("# footprint: {n} products + {n} customers, binary {BIN}, {runs} starts");
    let scratch = Scratch::new("footprint");
    let data_dir = scratch.sub("data");
    let snap = scratch.sub("snapshots");
    let (store, gen_t) = common::time(|| {
        demo::generate(
            &snap,
            StoreSize {
                products: n,
                customers: n,
            },
            &CardHasher::new(&[7u8; 32]),
            relais::storage::now_unix_ms(),
        )
        .expect("generate store")
    });
    let replica = data_dir.join(relais::storage::REPLICA_FILE);
    let (_, import_t) = common::time(|| {
        for (stream, file) in &store.files {
            import_file(&replica, *stream, file, None, Progress::Quiet)
                .unwrap_or_else(|e| panic!("import {stream}: {e}"));
        }
    });
    let _ = std::fs::remove_dir_all(&snap);
    let replica_mb = std::fs::metadata(&replica)
        .map(|m| m.len() as f64 / 1048576.0)
        .unwrap_or(f64::NAN);
    eprintln!(
        "# generated in {:.1} s, imported in {:.1} s; replica.db {replica_mb:.0} MB",
        gen_t.as_secs_f64(),
        import_t.as_secs_f64()
    );
    let config = scratch.path().join("relais.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nid = \"bench-store/relais\"\ndata_dir = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n",
            data_dir.display()
        ),
    )
    .expect("write config");

    let mut rng = Rng::new(9);
    let codes: Vec<String> = (0..1_000)
        .map(|_| demo::product_gtin(rng.below(n)).expect("gtin").to_string())
        .collect();

    let mut results = Vec::new();
    for run in 0..runs {
        let r = run_once(&config, &codes);
        eprintln!(
            "start {run}: ready in {:.2} s; idle VmRSS {:.1} MB (anon {:.1}, file {:.1}); after 1000 lookups VmRSS {:.1} MB (anon {:.1}, file {:.1}), VmHWM {:.1} MB; SIGTERM exit 0: {}",
            r.startup_s,
            mb(r.idle.rss_kb),
            mb(r.idle.anon_kb),
            mb(r.idle.file_kb),
            mb(r.after.rss_kb),
            mb(r.after.anon_kb),
            mb(r.after.file_kb),
            mb(r.after.hwm_kb),
            r.exit_ok
        );
        results.push(r);
    }
    let med = |f: &dyn Fn(&RunResult) -> f64| median(&results.iter().map(f).collect::<Vec<_>>());
    let idle = med(&|r| mb(r.idle.rss_kb));
    let after = med(&|r| mb(r.after.rss_kb));
    let hwm = med(&|r| mb(r.after.hwm_kb));
    let startup = med(&|r| r.startup_s);
    let all_exit_ok = results.iter().all(|r| r.exit_ok);
    let pass = idle <= GOAL_IDLE_MB;
    eprintln!(
        "idle VmRSS {idle:.1} MB (goal ≤ {GOAL_IDLE_MB} MB): {}",
        pass_str(pass)
    );
    eprintln!(
        "after 1000 lookups VmRSS {after:.1} MB, peak {hwm:.1} MB; startup {startup:.2} s; all exits 0 on SIGTERM: {all_exit_ok}"
    );
    let extra = serde_json::json!({"products": n, "customers": n, "replica_mb": replica_mb,
        "anon_mb": med(&|r| mb(r.idle.anon_kb)), "file_mb": med(&|r| mb(r.idle.file_kb))});
    emit(
        "footprint",
        "idle_rss_mb",
        idle,
        None,
        Some("<= 30 MB"),
        Some(pass),
        extra,
    );
    emit(
        "footprint",
        "rss_after_1000_lookups_mb",
        after,
        None,
        None,
        None,
        serde_json::json!({"peak_mb": hwm, "anon_mb": med(&|r| mb(r.after.anon_kb)), "file_mb": med(&|r| mb(r.after.file_kb))}),
    );
    emit(
        "footprint",
        "startup_s",
        startup,
        None,
        None,
        None,
        serde_json::json!({}),
    );
    emit(
        "footprint",
        "sigterm_exit_0",
        if all_exit_ok { 1.0 } else { 0.0 },
        None,
        Some("exit 0"),
        Some(all_exit_ok),
        serde_json::json!({}),
    );
    let size = std::fs::metadata(BIN)
        .map(|m| m.len())
        .expect("binary size");
    eprintln!(
        "release binary {BIN}: {size} bytes ({:.1} MB, profile.release strip = \"symbols\")",
        size as f64 / 1048576.0
    );
    emit(
        "footprint",
        "binary_bytes",
        size as f64,
        None,
        None,
        None,
        serde_json::json!({"path": BIN}),
    );
}
