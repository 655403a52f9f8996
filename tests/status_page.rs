#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! The technician's status page in a real browser: headless Chromium, driven over the Chrome
//! DevTools Protocol, opens the page of the real `relais run` and sees a scan made on a real
//! serial port (a pseudo-terminal) appear live. Leaves a screenshot in `target/status-page.png`.

mod common;

use common::{Store, base_price, gtin14, product, reservation, stock};
use reqwest::header;
use serde_json::{Value, json};
use serialport::{SerialPort, TTYPort};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

const TOKEN: &str = "technician-token-0123456789abcdef";
const PRODUCT: &str = "Whole milk 1 L";

// ---- the store ------------------------------------------------------------------------------

/// A store behind an API token, with every replica stream loaded (so the page shows a healthy
/// agent) and a serial scanner configured at `scanner_link` (absent until plugged).
fn store_with_a_scanner(scanner_link: &Path) -> (Store, String) {
    let store = Store::new();
    store.protect_api(&format!("technician {TOKEN}\n"), "127.0.0.1:0", "");
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles");
    let config = std::fs::read_to_string(&store.config).unwrap();
    std::fs::write(
        &store.config,
        format!(
            "{config}\n[devices]\nprofiles_dir = \"{}\"\n[[devices.serial]]\nname = \"till-scanner\"\n\
             path = \"{}\"\nprofile = \"serial-scanner-cr\"\n",
            profiles.display(),
            scanner_link.display()
        ),
    )
    .unwrap();

    let gtin = gtin14(400_638_133_393);
    store.import_ok(
        "products",
        "products.ndjson",
        &[product(&gtin, "SKU-MILK", PRODUCT)],
    );
    store.import_ok(
        "prices",
        "prices.ndjson",
        &[base_price("SKU-MILK", 129, "2025-01-01T00:00:00Z")],
    );
    store.import_ok("stock", "stock.ndjson", &[stock("SKU-MILK", 24)]);
    store.import_ok(
        "customers",
        "customers.ndjson",
        &[json!({"customer_id": "C-1", "display_name": "Ada", "loyalty_balance": 120, "card_tokens": []})],
    );
    store.import_ok(
        "reservations",
        "reservations.ndjson",
        &[reservation("WEB-1", "SKU-MILK", 2)],
    );
    (store, gtin)
}

/// A pseudo-terminal standing in for the scanner; its slave is reachable through `link`, the
/// way udev gives a scanner a stable by-id path.
struct Scanner {
    master: TTYPort,
    _slave: TTYPort,
}

fn plug(link: &Path) -> Scanner {
    let (master, slave) = TTYPort::pair().expect("pseudo-terminals are available");
    let name = slave.name().expect("the slave side has a path");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(name, link).unwrap();
    Scanner {
        master,
        _slave: slave,
    }
}

// ---- Chromium -------------------------------------------------------------------------------

fn chromium_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "chromium is not installed, and this test needs a real browser: run \
         `sudo apt-get install chromium` (scripts/test.sh installs it)"
    );
}

