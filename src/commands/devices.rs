//! `relais devices list` and `relais devices watch`: what a technician runs at the till.

use relais::config::Config;
use relais::devices::runtime;
use relais::devices::{DeviceEvent, EventSink};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum DevicesCommand {
    /// Serial ports (with USB ids), PC/SC readers, configured LLRP readers, UHF serial modules
    /// and HID scanners, the profile each matched, and whether it is there
    List {
        #[arg(long)]
        json: bool,
    },
    /// Live decoded reads: from the running agent when there is one, else by opening the
    /// configured devices here
    Watch {
        #[arg(long)]
        json: bool,
        /// Address of the running agent's API [default: api.listen from the config]
        #[arg(long)]
        agent: Option<std::net::SocketAddr>,
    },
}

pub fn run(command: DevicesCommand, config: &Config) -> anyhow::Result<u8> {
    match command {
        DevicesCommand::List { json } => list(config, json),
        DevicesCommand::Watch { json, agent } => watch(config, json, agent),
    }
}

fn list(config: &Config, json: bool) -> anyhow::Result<u8> {
    let (profiles, from, errors) = runtime::load_profiles(&config.devices);
    let ports = relais::devices::serial::list_serial_ports_with(&profiles);
    let configured_serial: Vec<serde_json::Value> = config
        .devices
        .serial
        .iter()
        .map(|s| {
            let profile = relais::devices::serial::pick_profile(&profiles, s);
            serde_json::json!({
                "name": s.name, "path": s.path, "present": s.path.exists(),
                "profile": profile.as_ref().ok().map(|p| p.label()),
                "error": profile.err().map(|e| e.to_string()),
            })
        })
        .collect();
    let rfid_serial: Vec<serde_json::Value> = config
        .devices
        .rfid_serial
        .iter()
        .map(|m| {
            let profile = relais::devices::rfid::serial_reader::pick_profile(&profiles, m);
            serde_json::json!({
                "name": m.name, "path": m.path, "present": m.path.exists(),
                "profile": profile.as_ref().ok().map(|p| p.label()),
                "error": profile.err().map(|e| e.to_string()),
            })
        })
        .collect();
    let pcsc = pcsc_readers();
    let llrp: Vec<serde_json::Value> = config
        .devices
        .llrp
        .iter()
        .map(|r| {
            let reachable = TcpStream::connect_timeout(&r.address, Duration::from_secs(1)).is_ok();
            serde_json::json!({"name": r.name, "address": r.address.to_string(), "reachable": reachable})
        })
        .collect();
    let hid: Vec<serde_json::Value> = config
        .devices
        .hid
        .iter()
        .map(|h| serde_json::json!({"name": h.name, "path": h.path, "present": h.path.exists()}))
        .collect();
    if json {
        let value = serde_json::json!({
            "profiles": {"from": from, "count": profiles.len(), "fingerprint": profiles.fingerprint(), "refused": errors},
            "serial_ports": ports.iter().map(|p| serde_json::json!({
                "path": p.path, "type": p.port_type, "usb": p.usb_vid_pid, "manufacturer": p.manufacturer,
                "product": p.product, "serial_number": p.serial_number, "by_id": p.by_id, "profile": p.profile,
            })).collect::<Vec<_>>(),
            "configured": {"serial": configured_serial, "llrp": llrp, "rfid_serial": rfid_serial, "hid": hid},
            "pcsc": pcsc,
        });
        println!("{value}");
        return Ok(0);
    }
    println!(
        "firmware profiles: {} from {from} (fingerprint {})",
        profiles.len(),
        profiles.fingerprint()
    );
    for e in &errors {
        println!("  refused: {e}");
    }
    println!("\nserial ports present:");
    if ports.is_empty() {
        println!("  none");
    }
    for p in &ports {
        println!(
            "  {:<20} {:<9} {:<10} {} {}  profile {}",
            p.path.display(),
            p.port_type,
            p.usb_vid_pid.as_deref().unwrap_or("-"),
            p.manufacturer.as_deref().unwrap_or(""),
            p.product.as_deref().unwrap_or(""),
            p.profile.as_deref().unwrap_or("-")
        );
    }
    println!("\nconfigured serial scanners:");
    for s in &configured_serial {
        println!(
            "  {:<16} {:<28} {:<8} {}",
            s["name"].as_str().unwrap_or(""),
            s["path"].as_str().unwrap_or(""),
            if s["present"] == true {
                "present"
            } else {
                "ABSENT"
            },
            s["profile"].as_str().or(s["error"].as_str()).unwrap_or("")
        );
    }
    println!("\nPC/SC readers:");
    match &pcsc {
        serde_json::Value::Array(readers) if readers.is_empty() => println!("  none connected"),
        serde_json::Value::Array(readers) => {
            for r in readers {
                println!("  {}", r.as_str().unwrap_or(""));
            }
        }
        other => println!("  {}", other["error"].as_str().unwrap_or("unavailable")),
    }
    println!("\nconfigured LLRP readers:");
    for r in &llrp {
        println!(
            "  {:<16} {:<22} {}",
            r["name"].as_str().unwrap_or(""),
            r["address"].as_str().unwrap_or(""),
            if r["reachable"] == true {
                "reachable"
            } else {
                "NOT REACHABLE"
            }
        );
    }
    println!("\nconfigured UHF serial modules:");
    for m in &rfid_serial {
        println!(
            "  {:<16} {:<28} {:<8} {}",
            m["name"].as_str().unwrap_or(""),
            m["path"].as_str().unwrap_or(""),
            if m["present"] == true {
                "present"
            } else {
                "ABSENT"
            },
            m["profile"].as_str().or(m["error"].as_str()).unwrap_or("")
        );
    }
    println!("\nconfigured HID scanners:");
    for h in &hid {
        println!(
            "  {:<16} {:<28} {}",
            h["name"].as_str().unwrap_or(""),
            h["path"].as_str().unwrap_or(""),
            if h["present"] == true {
                "present"
            } else {
                "ABSENT"
            }
        );
    }
    Ok(0)
}

