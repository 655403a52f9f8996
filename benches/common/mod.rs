//! Shared helpers of the Relais benchmarks: scale, scratch directories, statistics and the
//! one-JSON-object-per-measurement output on stdout. Human lines go to stderr.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `RELAIS_BENCH_SCALE` (default 1.0): multiplies row counts (and bench durations), so CI can
/// run a quick smoke version with 0.02.
pub fn scale() -> f64 {
    match std::env::var("RELAIS_BENCH_SCALE") {
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => s,
            _ => {
                eprintln!("RELAIS_BENCH_SCALE={v:?} is not a positive number; using 1.0");
                1.0
            }
        },
        Err(_) => 1.0,
    }
}

/// `base * scale`, never below `min`.
pub fn scaled(base: u64, min: u64) -> u64 {
    ((base as f64 * scale()).round() as u64).max(min)
}

/// Number of runs whose median is reported (`RELAIS_BENCH_RUNS`, default 3).
pub fn runs() -> usize {
    std::env::var("RELAIS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(3)
}

/// A unique scratch directory under `std::env::temp_dir()`, removed on drop.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(bench: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "relais-bench-{bench}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create scratch dir {}: {e}", path.display()));
        eprintln!("# scratch dir: {} ({})", path.display(), fs_type(&path));
        Scratch { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh sub-directory (e.g. one per run).
    pub fn sub(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("RELAIS_BENCH_KEEP").is_some() {
            eprintln!("# kept scratch dir {}", self.path.display());
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("# cannot remove scratch dir {}: {e}", self.path.display());
        }
    }
}

/// Filesystem type of the mount holding `path`, from /proc/self/mounts (best effort).
pub fn fs_type(path: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "unknown fs".into();
    };
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let mut parts = line.split_whitespace();
        let (Some(dev), Some(mnt), Some(ty)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if target.starts_with(mnt) && best.as_ref().is_none_or(|(len, _)| mnt.len() > *len) {
            best = Some((mnt.len(), format!("{ty} on {dev} mounted at {mnt}")));
        }
    }
    best.map(|(_, s)| s).unwrap_or_else(|| "unknown fs".into())
}

/// The 1-minute load average from /proc/loadavg (NaN where unavailable): benches share the
/// machine, so every figure says how busy it was.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile (0..=100) of a sorted slice.
pub fn percentile_sorted<T: Copy + Into<f64>>(sorted: &[T], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].into()
}

pub fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Emit one machine-readable measurement on stdout. `ratio` is always relais / limit.
/// `goal` is a human string ("≥ 1.5x", "≤ 10 µs"); `pass` is `None` when there is no goal.
pub fn emit(
    bench: &str,
    metric: &str,
    relais: f64,
    limit: Option<f64>,
    goal: Option<&str>,
    pass: Option<bool>,
    extra: serde_json::Value,
) {
    let ratio = limit
        .filter(|l| *l != 0.0 && l.is_finite())
        .map(|l| relais / l);
    let mut obj = serde_json::json!({
        "bench": bench,
        "metric": metric,
        "relais": round3(relais),
        "limit": limit.map(round3),
        "ratio": ratio.map(round3),
        "goal": goal,
        "pass": pass,
        "scale": scale(),
        "runs": runs(),
    });
    if let (Some(map), serde_json::Value::Object(more)) = (obj.as_object_mut(), extra) {
        map.extend(more);
    }
    println!("{obj}");
}

fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        x
    }
}

pub fn pass_str(pass: bool) -> &'static str {
    if pass { "MET" } else { "NOT MET" }
}
