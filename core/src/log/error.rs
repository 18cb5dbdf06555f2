//! The log's error type: every variant names the file (and the seq, where one is involved).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot use data dir {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("data dir {dir} is in use by {owner}; stop that process or pass another --data-dir")]
    InUse { dir: PathBuf, owner: String },
    /// A read found no log where it looked (readers never create one).
    #[error(
        "no omniroute log at {path}: {what}; check --data-dir, or server.data_dir in the file \
         given with --config (without either, the data dir is .omniroute in the current directory)"
    )]
    NoLog { path: PathBuf, what: &'static str },
    #[error("cannot salvage into {path}: {reason}")]
    SalvageTarget { path: PathBuf, reason: String },
    #[error("{path} is not a readable omniroute log: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path} was written with log format {found:?}, this build reads {expected:?}")]
    Format {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("{path}: record {seq}: {reason}")]
    BadRecord {
        path: PathBuf,
        seq: u64,
        reason: crate::record::RecordError,
    },
    #[error("{path}: storage error: {source}")]
    Storage {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error("event could not be encoded: {0}")]
    Encode(String),
    #[error("event log write failed: {0}")]
    WriteFailed(String),
    #[error(
        "{path} cannot be read right now: the writer is reopening it after a failed write ({reason}); retry shortly"
    )]
    Unavailable { path: PathBuf, reason: String },
    #[error("the event log queue is full")]
    Full,
    #[error("the event log is closed")]
    Closed,
}

impl LogError {
    pub(crate) fn storage(path: &std::path::Path, e: impl Into<redb::Error>) -> Self {
        let source = Box::new(e.into());
        match *source {
            redb::Error::Corrupted(ref reason) => LogError::Corrupt {
                path: path.to_path_buf(),
                reason: reason.clone(),
            },
            _ => LogError::Storage {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}
