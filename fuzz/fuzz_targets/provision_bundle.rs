//! Arbitrary bytes as a technician's `.tar.gz` provisioning bundle, read and checked exactly as
//! `relais provision` does (gzip, tar headers, long names and PAX records, then the manifest's
//! TOML, PEM, the certificate's DER, keys and tokens). Nothing may panic, and the reader must
//! stay inside its bounds: 16 MiB decompressed in all, 1 MiB per file, 64 entries (libFuzzer's
//! `-rss_limit_mb` catches a reader that buffers past them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use relais::provision::bundle::{MAX_FILE_BYTES, load_tar_gz};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = load_tar_gz(Path::new("fuzz.tar.gz"), data) {
        // A bundle that passed every check holds only files within the per-file bound.
        assert!(
            bundle
                .files
                .iter()
                .all(|(_, bytes)| bytes.len() as u64 <= MAX_FILE_BYTES)
        );
    }
});
