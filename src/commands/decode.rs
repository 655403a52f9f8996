//! `relais decode`: barcodes and EPC tags, one at a time for a technician, or as a JSONL batch
//! for conformance runs against external test vectors.

use std::io::{BufReader, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DecodeArgs {
    /// Decode every record of a JSONL file (fields `input` or `hex`; `id` copied), one JSON result per line
    #[arg(long, value_name = "FILE.jsonl")]
    batch: Option<PathBuf>,
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
    let ok = match (args.batch, args.what) {
        (Some(path), _) => {
            let file = std::fs::File::open(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let summary = relais::decode::batch::run_batch(BufReader::new(file), &mut out)?;
            out.flush()?;
            eprintln!(
                "decoded {} records: {} ok, {} invalid, {} malformed lines, {} unsupported linters",
                summary.records, summary.ok, summary.failed, summary.malformed, summary.unsupported
            );
            true
        }
        (None, Some(DecodeCommand::Barcode { input, json })) => {
            relais::decode::cli::barcode(&input, json, &mut out)?
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
