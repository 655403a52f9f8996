//! `relais doctor [--json]`: run the checks of `relais::doctor` and show them to a technician
//! (one line each, then the fixes) or to a script (JSON). Exit status: the worst finding.

use relais::doctor::{Report, Status};
use std::io::{IsTerminal, Write};
use std::path::Path;

pub fn run(config_path: Option<&Path>, json: bool, user: Option<&str>) -> anyhow::Result<u8> {
    let report = relais::doctor::run_as(config_path, user);
    let mut out = std::io::stdout().lock();
    // Written with `?`, not println!: `relais doctor | head` must not panic on a closed pipe.
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        let terminal = std::io::stdout().is_terminal();
        print_human(&mut out, &report, terminal)?;
    }
    out.flush()?;
    Ok(report.status.exit_code())
}

fn mark(status: Status, terminal: bool) -> &'static str {
    // A pipe or a log file gets marks every viewer shows the same.
    match (status, terminal) {
        (Status::Pass, true) => "✔",
        (Status::Warn, true) => "!",
        (Status::Fail, true) => "✘",
        (Status::Pass, false) => "[ok]  ",
        (Status::Warn, false) => "[warn]",
        (Status::Fail, false) => "[FAIL]",
    }
}

fn print_human(out: &mut impl Write, report: &Report, terminal: bool) -> std::io::Result<()> {
    let width = report
        .checks
        .iter()
        .map(|c| c.check.chars().count())
        .max()
        .unwrap_or(0);
    for c in &report.checks {
        // The detail may span lines (a config error lists every problem): indent the rest.
        let detail = c
            .detail
            .replace('\n', &format!("\n{:width$}   ", "", width = width + 8));
        writeln!(
            out,
            "{} {:<width$}  {detail}",
            mark(c.status, terminal),
            c.check,
            width = width
        )?;
    }
    let fixes: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.status != Status::Pass)
        .filter_map(|c| c.fix.as_ref().map(|fix| (c, fix)))
        .collect();
    if !fixes.is_empty() {
        writeln!(out, "\nfixes:")?;
        for (c, fix) in fixes {
            writeln!(out, "{} {}: {fix}", mark(c.status, terminal), c.check)?;
        }
    }
    let verdict = match report.status {
        Status::Pass => "every check passed",
        Status::Warn => "warnings (exit 1)",
        Status::Fail => "failures (exit 2)",
    };
    writeln!(out, "\n{}: {verdict}", report.status.name())
}
