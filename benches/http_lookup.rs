//! `http_lookup`: `GET /v1/products/{gtin}` on the real release `relais run` with a realistic
//! replica (100,000 products with prices, promotions, stock and reservations), driven by `wrk`
//! with 64 keep-alive connections and 2 threads on the same machine, cycling through 10,000
//! different GTINs. Two loads, each run: **saturation** (wrk's closed loop: every connection sends
//! its next request as soon as the answer is in; maximum requests/s) and **paced at 20,000 req/s**
//! (the same 64 connections, each thread's requests spaced on a 100 µs schedule (per wrk thread) through wrk's
//! `delay` hook and a LuaJIT `clock_gettime`): the latency a till sees at the goal's rate. A
//! closed loop cannot judge the latency goal: by Little's law its mean latency is
//! 64 / (requests/s), 3.2 ms at 20,000 req/s, whatever the server does.
//!
//! Limit measured in the same run: the same `wrk` command against a trivial server on the same
//! stack (axum 0.8 on tokio, 2 worker threads, in a separate process: this bench re-executed
//! with `RELAIS_BENCH_LIMIT_SERVER`) that answers every `GET /v1/products/{code}` with one real
//! lookup's JSON body, constant: what HTTP + the load generator cost on this machine.
//! Goal: ≥ 20,000 req/s with p99 ≤ 2 ms, the load generator included: saturation ≥ 20,000 req/s,
//! and the paced run delivers its 20,000 req/s (≥ 99 %) with p99 ≤ 2 ms.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "common/agent.rs"]
mod agent;
mod common;

use agent::Agent;
use common::{Scratch, emit, median, pass_str, runs, scale};
use relais::cards::CardHasher;
use relais::demo::{self, Rng, StoreSize};
use relais::replica::import::{Progress, import_file};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CONNECTIONS: u32 = 64;
const THREADS: u32 = 2;
const GOAL_RPS: f64 = 20_000.0;
const GOAL_P99_MS: f64 = 2.0;
/// The paced load: the goal's rate.
const PACED_RPS: f64 = 20_000.0;
/// Environment variable that turns this bench binary into the limit server (value: body file).
const LIMIT_ROLE: &str = "RELAIS_BENCH_LIMIT_SERVER";

/// What one wrk run reported (from the script's `done` hook: exact counters, µs percentiles).
#[derive(Debug, Default, Clone, Copy)]
struct WrkResult {
    requests: f64,
    seconds: f64,
    non_2xx: f64,
    socket_errors: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// CPU seconds of the server process during the run.
    server_cpu_s: f64,
    /// CPU seconds of wrk itself.
    wrk_cpu_s: f64,
}

impl WrkResult {
    fn rps(&self) -> f64 {
        self.requests / self.seconds
    }
    fn server_cpu_us_per_request(&self) -> f64 {
        self.server_cpu_s * 1e6 / self.requests
    }
    fn wrk_cpu_us_per_request(&self) -> f64 {
        self.wrk_cpu_s * 1e6 / self.requests
    }
}

