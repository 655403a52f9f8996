//! Store hardware: pcscd, the configured serial (and HID) device nodes with the permissions
//! the service user needs, and the firmware profile each serial scanner gets — matched with
//! the agent's own code (`devices::runtime::load_profiles`, `devices::serial::pick_profile`).

use super::Finding;
use super::files::owner_mode;
use crate::config::Config;
use crate::provision::users::{self, Account};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

pub(super) fn pcscd(config: &Config) -> Finding {
    const CHECK: &str = "pcscd";
    let Some(pcsc) = &config.devices.pcsc else {
        return Finding::pass(CHECK, "not configured ([devices.pcsc] absent)");
    };
    let context = match pcsc::Context::establish(pcsc::Scope::User) {
        Ok(context) => context,
        Err(e) => {
            return Finding::fail(
                CHECK,
                format!("pcscd is not reachable: {e}"),
                "install and start it: `sudo apt-get install pcscd && sudo systemctl enable --now \
                 pcscd.socket` (relais.service wants pcscd.socket); \
                 /usr/share/doc/relais/pcsc.md",
            );
        }
    };
    let readers: Vec<String> = match context.list_readers_owned() {
        Ok(names) => names
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect(),
        Err(pcsc::Error::NoReadersAvailable) => Vec::new(),
        Err(e) => {
            return Finding::fail(
                CHECK,
                format!("pcscd answers but cannot list readers: {e}"),
                "restart it (`sudo systemctl restart pcscd`) and check `sudo journalctl -u pcscd`",
            );
        }
    };
    let plug_fix = "plug the reader in (pcscd picks it up by itself); `pcsc_scan` shows what \
                    pcscd sees; /usr/share/doc/relais/pcsc.md lists the supported readers";
    if readers.is_empty() {
        return Finding::warn(CHECK, "pcscd answers; no reader connected", plug_fix);
    }
    let used: Vec<&String> = match &pcsc.reader_filter {
        Some(filter) => readers
            .iter()
            .filter(|r| r.contains(filter.as_str()))
            .collect(),
        None => readers.iter().collect(),
    };
    if used.is_empty() {
        return Finding::warn(
            CHECK,
            format!(
                "pcscd answers; readers {} — none matches reader_filter {:?}",
                readers.join(", "),
                pcsc.reader_filter.as_deref().unwrap_or_default()
            ),
            "plug in the expected reader, or correct devices.pcsc.reader_filter",
        );
    }
    Finding::pass(
        CHECK,
        format!(
            "pcscd answers; reader(s) used: {}",
            used.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// One finding per configured serial scanner and HID scanner (or one saying there are none).
pub(super) fn serial(config: &Config, service: Option<&Account>) -> Vec<Finding> {
    let mut out = Vec::new();
    for (index, s) in config.devices.serial.iter().enumerate() {
        out.push(device_node(
            &format!("serial:{}", s.name),
            &s.path,
            &format!("devices.serial[{index}].path"),
            "dialout",
            service,
        ));
    }
    for (index, m) in config.devices.rfid_serial.iter().enumerate() {
        out.push(device_node(
            &format!("rfid-serial:{}", m.name),
            &m.path,
            &format!("devices.rfid_serial[{index}].path"),
            "dialout",
            service,
        ));
    }
    for (index, h) in config.devices.hid.iter().enumerate() {
        out.push(device_node(
            &format!("hid:{}", h.name),
            &h.path,
            &format!("devices.hid[{index}].path"),
            "input",
            service,
        ));
    }
    if out.is_empty() {
        out.push(Finding::pass(
            "serial",
            "no serial scanner, UHF serial module or HID scanner configured",
        ));
    }
    // `relais demo` writes it; on a store box it would invent reads beside the real devices.
    if config.devices.simulated.is_some() {
        out.push(Finding::warn(
            "simulated devices",
            "[devices.simulated] is set: a simulated scanner and NFC reader invent reads (relais demo only)",
            "remove [devices.simulated] from the config and reload (`sudo systemctl reload relais`)",
        ));
    }
    out
}

fn device_node(
    check: &str,
    path: &Path,
    key: &str,
    group: &str,
    service: Option<&Account>,
) -> Finding {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Finding::fail(
                check,
                format!("{} does not exist", path.display()),
                format!(
                    "plug the scanner in and check its cable; if it is plugged in, correct {key} \
                     = \"{}\" (`relais devices list` shows the ports present; prefer the \
                     /dev/serial/by-id/… name, or the /dev/relais/… links the package's udev \
                     rules make)",
                    path.display()
                ),
            );
        }
        Err(e) => {
            return Finding::fail(
                check,
                format!("cannot inspect {}: {e}", path.display()),
                format!("check {key} and the permissions of its directory"),
            );
        }
    };
    if !meta.file_type().is_char_device() {
        return Finding::warn(
            check,
            format!("{} is not a character device", path.display()),
            format!("point {key} at the device node (a tty or an input event device)"),
        );
    }
    let permission_fix = |who: &str| {
        format!(
            "add {who} to the device's group: `sudo usermod -aG {group} {who}` (the package puts \
             the service user in dialout and input; log in again after usermod); known scanners \
             get group {group} and mode 0660 from /lib/udev/rules.d/60-relais.rules (installed \
             by the package: `sudo udevadm trigger` after plugging in)"
        )
    };
    match rustix::fs::access(
        path,
        rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
    ) {
        Ok(()) => {}
        Err(rustix::io::Errno::ACCESS) => {
            return Finding::fail(
                check,
                format!(
                    "{} ({}) cannot be opened read/write by this user",
                    path.display(),
                    owner_mode(&meta)
                ),
                permission_fix("your user"),
            );
        }
        Err(e) => {
            return Finding::fail(
                check,
                format!("{}: {e}", path.display()),
                format!("check {key}"),
            );
        }
    }
    if let Some(account) = service
        && !users::may_access(account, meta.uid(), meta.gid(), meta.mode(), true)
    {
        return Finding::fail(
            check,
            format!(
                "{} ({}) cannot be opened read/write by the service user {}",
                path.display(),
                owner_mode(&meta),
                account.name
            ),
            permission_fix(&account.name),
        );
    }
    Finding::pass(
        check,
        format!(
            "{} present, read/write ({})",
            path.display(),
            owner_mode(&meta)
        ),
    )
}

pub(super) fn profiles(config: &Config) -> Finding {
    const CHECK: &str = "profiles";
    let (profiles, from, refused) = crate::devices::runtime::load_profiles(&config.devices);
    let mut matched = Vec::new();
    let mut problems = Vec::new();
    for s in &config.devices.serial {
        match crate::devices::serial::pick_profile(&profiles, s) {
            Ok(p) => matched.push(format!("{} → {}", s.name, p.label())),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let loaded = format!("{} profile(s) from {from}", profiles.len());
    if !problems.is_empty() {
        return Finding::fail(
            CHECK,
            format!("{loaded}; {}", problems.join("; ")),
            "the agent does not start a scanner without a profile: follow the message, and see \
             `relais devices list` for what each port matched \
             (/usr/share/doc/relais/firmware-profiles.md)",
        );
    }
    let matched = if matched.is_empty() {
        "no serial scanner needs one".to_owned()
    } else {
        matched.join(", ")
    };
    if !refused.is_empty() {
        return Finding::warn(
            CHECK,
            format!(
                "{loaded}; {matched}; {} file(s) refused: {}",
                refused.len(),
                refused.join("; ")
            ),
            "fix or remove the refused profile files (the message says why), then `sudo systemctl \
             reload relais`",
        );
    }
    Finding::pass(CHECK, format!("{loaded}; {matched}"))
}
