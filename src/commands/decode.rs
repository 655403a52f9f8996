//! `relais decode`: barcodes and EPC tags, one at a time for a technician, or as a JSONL batch
//! for conformance runs against external test vectors.

use std::io::{BufReader, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(subcommand_negates_reqs = true)]
pub struct DecodeArgs {
    /// Decode every record of a JSONL file (fields `input` or `hex`; `id` copied), one JSON result per line
    #[arg(long, value_name = "FILE.jsonl")]
    batch: Option<PathBuf>,
    /// Do not apply GS1's mandatory associations (`req=`, e.g. a lot needs a GTIN): for data read
    /// from one carrier of several on an item, such as a lone lot label. Exclusions, Digital
    /// Link and field rules still apply. With --batch, for every record.
    #[arg(long, global = true)]
    relax_associations: bool,
    #[command(subcommand)]
    what: Option<DecodeCommand>,
}

#[derive(clap::Subcommand)]
enum DecodeCommand {
    /// A scanned or typed barcode: GTIN, GS1 element string (bracketed or with GS), AIM prefix, Digital Link
    Barcode {
        input: String,
        #[arg(long)]
        json: bool,
    },
    /// An EPC from an RFID tag, as hex (SGTIN-96/198, SSCC-96, SGLN, GRAI, GIAI, GID)
    Epc {
        hex: String,
        #[arg(long)]
        json: bool,
    },
}

/// Exit 0 when decoded, 65 (EX_DATAERR) when the input is invalid.
pub fn run(args: DecodeArgs) -> anyhow::Result<u8> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut opts = relais::decode::DecodeOptions::default();
    opts.gs1.require_associations = !args.relax_associations;
    let ok = match (args.batch, args.what) {
        (Some(_), Some(_)) => anyhow::bail!(
            "give either --batch FILE or a subcommand (`decode barcode S`, `decode epc HEX`), not both"
        ),
        (Some(path), None) => {
            let file = std::fs::File::open(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let summary =
                relais::decode::batch::run_batch_with(BufReader::new(file), &mut out, &opts)?;
            out.flush()?;
            eprintln!(
                "decoded {} records: {} ok, {} invalid, {} malformed lines, {} unsupported linters",
                summary.records, summary.ok, summary.failed, summary.malformed, summary.unsupported
            );
            true
        }
        (None, Some(DecodeCommand::Barcode { input, json })) => {
            relais::decode::cli::barcode_with(&input, &opts, json, &mut out)?
        }
        (None, Some(DecodeCommand::Epc { hex, json })) => {
            relais::decode::cli::epc(&hex, json, &mut out)?
        }
        (None, None) => anyhow::bail!(
            "say what to decode: `relais decode barcode S`, `decode epc HEX` or `decode --batch FILE`"
        ),
    };
    Ok(if ok { 0 } else { super::EXIT_INVALID })
}