/// The wrk script: pre-formatted requests over `codes`, each thread starting at its own
/// offset, and a `done` hook printing one parseable line. With `rate`, a `delay` hook spaces
/// each thread's requests on a fixed schedule (`rate / THREADS` per second; a slot missed by
/// more than 5 ms is dropped, so a slow server turns it back into a closed loop, not a burst).
fn wrk_script(codes: &[String], token: Option<&str>, rate: Option<f64>) -> String {
    let mut s = String::from("local codes = {\n");
    for code in codes {
        s.push_str(&format!("\"{code}\",\n"));
    }
    s.push_str("}\n");
    match token {
        Some(t) => s.push_str(&format!("local auth = \"Bearer {t}\"\n")),
        None => s.push_str("local auth = nil\n"),
    }
    if let Some(rate) = rate {
        s.push_str(&format!(
            r#"local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_nsec; }} relais_timespec;
int clock_gettime(int clk_id, relais_timespec *tp);
]]
local ts = ffi.new("relais_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval_ms = {interval}
local next_slot = nil
function delay()
  local now = now_ms()
  -- A slot missed because every connection was busy is made up within 5 ms, not later.
  if next_slot == nil or next_slot < now - 5 then next_slot = now - 5 end
  local slot = next_slot
  next_slot = next_slot + interval_ms
  return math.floor(slot - now + 0.5)
end
"#,
            interval = 1000.0 * f64::from(THREADS) / rate
        ));
    }
    s.push_str(
        r#"local next_offset = 0
function setup(thread)
  thread:set("offset", next_offset)
  next_offset = next_offset + math.floor(#codes / 2) + 1
end
local reqs = {}
local i = 0
function init(args)
  for k, code in ipairs(codes) do
    local headers = {}
    if auth then headers["Authorization"] = auth end
    reqs[k] = wrk.format("GET", "/v1/products/" .. code, headers)
  end
  i = offset or 0
end
function request()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RELAIS_WRK requests=%d duration_us=%d status_errors=%d socket_errors=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"#,
    );
    s
}

/// Children's user + system CPU seconds (waited-for children only), from /proc/self/stat.
fn children_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(f64::NAN))
        .collect();
    // cutime and cstime are fields 16 and 17 of the line; 14 and 15 after the name.
    (fields.get(13).copied().unwrap_or(f64::NAN) + fields.get(14).copied().unwrap_or(f64::NAN))
        / 100.0
}

fn run_wrk(url: &str, script: &Path, seconds: u64, server_pid: u32) -> WrkResult {
    let cpu_before = agent::cpu_seconds(server_pid);
    let wrk_before = children_cpu_seconds();
    let out = Command::new("wrk")
        .arg(format!("-t{THREADS}"))
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{seconds}s"))
        .args(["--latency", "--timeout", "5s", "-s"])
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("wrk (apt-get install wrk)");
    let server_cpu_s = agent::cpu_seconds(server_pid) - cpu_before;
    let wrk_cpu_s = children_cpu_seconds() - wrk_before;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RELAIS_WRK "))
        .unwrap_or_else(|| panic!("no RELAIS_WRK line in wrk's output:\n{text}"));
    let field = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    WrkResult {
        requests: field("requests"),
        seconds: field("duration_us") / 1e6,
        non_2xx: field("status_errors"),
        socket_errors: field("socket_errors"),
        p50_ms: field("p50_us") / 1000.0,
        p90_ms: field("p90_us") / 1000.0,
        p99_ms: field("p99_us") / 1000.0,
        p999_ms: field("p999_us") / 1000.0,
        max_ms: field("max_us") / 1000.0,
        server_cpu_s,
        wrk_cpu_s,
    }
}

/// The limit server (this bench binary re-executed): axum on a 2-worker tokio runtime, like
/// `relais run`, answering `GET /v1/products/{code}` with a constant JSON body. Prints
/// `listening on ADDR` on stdout and exits when its stdin closes.
fn limit_server(body_file: &str) {
    let body = axum::body::Bytes::from(std::fs::read(body_file).expect("read the body file"));
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("limit-core")
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("listening on {}", listener.local_addr().expect("addr"));
        std::io::stdout().flush().expect("flush");
        let app = axum::Router::new().route(
            "/v1/products/{code}",
            axum::routing::get(
                move |axum::extract::Path(_code): axum::extract::Path<String>| {
                    let body = body.clone();
                    async move {
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            body,
                        )
                    }
                },
            ),
        );
        axum::serve(listener, app).await.expect("serve");
    });
}

struct LimitServer {
    child: Child,
    addr: String,
}

