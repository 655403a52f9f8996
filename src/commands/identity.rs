//! `relais identity [--png FILE] [--json]`: the box label — who this box is, for the sticker on
//! it and for central ops, with a QR code of the same (docs/operations.md, "The box label").

use relais::config::{Config, ConfigSource};
use relais::identity::{Certificate, Identity, IdentityError, OpsKeys, rfc3339};
use std::io::Write;
use std::path::PathBuf;

/// A certificate this close to its end is called out, so the renewal is planned, not suffered.
const RENEW_WITHIN_DAYS: i64 = 30;

#[derive(clap::Args)]
pub struct IdentityArgs {
    /// Also write the QR code as a PNG (for the sticker), atomically
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Print the identity as JSON (no terminal QR code)
    #[arg(long)]
    pub json: bool,
}

/// Exit status: 0 printed, 78 this box is not provisioned, 1 the PNG could not be written.
pub fn run(args: &IdentityArgs, config: &Config, source: &ConfigSource) -> anyhow::Result<u8> {
    let now = relais::storage::now_unix_ms().div_euclid(1000);
    let identity = match Identity::read(config, source, now) {
        Ok(identity) => identity,
        Err(e) => return Ok(refuse(&e)),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&identity)?)?;
    } else {
        print_human(&mut out, &identity)?;
        match identity.terminal_qr() {
            Ok(qr) => writeln!(out, "\n{qr}\nQR payload: {}", identity.payload())?,
            Err(e) => return Ok(refuse(&e)),
        }
    }
    if let Some(path) = &args.png {
        if let Err(e) = identity.write_png(path) {
            return Ok(refuse(&e));
        }
        // On stderr with --json, so the JSON on stdout stays one document.
        let note = format!("label PNG written to {}", path.display());
        if args.json {
            eprintln!("{note}");
        } else {
            writeln!(out, "{note}")?;
        }
    }
    out.flush()?;
    Ok(0)
}

fn refuse(e: &IdentityError) -> u8 {
    eprintln!("relais identity: {e}");
    e.exit_code()
}

fn print_human(out: &mut impl Write, id: &Identity) -> std::io::Result<()> {
    writeln!(out, "agent        {}", id.agent_id)?;
    writeln!(out, "store        {}", id.store)?;
    writeln!(
        out,
        "broker       {}",
        id.broker.as_deref().unwrap_or("(none: offline)")
    )?;
    match &id.certificate {
        Certificate::Read {
            path,
            info,
            days_left,
            expired,
            not_yet_valid,
        } => {
            writeln!(out, "certificate  {}", path.display())?;
            writeln!(out, "  subject    {}", info.subject)?;
            writeln!(out, "  issuer     {}", info.issuer)?;
            writeln!(out, "  serial     {}", info.serial)?;
            let when = rfc3339(info.not_after);
            if *expired {
                writeln!(
                    out,
                    "  not after  {when}: EXPIRED {} day(s) ago. The broker refuses this box: \
                     ask central ops for a new bundle and run `relais provision BUNDLE`",
                    days_left.saturating_neg().max(1)
                )?;
            } else if *days_left < RENEW_WITHIN_DAYS {
                writeln!(
                    out,
                    "  not after  {when} ({days_left} days left: renew now, ask central ops \
                     for a new bundle)"
                )?;
            } else {
                writeln!(out, "  not after  {when} ({days_left} days left)")?;
            }
            if *not_yet_valid {
                writeln!(
                    out,
                    "  NOT YET VALID until {}: check the box's clock (`relais doctor`)",
                    rfc3339(info.not_before)
                )?;
            }
            if info.common_name.as_deref() != Some(id.agent_id.as_str()) {
                writeln!(
                    out,
                    "  MISMATCH   its CN {:?} is not the agent id: the broker takes the CN as \
                     the MQTT username and will refuse this box; re-provision it",
                    info.common_name.as_deref().unwrap_or("")
                )?;
            }
        }
        Certificate::Problem { path, problem } => {
            writeln!(
                out,
                "certificate  MISSING {}: {problem}. Re-provision the box (`relais provision \
                 BUNDLE`)",
                path.display()
            )?;
        }
    }
    match &id.ops_keys {
        OpsKeys::Pinned { path, key_ids } => writeln!(
            out,
            "ops keys     {} ({})",
            if key_ids.is_empty() {
                "(none)".to_owned()
            } else {
                key_ids.join(", ")
            },
            path.display()
        )?,
        OpsKeys::NotPinned => writeln!(
            out,
            "ops keys     none pinned (fleet.ops_public_keys_file): remote configuration is \
             refused"
        )?,
        OpsKeys::Problem { problem, .. } => writeln!(out, "ops keys     UNREADABLE: {problem}")?,
    }
    writeln!(out, "config       {}", id.config.display())
}
