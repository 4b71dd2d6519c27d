//! retry's own errors. Every one of them ends the run with status 125
//! before (or instead of) an attempt, with one line on stderr.

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum Error {
    /// A bad option value: `invalid value 'x' for '--until': reason`.
    Usage { option: String, value: String, reason: String },
    /// Options that do not fit together.
    Conflict(String),
    /// The command line could not be parsed: clap's message in one line,
    /// and its tip when it has one.
    Args { message: String, tip: Option<String> },
    /// retry could not set up the run (temp files, state dir, ...).
    Io { what: String, source: io::Error },
    /// The state store cannot be used (reported as `store_error`).
    Store(String),
}

impl Error {
    pub fn usage(option: &str, value: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Usage { option: option.to_string(), value: value.into(), reason: reason.into() }
    }

    pub fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }

    /// retry's exit status for this error: every one of them is 125
    /// (SPEC "Exit status": retry's own failure).
    pub fn status(&self) -> u8 {
        match self {
            Error::Usage { .. }
            | Error::Conflict(_)
            | Error::Args { .. }
            | Error::Io { .. }
            | Error::Store(_) => crate::status::USAGE,
        }
    }

    /// The hint printed after a usage error.
    pub fn hint(&self) -> Option<String> {
        const HELP: &str = "try 'retry --help' for more information";
        match self {
            Error::Usage { .. } | Error::Conflict(_) => Some(HELP.to_string()),
            Error::Args { tip, .. } => Some(tip.clone().unwrap_or_else(|| HELP.to_string())),
            Error::Io { .. } | Error::Store(_) => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage { option, value, reason } => {
                write!(f, "invalid value '{value}' for '{option}': {reason}")
            }
            Error::Conflict(msg) => f.write_str(msg),
            Error::Args { message, .. } => f.write_str(message),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Store(msg) => f.write_str(msg),
        }
    }
}