/// A headless Chromium in its own process group with a throwaway profile; the whole group is
/// killed when dropped, whether the test passed or panicked.
struct Chromium {
    child: Child,
    devtools_url: String,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn launch() -> Chromium {
        let binary = chromium_binary();
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(&binary);
        cmd.arg("--headless=new")
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args([
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--mute-audio",
                "--lang=en-GB",
            ]);
        // Chromium refuses to start its sandbox as root (CI containers run as root).
        if rustix::process::geteuid().is_root() {
            cmd.arg("--no-sandbox");
        }
        let mut child = cmd
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stderr = child.stderr.take().unwrap();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        {
            let tail = Arc::clone(&tail);
            // Keeps draining stderr for Chromium's whole life: a full pipe would stall it.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        let _ = tx.send(url.trim().to_string());
                    }
                    let mut tail = tail.lock().unwrap();
                    if tail.len() == 40 {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        let mut chromium = Chromium {
            child,
            devtools_url: String::new(),
            stderr_tail: tail,
            _profile: profile,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => chromium.devtools_url = url,
            Err(_) => panic!(
                "chromium did not print its DevTools address within 30 s:\n{}",
                chromium.stderr_text()
            ),
        }
        chromium
    }

    fn stderr_text(&self) -> String {
        let tail = self.stderr_tail.lock().unwrap();
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// A new tab, attached over the browser's DevTools socket (flat session mode).
    fn open_tab(&self) -> Cdp {
        let mut cdp = Cdp::connect(&self.devtools_url);
        let target = cdp.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = cdp.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        cdp.session = attached["sessionId"].as_str().map(str::to_string);
        cdp
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal Chrome DevTools Protocol client: one command at a time, events ignored.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    session: Option<String>,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let host = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools address {url:?}"));
        let stream = TcpStream::connect(host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (ws, _) = tungstenite::client(url, stream)
            .unwrap_or_else(|e| panic!("DevTools websocket handshake with {url} failed: {e}"));
        Cdp {
            ws,
            next_id: 0,
            session: None,
        }
    }

    /// Send a command and wait for its answer: `Ok(result)` or `Err(error)` as CDP gives them.
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            command["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::Text(command.to_string().into()))
            .unwrap_or_else(|e| panic!("DevTools {method}: send failed: {e}"));
        loop {
            let message = self
                .ws
                .read()
                .unwrap_or_else(|e| panic!("DevTools {method}: no answer: {e}"));
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str()).unwrap();
            if answer["id"] != id {
                continue; // an event, or the answer to nothing we still wait for
            }
            return match answer.get("error") {
                Some(error) => Err(error.clone()),
                None => Ok(answer["result"].clone()),
            };
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("DevTools {method} failed: {e}"))
    }

    /// The value of a JavaScript expression in the page; `None` while the page cannot answer
    /// (navigating, or the expression threw).
    fn eval(&mut self, expression: &str) -> Option<Value> {
        let result = self
            .try_call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .ok()?;
        if result.get("exceptionDetails").is_some() {
            return None;
        }
        Some(result["result"]["value"].clone())
    }

    fn page_text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : '(no body)'")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "(the page did not answer)".into())
    }

    /// Poll `expression` until it is `true`; on timeout, fail with what the page shows.
    fn wait_for(&mut self, what: &str, expression: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(expression) == Some(Value::Bool(true)) {
                return;
            }
            if Instant::now() >= deadline {
                let text = self.page_text();
                panic!("timed out after {timeout:?} waiting for {what}; the page shows:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn navigate(&mut self, url: &str) {
        let answer = self.call("Page.navigate", json!({"url": url}));
        assert!(
            answer.get("errorText").is_none(),
            "navigation to {url} failed: {answer}"
        );
    }

    /// A PNG of the whole page at `width` CSS pixels (and `scale` device pixels per CSS pixel).
    fn screenshot(&mut self, width: u32, scale: f64, mobile: bool) -> Vec<u8> {
        let viewport = |cdp: &mut Cdp, height: u64| {
            cdp.call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile}),
            );
        };
        viewport(self, 900);
        std::thread::sleep(Duration::from_millis(300)); // let the layout settle at this width
        let height = self
            .eval("Math.ceil(document.documentElement.scrollHeight)")
            .and_then(|v| v.as_u64())
            .unwrap_or(900)
            .clamp(600, 4000);
        viewport(self, height);
        std::thread::sleep(Duration::from_millis(300));
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        base64_decode(shot["data"].as_str().expect("screenshot data"))
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:?}"),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c) << (18 - 6 * i);
        }
        let produced = chunk.len() * 6 / 8;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + produced]);
    }
    out
}

fn save(name: &str, png: &[u8]) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, png).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    path
}

/// Whether the text of element `id` contains every string in `needles` (a JS expression).
fn shows(id: &str, needles: &[&str]) -> String {
    let needles = serde_json::to_string(needles).unwrap();
    format!(
        "(() => {{ const e = document.getElementById({id:?}); \
         return !!e && {needles}.every((n) => e.innerText.includes(n)); }})()"
    )
}

// ---- tests ----------------------------------------------------------------------------------

