//! `relaisctl snapshot build`: turn central's NDJSON exports into what agents download over
//! HTTPS, i.e. one gzip file per stream plus `manifest.json` (docs/snapshot-format.md).
//!
//! Every file is validated with the agent's own import before it is published: a snapshot
//! that the stores would refuse must fail here, at central, not in every store at once.

use crate::replica::Stream;
use crate::replica::import::{ImportError, Progress, import_file};
use crate::sync::snapshot::{MANIFEST_VERSION, Manifest, ManifestEntry};
use ring::digest::{Context, SHA256};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

pub const MANIFEST_FILE: &str = "manifest.json";
/// Published files are read by the web server serving them, not only by their owner.
const PUBLISHED_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no input files: give at least one stream and its NDJSON snapshot")]
    NoInputs,
    #[error("{stream} is given twice ({first} and {second}); a snapshot holds one file per stream")]
    DuplicateStream {
        stream: Stream,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("version {0} is too large; snapshot versions are at most {max}", max = i64::MAX)]
    Version(u64),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot write {path}: {source}. Check that the output directory is writable and the disk is not full"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid {stream} snapshot; nothing was published. {source}")]
    Invalid {
        path: PathBuf,
        stream: Stream,
        /// Boxed: an import error is large and this enum travels through every `?`.
        source: Box<ImportError>,
    },
    #[error("the snapshot cannot be published: {0}")]
    Manifest(String),
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Validate each `(stream, file)` (plain or gzip NDJSON) with the agent's import rules, publish
/// it into `out_dir` as `<stream>-<version>.ndjson.gz`, then write `manifest.json` atomically.
///
/// The manifest is written last, so a reader never sees one that points at a missing or
/// half-written file. Files of earlier versions in `out_dir` are left alone: agents in the
/// middle of downloading the previous manifest still need them.
pub fn build(
    inputs: &[(Stream, PathBuf)],
    version: u64,
    out_dir: &Path,
) -> Result<Manifest, BuildError> {
    if inputs.is_empty() {
        return Err(BuildError::NoInputs);
    }
    if i64::try_from(version).is_err() {
        return Err(BuildError::Version(version));
    }
    for (i, (stream, path)) in inputs.iter().enumerate() {
        if let Some((_, first)) = inputs[..i].iter().find(|(s, _)| s == stream) {
            return Err(BuildError::DuplicateStream {
                stream: *stream,
                first: first.clone(),
                second: path.clone(),
            });
        }
    }
    std::fs::create_dir_all(out_dir).map_err(write_error(out_dir))?;

    // The import needs a replica to write into; it lives next to the output (a snapshot can be
    // larger than a tmpfs /tmp) and goes away whatever happens.
    let scratch = Scratch::new(out_dir)?;
    let replica = scratch.path.join("replica.db");
    for (stream, path) in inputs {
        import_file(&replica, *stream, path, Some(version), Progress::Quiet).map_err(|source| {
            BuildError::Invalid {
                path: path.clone(),
                stream: *stream,
                source: Box::new(source),
            }
        })?;
    }
    drop(scratch);

    let mut entries = Vec::with_capacity(inputs.len());
    for (stream, path) in inputs {
        let file = format!("{}-{version}.ndjson.gz", stream.name());
        let (bytes, sha256) = publish_file(path, &out_dir.join(&file))?;
        entries.push(ManifestEntry {
            stream: *stream,
            version,
            file,
            bytes,
            sha256,
        });
    }
    let manifest = Manifest {
        v: MANIFEST_VERSION,
        created_ms: crate::storage::now_unix_ms(),
        streams: entries,
    };
    // The agent's own rules: central must never publish a manifest the stores refuse.
    manifest.validate().map_err(BuildError::Manifest)?;
    let mut json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BuildError::Manifest(e.to_string()))?;
    json.push(b'\n');
    let path = out_dir.join(MANIFEST_FILE);
    crate::storage::write_file_atomically(&path, &json, PUBLISHED_MODE)
        .map_err(write_error(&path))?;
    Ok(manifest)
}

/// A directory removed on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(parent: &Path) -> Result<Scratch, BuildError> {
        let path = parent.join(format!(
            ".relais-build-{}-{}",
            std::process::id(),
            crate::storage::now_unix_ms()
        ));
        std::fs::create_dir_all(&path).map_err(write_error(&path))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(dir = %self.path.display(), "cannot remove the build's scratch directory: {e}");
        }
    }
}

/// Counts and hashes what goes to the file, so the manifest describes exactly those bytes.
struct HashingWriter<W> {
    inner: W,
    hasher: Context,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Copy `input` to `output` gzip-compressed (as is when it already is gzip), through a
/// temporary file renamed into place; returns the size and sha256 of the published bytes.
fn publish_file(input: &Path, output: &Path) -> Result<(u64, String), BuildError> {
    let read_error = |source| BuildError::Read {
        path: input.to_path_buf(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 20, File::open(input).map_err(read_error)?);
    // Gzip is recognised by its magic bytes, as the import does, whatever the file is named.
    let is_gzip = reader
        .fill_buf()
        .map_err(read_error)?
        .starts_with(&[0x1f, 0x8b]);

    let mut tmp_name = output.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = write_published(&mut reader, is_gzip, &tmp);
    let (file, bytes, sha256) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    file.sync_all().map_err(write_error(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, output).map_err(write_error(output))?;
    if let Some(dir) = output.parent() {
        crate::storage::fsync_dir(dir);
    }
    Ok((bytes, sha256))
}

fn write_published(
    reader: &mut impl Read,
    is_gzip: bool,
    tmp: &Path,
) -> Result<(File, u64, String), BuildError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PUBLISHED_MODE);
    }
    let file = options.open(tmp).map_err(write_error(tmp))?;
    let mut out = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Context::new(&SHA256),
        bytes: 0,
    };
    let copied = if is_gzip {
        std::io::copy(reader, &mut out)
    } else {
        let mut gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
        std::io::copy(reader, &mut gz).and_then(|n| gz.finish().map(|_| n))
    };
    copied.map_err(write_error(tmp))?;
    out.flush().map_err(write_error(tmp))?;
    let HashingWriter {
        inner,
        hasher,
        bytes,
    } = out;
    let file = inner
        .into_inner()
        .map_err(|e| write_error(tmp)(e.into_error()))?;
    let sha256 = hasher
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((file, bytes, sha256))
}