fn pcsc_readers() -> serde_json::Value {
    let ctx = match pcsc::Context::establish(pcsc::Scope::User) {
        Ok(c) => c,
        Err(e) => {
            return serde_json::json!({"error": format!("pcscd not reachable ({e}): is pcscd installed and pcscd.socket enabled?")});
        }
    };
    match ctx.list_readers_owned() {
        Ok(names) => serde_json::Value::Array(
            names
                .iter()
                .map(|n| serde_json::Value::String(n.to_string_lossy().into_owned()))
                .collect(),
        ),
        Err(pcsc::Error::NoReadersAvailable) => serde_json::Value::Array(Vec::new()),
        Err(e) => serde_json::json!({"error": e.to_string()}),
    }
}

/// The agent owns its devices (one owner per device): when it runs, watch its live stream;
/// otherwise open the configured devices here.
fn watch(config: &Config, json: bool, agent: Option<std::net::SocketAddr>) -> anyhow::Result<u8> {
    let mut addr = agent.unwrap_or(config.api.listen);
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        eprintln!("relais devices watch: following the running agent at {addr} (Ctrl-C to stop)");
        // HTTP/1.0: the agent streams the body until it closes, no chunked decoding needed.
        write!(
            stream,
            "GET /v1/devices/live HTTP/1.0\r\nHost: {addr}\r\n\r\n"
        )?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        // Skip the response head.
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
        }
        for line in reader.lines() {
            let line = line?;
            print_live(&line, json);
        }
        return Ok(0);
    }
    if config.devices.is_empty() {
        anyhow::bail!(
            "no agent running at {addr} and no devices configured in [devices]: nothing to watch"
        );
    }
    eprintln!(
        "relais devices watch: no agent at {addr}; opening the configured devices here (Ctrl-C to stop)"
    );
    let (profiles, _, _) = runtime::load_profiles(&config.devices);
    let (sink, mut events) = EventSink::channel(256);
    let _threads = runtime::start(&config.devices, &profiles, &sink);
    drop(sink);
    while let Some(event) = events.blocking_recv() {
        let value = describe(&event, &config.scans.rules);
        print_live(&value.to_string(), json);
    }
    Ok(0)
}