#[test]
fn a_scan_on_a_serial_scanner_appears_live_on_the_status_page() {
    let started = Instant::now();
    let chromium = Chromium::launch();
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("scanner");
    let (store, gtin) = store_with_a_scanner(&link);
    let agent = store.start().with_token(TOKEN);
    let mut tab = chromium.open_tab();
    tab.call("Page.enable", json!({}));
    // Installed before any page script runs, and outside the page's CSP: a record of anything
    // the policy blocked, so a page that only works with inline code fails here.
    tab.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": "window.__cspViolations = []; document.addEventListener('securitypolicyviolation', (e) => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"}),
    );
    tab.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
    );

    // Without a token the page loads (it is public) but has no data to show: it asks for one.
    tab.navigate(&agent.url("/status/"));
    tab.wait_for(
        "the page to ask for a token",
        "!document.getElementById('auth').hidden && document.body.dataset.live === '0'",
        Duration::from_secs(15),
    );

    // The technician's link carries the token in the fragment, which the server never sees;
    // `/` redirects to the page and the fragment survives the redirect.
    tab.navigate(&agent.url(&format!("/#token={TOKEN}")));
    tab.wait_for(
        "the event stream to be live and the health to be shown",
        "document.body.dataset.live === '1' && document.body.dataset.health === '1'",
        Duration::from_secs(15),
    );
    assert_eq!(
        tab.eval("location.pathname + '|' + location.hash"),
        Some(json!("/status/|")),
        "the page lives at /status/ and takes the token out of the address bar"
    );
    assert_eq!(
        tab.eval("sessionStorage.getItem('relais.token')"),
        Some(json!(TOKEN))
    );
    tab.wait_for(
        "the absent scanner in the device list",
        &shows("devices", &["serial:till-scanner", "disconnected"]),
        Duration::from_secs(10),
    );

    // The scanner is plugged in while the page watches, then the till scans: the product, an
    // item the replica does not know and a misread.
    let mut scanner = plug(&link);
    tab.wait_for(
        "the scanner to show as connected",
        &shows("devices-count", &["1 of 1 connected"]),
        Duration::from_secs(15),
    );
    let unknown = gtin14(400_638_100_001);
    let ean13 = gtin.trim_start_matches('0');
    scanner
        .master
        .write_all(
            format!(
                "]E0{ean13}\r{}\r4006381333932\r",
                unknown.trim_start_matches('0')
            )
            .as_bytes(),
        )
        .unwrap();
    scanner.master.flush().unwrap();
    tab.wait_for(
        "the scan's product and GTIN in the live reads",
        &shows("reads", &[PRODUCT, &gtin, "EAN-13"]),
        Duration::from_secs(10),
    );
    tab.wait_for(
        "the unknown item and the misread in the live reads",
        &shows("reads", &["Not in the replica", &unknown, "Invalid code"]),
        Duration::from_secs(10),
    );
    tab.wait_for(
        "the health to count the reads",
        &shows("devices", &["3 reads"]),
        Duration::from_secs(10),
    );
    assert_eq!(
        tab.eval("window.__cspViolations"),
        Some(json!([])),
        "the page must work under its own Content-Security-Policy"
    );

    let desktop = save("status-page.png", &tab.screenshot(1280, 1.0, false));
    let phone = save("status-page-phone.png", &tab.screenshot(390, 2.0, true));
    assert_eq!(
        tab.eval("getComputedStyle(document.querySelector('.grid')).gridTemplateColumns.split(' ').length"),
        Some(json!(1)),
        "one column on a phone"
    );
    eprintln!(
        "status page: screenshots {} and {}; test took {:.1} s",
        desktop.display(),
        phone.display(),
        started.elapsed().as_secs_f64()
    );
    drop(tab);
    drop(chromium);
}

#[test]
fn the_page_and_its_assets_are_public_with_a_strict_policy_while_the_data_needs_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _gtin) = store_with_a_scanner(&tmp.path().join("absent"));
    let agent = store.start();
    let http = common::http_client();

    // `/` sends the technician to the page.
    let page = http.get(agent.url("/")).send().unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.url().path(), "/status/");
    let head = |r: &reqwest::blocking::Response, name: header::HeaderName| {
        r.headers()
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header on {}", r.url()))
            .to_string()
    };
    let csp = head(&page, header::CONTENT_SECURITY_POLICY);
    assert!(csp.starts_with("default-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(head(&page, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(
        head(&page, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_eq!(head(&page, header::CACHE_CONTROL), "no-cache");
    let html = page.text().unwrap();

    // Every asset the page references, by the name it references it.
    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for piece in html.split(attr).skip(1) {
            let name = piece.split('"').next().unwrap();
            assets.push(name.to_string());
        }
    }
    for (ext, content_type) in [
        (".js", "text/javascript; charset=utf-8"),
        (".css", "text/css; charset=utf-8"),
        (".svg", "image/svg+xml"),
    ] {
        let name = assets
            .iter()
            .find(|a| a.ends_with(ext))
            .unwrap_or_else(|| panic!("the page references no {ext} asset: {html}"));
        assert!(
            !name.contains("//"),
            "{name}: assets come from the agent itself"
        );
        let r = http
            .get(agent.url(&format!("/status/{name}")))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(head(&r, header::CONTENT_TYPE), content_type, "{name}");
        assert_eq!(head(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert!(
            head(&r, header::CACHE_CONTROL).contains("immutable"),
            "{name} is named by its content, so it may be cached for good"
        );
    }

    // The data behind the page is not public.
    for path in ["/v1/health", "/v1/events"] {
        let r = http.get(agent.url(path)).send().unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
    }
    let r = http
        .get(agent.url("/v1/health"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}