impl LimitServer {
    fn start(body_file: &Path) -> LimitServer {
        let mut child = Command::new(std::env::current_exe().expect("current exe"))
            .env(LIMIT_ROLE, body_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the limit server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("limit server address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("limit server said {line:?}"))
            .to_string();
        LimitServer { child, addr }
    }
}

impl Drop for LimitServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(data_dir: &Path, token_file: Option<&Path>) -> String {
    let mut api = String::from("listen = \"127.0.0.1:0\"\n");
    if let Some(path) = token_file {
        api.push_str(&format!(
            "token_file = \"{}\"\nrate_limit_per_client = 0\n",
            path.display()
        ));
    }
    format!(
        "[agent]\nid = \"bench-store/relais\"\ndata_dir = \"{}\"\n\n[api]\n{api}",
        data_dir.display()
    )
}

fn main() {
    if let Ok(body_file) = std::env::var(LIMIT_ROLE) {
        limit_server(&body_file);
        return;
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("http_lookup: wrk is not installed (apt-get install wrk); skipped");
        return;
    }
    let n = common::scaled(100_000, 2_000);
    let distinct = common::scaled(10_000, 1_000).min(n) as usize;
    // Time-boxed: 10 s per wrk run at scale 1.0, never below 2 s.
    let seconds = ((10.0 * scale()).round() as u64).max(2);
    let warmup = (seconds / 2).max(1);
    let runs = runs();
    eprintln!(
        "# http_lookup: {n} products, {distinct} distinct GTINs, wrk -t{THREADS} -c{CONNECTIONS} \
         -d{seconds}s ×{runs} runs (+{warmup} s warm-up each side), binary {}",
        agent::BIN
    );
    let scratch = Scratch::new("http_lookup");
    let data_dir = scratch.sub("data");
    let snap = scratch.sub("snapshots");
    let (store, gen_t) = common::time(|| {
        demo::generate(
            &snap,
            StoreSize {
                products: n,
                customers: common::scaled(1_000, 100),
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
    eprintln!(
        "# generated in {:.1} s, imported all streams in {:.1} s",
        gen_t.as_secs_f64(),
        import_t.as_secs_f64()
    );

    // API token when this build has `[api] token_file` (rate limiting off): a till sends one.
    let token = "bench-till-token-0123456789abcdef";
    let token_file = scratch.path().join("api-tokens");
    agent::write_token_file(&token_file, token);
    let config = scratch.path().join("relais.toml");
    std::fs::write(&config, config_text(&data_dir, Some(&token_file))).expect("write config");
    let (relais, token) = match Agent::try_start(&config) {
        Ok(agent) => (agent, Some(token)),
        Err((status, stderr)) if status == Some(78) && agent::unknown_auth_keys(&stderr) => {
            eprintln!(
                "# this build has no `[api] token_file`: measuring without authentication ({})",
                stderr
                    .lines()
                    .find(|l| agent::unknown_auth_keys(l))
                    .unwrap_or("")
                    .trim()
            );
            std::fs::write(&config, config_text(&data_dir, None)).expect("write config");
            let agent = Agent::try_start(&config)
                .unwrap_or_else(|(s, e)| panic!("relais did not start ({s:?}):\n{e}"));
            (agent, None)
        }
        Err((status, stderr)) => panic!("relais did not start ({status:?}):\n{stderr}"),
    };
    let auth = if token.is_some() { "bearer" } else { "none" };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    relais.wait_healthy(&client, token);

    let mut rng = Rng::new(11);
    let codes: Vec<String> = (0..distinct)
        .map(|_| demo::product_gtin(rng.below(n)).expect("gtin").to_string())
        .collect();
    // One real answer: its body is what the limit server sends, byte for byte.
    let mut request = client.get(relais.url(&format!("/v1/products/{}", codes[0])));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let sample = request.send().expect("GET /v1/products");
    assert!(sample.status().is_success(), "{}", sample.status());
    let body = sample.bytes().expect("body");
    let body_file = scratch.path().join("body.json");
    std::fs::write(&body_file, &body).expect("write body");
    let limit = LimitServer::start(&body_file);
    let script = scratch.path().join("lookup.lua");
    std::fs::write(&script, wrk_script(&codes, token, None)).expect("write wrk script");
    let paced_script = scratch.path().join("lookup-paced.lua");
    std::fs::write(&paced_script, wrk_script(&codes, token, Some(PACED_RPS)))
        .expect("write wrk script");
    eprintln!(
        "# relais at {} (auth: {auth}), limit server at {} (pid {}); response body {} bytes",
        relais.addr,
        limit.addr,
        limit.child.id(),
        body.len()
    );

    let relais_url = relais.url("");
    let limit_url = format!("http://{}", limit.addr);
    run_wrk(&relais_url, &script, warmup, relais.pid());
    run_wrk(&limit_url, &script, warmup, limit.child.id());
    let describe = |who: &str, r: &WrkResult| {
        format!(
            "{who}: {:.0} req/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.1} ms, non-2xx {}, \
             socket errors {}; CPU per request: server {:.1} µs, wrk {:.1} µs",
            r.rps(),
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            r.non_2xx,
            r.socket_errors,
            r.server_cpu_us_per_request(),
            r.wrk_cpu_us_per_request()
        )
    };
    // Per run, interleaved so relais and the limit see the same machine noise.
    let mut sat: (Vec<WrkResult>, Vec<WrkResult>) = (Vec::new(), Vec::new());
    let mut paced: (Vec<WrkResult>, Vec<WrkResult>) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let r = run_wrk(&relais_url, &script, seconds, relais.pid());
        eprintln!("run {run} saturation: {}", describe("relais", &r));
        let l = run_wrk(&limit_url, &script, seconds, limit.child.id());
        eprintln!("run {run} saturation: {}", describe("limit ", &l));
        sat.0.push(r);
        sat.1.push(l);
        let r = run_wrk(&relais_url, &paced_script, seconds, relais.pid());
        eprintln!(
            "run {run} paced {PACED_RPS:.0}/s: {}",
            describe("relais", &r)
        );
        let l = run_wrk(&limit_url, &paced_script, seconds, limit.child.id());
        eprintln!(
            "run {run} paced {PACED_RPS:.0}/s: {}",
            describe("limit ", &l)
        );
        paced.0.push(r);
        paced.1.push(l);
    }
    drop(limit);
    let exit = relais.terminate();

    let med =
        |v: &[WrkResult], f: fn(&WrkResult) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let rps = med(&sat.0, WrkResult::rps);
    let lim_rps = med(&sat.1, WrkResult::rps);
    let paced_rps = med(&paced.0, WrkResult::rps);
    let paced_p99 = med(&paced.0, |r| r.p99_ms);
    let all_relais = || sat.0.iter().chain(paced.0.iter());
    let non_2xx: f64 = all_relais().map(|r| r.non_2xx).sum();
    let socket_errors: f64 = all_relais().map(|r| r.socket_errors).sum();
    let rps_pass = rps >= GOAL_RPS;
    let paced_rps_pass = paced_rps >= 0.99 * PACED_RPS;
    let p99_pass = paced_p99 <= GOAL_P99_MS;
    eprintln!(
        "median, saturation: relais {rps:.0} req/s vs limit {lim_rps:.0} req/s (ratio {:.2}); goal \
         ≥ {GOAL_RPS:.0} req/s: {}; latency p50 {:.3} ms, p99 {:.3} ms (limit {:.3} / {:.3} ms); \
         CPU per request relais {:.1} µs, limit {:.1} µs, wrk {:.1} µs",
        rps / lim_rps,
        pass_str(rps_pass),
        med(&sat.0, |r| r.p50_ms),
        med(&sat.0, |r| r.p99_ms),
        med(&sat.1, |r| r.p50_ms),
        med(&sat.1, |r| r.p99_ms),
        med(&sat.0, WrkResult::server_cpu_us_per_request),
        med(&sat.1, WrkResult::server_cpu_us_per_request),
        med(&sat.0, WrkResult::wrk_cpu_us_per_request),
    );
    eprintln!(
        "median, paced at {PACED_RPS:.0} req/s: relais delivered {paced_rps:.0} req/s ({}), p50 \
         {:.3} ms, p99 {paced_p99:.3} ms (limit p50 {:.3} ms, p99 {:.3} ms); goal p99 ≤ \
         {GOAL_P99_MS} ms: {}; non-2xx {non_2xx}, socket errors {socket_errors}; relais exit on \
         SIGTERM: {exit:?}",
        pass_str(paced_rps_pass),
        med(&paced.0, |r| r.p50_ms),
        med(&paced.1, |r| r.p50_ms),
        med(&paced.1, |r| r.p99_ms),
        pass_str(p99_pass),
    );
    let extra = |more: serde_json::Value| {
        let mut v = serde_json::json!({"products": n, "distinct_gtins": distinct,
            "connections": CONNECTIONS, "wrk_threads": THREADS, "seconds": seconds, "auth": auth,
            "body_bytes": body.len()});
        if let (Some(map), serde_json::Value::Object(more)) = (v.as_object_mut(), more) {
            map.extend(more);
        }
        v
    };
    emit(
        "http_lookup",
        "requests_per_s",
        rps,
        Some(lim_rps),
        Some(">= 20000 req/s"),
        Some(rps_pass),
        extra(serde_json::json!({
            "load": "saturation",
            "server_cpu_us_per_request": med(&sat.0, WrkResult::server_cpu_us_per_request),
            "limit_cpu_us_per_request": med(&sat.1, WrkResult::server_cpu_us_per_request),
            "wrk_cpu_us_per_request": med(&sat.0, WrkResult::wrk_cpu_us_per_request),
        })),
    );
    type Pick = fn(&WrkResult) -> f64;
    let percentiles: [(&str, Pick); 4] = [
        ("p50_ms", |r| r.p50_ms),
        ("p90_ms", |r| r.p90_ms),
        ("p99_ms", |r| r.p99_ms),
        ("p999_ms", |r| r.p999_ms),
    ];
    for (metric, f) in percentiles {
        emit(
            "http_lookup",
            &format!("saturated_{metric}"),
            med(&sat.0, f),
            Some(med(&sat.1, f)),
            None,
            None,
            extra(serde_json::json!({"load": "saturation"})),
        );
    }
    emit(
        "http_lookup",
        "paced_requests_per_s",
        paced_rps,
        Some(med(&paced.1, WrkResult::rps)),
        Some(">= 99 % of 20000 req/s offered"),
        Some(paced_rps_pass),
        extra(serde_json::json!({
            "load": "paced", "offered_per_s": PACED_RPS,
            "server_cpu_us_per_request": med(&paced.0, WrkResult::server_cpu_us_per_request),
            "limit_cpu_us_per_request": med(&paced.1, WrkResult::server_cpu_us_per_request),
        })),
    );
    for (metric, f) in percentiles {
        let goal = (metric == "p99_ms").then_some(("<= 2 ms at 20000 req/s", p99_pass));
        emit(
            "http_lookup",
            &format!("paced_{metric}"),
            med(&paced.0, f),
            Some(med(&paced.1, f)),
            goal.map(|g| g.0),
            goal.map(|g| g.1),
            extra(serde_json::json!({"load": "paced", "offered_per_s": PACED_RPS})),
        );
    }
    emit(
        "http_lookup",
        "non_2xx",
        non_2xx,
        None,
        Some("0 (and 0 socket errors)"),
        Some(non_2xx == 0.0 && socket_errors == 0.0),
        extra(serde_json::json!({"socket_errors": socket_errors, "summed_over_runs": true})),
    );
}
