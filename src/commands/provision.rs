//! `relais provision BUNDLE`: the technician's side of `relais::provision` — what will be (or
//! was) done, file by file, and what to run next.

use relais::provision::{self, Action, Options, Plan, ProvisionError};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct ProvisionArgs {
    /// The bundle from central ops: a .tar.gz file or a directory (docs/provisioning.md)
    pub bundle: PathBuf,
    /// Where the certificates, keys and tokens go
    #[arg(long, default_value = "/etc/relais")]
    pub secrets_dir: PathBuf,
    /// The account the service runs as; the secrets are given to it when run as root
    #[arg(long, default_value = relais::doctor::SERVICE_USER)]
    pub user: String,
    /// Check the bundle and print what would be done, without writing anything
    #[arg(long)]
    pub dry_run: bool,
    /// Accept a bundle for another agent id than this box's (a replaced or reassigned box):
    /// without it such a bundle is refused
    #[arg(long)]
    pub replace_identity: bool,
}

/// `config`: the global `--config` (or `RELAIS_CONFIG`), the file the bundle's settings are
/// merged into, created when missing; `/etc/relais/relais.toml` when not given.
///
/// Exit status: 0 done (or nothing to do), 78 the bundle (or the config it merges into) was
/// refused, 1 anything else; nothing is written unless every check passed.
pub fn run(args: ProvisionArgs, config: Option<&Path>) -> u8 {
    let options = Options {
        bundle: args.bundle,
        config: config.map_or_else(
            || PathBuf::from(relais::config::DEFAULT_CONFIG_PATH),
            Path::to_path_buf,
        ),
        secrets_dir: args.secrets_dir,
        user: args.user,
        replace_identity: args.replace_identity,
    };
    let plan = match provision::plan(&options) {
        Ok(plan) => plan,
        Err(e) => return refuse(&e),
    };
    print_plan(&plan, args.dry_run);
    if plan.unchanged() {
        println!("\nunchanged: this box already holds this bundle");
        return 0;
    }
    if args.dry_run {
        println!("\ndry run: nothing was written");
        return 0;
    }
    let backups = match provision::apply(&plan) {
        Ok(backups) => backups,
        Err(e) => return refuse(&e),
    };
    for (what, backup) in backups {
        println!("previous {what} kept as {}", backup.display());
    }
    println!(
        "\nprovisioned {} ({}).\nnext:\n  systemctl restart relais    # identity, tokens and certificates are read at start\n  relais doctor               # proves the config, the broker, the ACL and the devices",
        plan.bundle.agent_id, plan.bundle.broker
    );
    0
}

fn refuse(e: &ProvisionError) -> u8 {
    eprintln!("relais provision: {e}");
    e.exit_code()
}

fn print_plan(plan: &Plan, dry_run: bool) {
    let verb = if dry_run { "would " } else { "" };
    println!(
        "bundle {}: agent {}, broker {}",
        plan.bundle.source.display(),
        plan.bundle.agent_id,
        plan.bundle.broker
    );
    for note in &plan.bundle.notes {
        println!("  checked: {note}");
    }
    if let Some(note) = &plan.owner_note {
        println!("  note: {note}");
    }
    if let Some(previous) = &plan.replaced_identity {
        let change = if dry_run { "would change" } else { "changes" };
        println!(
            "  identity: this box {change} from {previous} to {} (--replace-identity)",
            plan.bundle.agent_id
        );
    }
    if plan.create_secrets_dir {
        println!("{verb}create {} (0750)", plan.secrets_dir.display());
    }
    let owner = match plan.owner {
        Some((uid, gid)) => format!(", owner {uid}:{gid}"),
        None => String::new(),
    };
    for step in &plan.files {
        println!(
            "{:<14} {} ({}, {:04o}{owner})",
            label(step.action, dry_run),
            step.path.display(),
            step.what,
            step.mode
        );
    }
    println!(
        "{:<14} {} ({:04o})",
        label(plan.config.action, dry_run),
        plan.config.path.display(),
        plan.config.mode
    );
    if plan.config.action != Action::Unchanged {
        for (key, value) in &plan.settings {
            println!("    {key} = {value:?}");
        }
        if !plan.comments_kept {
            println!(
                "    note: the file's layout could not be edited in place; it is rewritten and \
                 its comments are only in the backup"
            );
        }
    }
}

fn label(action: Action, dry_run: bool) -> String {
    match (action, dry_run) {
        (Action::Unchanged, _) => "unchanged".into(),
        (a, true) => format!("would {}", a.describe()),
        (a, false) => a.describe().into(),
    }
}
