use std::fmt;
use std::path::PathBuf;

/// Anything that stops the agent from starting with the given configuration.
///
/// Every variant names the file, and where it can the key, the value found and
/// how to fix it; the binary should print it and exit with
/// [`ConfigError::EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "config file {} does not exist; create it, or pass an existing file with --config PATH \
         (or RELAIS_CONFIG), or pass neither to use {} when present and built-in defaults otherwise",
        path.display(),
        crate::config::DEFAULT_CONFIG_PATH
    )]
    Missing { path: PathBuf },

    // `cause` is deliberately not a `#[source]`: the reason is already part of
    // the message, and chained reporters would otherwise print it twice.
    #[error(
        "cannot read config file {}: {cause}; {}",
        path.display(),
        unreadable_fix(cause)
    )]
    Unreadable {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error(
        "{}: malformed TOML: {message}; fix the syntax at that position (quote strings, close \
         brackets, one key = value per line)",
        Where { path, location: *location }
    )]
    Syntax {
        path: PathBuf,
        location: Option<Location>,
        message: String,
    },

    /// One or more keys are unknown, of the wrong type or out of range. Type
    /// and unknown-key errors stop parsing, so they come alone; value errors
    /// are all collected.
    #[error("{}", Invalid { path, problems })]
    Invalid {
        path: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

/// Not root and not allowed: the file is fine, the command needs sudo (the config is
/// `root:relais 0640` on a provisioned box).
fn unreadable_fix(cause: &std::io::Error) -> &'static str {
    if cause.kind() == std::io::ErrorKind::PermissionDenied && !rustix::process::geteuid().is_root()
    {
        "run the command with sudo (the config is readable by root and the relais group only)"
    } else {
        "make it a UTF-8 text file readable by the agent's user, or pass another file with \
         --config PATH"
    }
}

impl ConfigError {
    /// `EX_CONFIG` from sysexits.h, so service managers and operators can tell
    /// a bad config from a crash.
    pub const EXIT_CODE: i32 = 78;

    /// The individual problems of an [`ConfigError::Invalid`]; empty otherwise.
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

/// 1-based position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// `offset` is a byte offset into `text`, as toml reports spans.
    pub(crate) fn from_offset(text: &str, offset: usize) -> Location {
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One thing wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path, e.g. `api.max_body_bytes`.
    pub key: String,
    /// The value as written in the file, when there is one.
    pub found: Option<String>,
    pub location: Option<Location>,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(found) = &self.found {
            write!(f, " (found {found})")?;
        }
        write!(f, "; fix: {}", self.fix)
    }
}

struct Where<'a> {
    path: &'a PathBuf,
    location: Option<Location>,
}

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(loc) => write!(f, "{}:{loc}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

struct Invalid<'a> {
    path: &'a PathBuf,
    problems: &'a [ConfigProblem],
}

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid config file {} ({n} problem{}):",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in self.problems {
            let at = Where {
                path: self.path,
                location: p.location,
            };
            write!(f, "\n  {at}: {p}")?;
        }
        Ok(())
    }
}