/// A read as the agent would publish it: loyalty cards recognised by the store's patterns and
/// scans that look like card numbers shown without their data, as on the live stream.
fn describe(event: &DeviceEvent, rules: &relais::scan::ScanRules) -> serde_json::Value {
    match event {
        DeviceEvent::Scan {
            device,
            data,
            at_ms,
        } => {
            if let Some(card) = relais::scan::cards::recognise(&rules.cards, data) {
                return serde_json::json!({"device": device, "at_ms": at_ms, "kind": "card",
                    "detail": {"via": "scanner", "card_pattern": card.pattern,
                        "note": "not looked up: no agent running"}});
            }
            let decoded = relais::decode::decode_barcode(data);
            let detail = if relais::scan::cards::looks_like_card_number(data, &decoded) {
                relais::reads::withheld_scan_detail()
            } else {
                relais::reads::scan_detail(data, &decoded, None)
            };
            serde_json::json!({"device": device, "at_ms": at_ms, "kind": "scan",
                "detail": detail})
        }
        other => {
            let mut v = serde_json::to_value(other).unwrap_or_default();
            if let Some(obj) = v.as_object_mut() {
                let kind = obj.remove("kind").unwrap_or_default();
                obj.insert("kind".into(), kind);
            }
            v
        }
    }
}

fn print_live(line: &str, json: bool) {
    if json {
        println!("{line}");
        return;
    }
    let v: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(_) => return,
    };
    let device = v["device"].as_str().unwrap_or("");
    let kind = v["kind"].as_str().unwrap_or("");
    let d = &v["detail"];
    let text = match kind {
        "scan" => {
            let product = d["product"]["name"]
                .as_str()
                .map(|n| format!(" -> {n}"))
                .unwrap_or_default();
            let gtin = d["decoded"]["gtin"]
                .as_str()
                .map(|g| format!(" GTIN {g}"))
                .unwrap_or_default();
            let err = d["error"]
                .as_str()
                .map(|e| format!(" INVALID: {e}"))
                .unwrap_or_default();
            let charge = d["scan"]["price_to_charge"]
                .as_object()
                .map(|c| {
                    format!(
                        " charge {} {}",
                        c.get("amount_minor").unwrap_or(&serde_json::Value::Null),
                        c.get("currency").and_then(|v| v.as_str()).unwrap_or("")
                    )
                })
                .unwrap_or_default();
            let expired = if d["scan"]["expired"] == true {
                " EXPIRED"
            } else {
                ""
            };
            match d["withheld"].as_str() {
                Some(why) => format!("(data withheld: {})", why.replace('_', " ")),
                None => format!(
                    "{:?}{gtin}{product}{charge}{expired}{err}",
                    d["data"].as_str().unwrap_or("")
                ),
            }
        }
        "card" => {
            let via = if d["via"] == "scanner" {
                " (read by a scanner)"
            } else {
                ""
            };
            match d["customer"]["display_name"].as_str() {
                Some(name) => format!("card of {name}{via}"),
                None => format!("unknown card{via}"),
            }
        }
        "tag_arrived" | "tag_departed" => format!(
            "EPC {} antenna {}",
            v["detail"]["epc"]
                .as_str()
                .or(v["epc_hex"].as_str())
                .unwrap_or(""),
            v["detail"]["antenna"]
                .as_u64()
                .or(v["antenna"].as_u64())
                .unwrap_or(0)
        ),
        "status" => format!(
            "{} {}",
            d["state"].as_str().or(v["state"].as_str()).unwrap_or(""),
            d["detail"].as_str().or(v["detail"].as_str()).unwrap_or("")
        ),
        _ => line.to_string(),
    };
    println!("{device:<28} {kind:<13} {text}");
}
