//! The command's error: what to print, and the exit status.

/// A command's failure and its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The input is invalid (exit 1).
    #[error("{0}")]
    Invalid(String),
    /// A usage or I/O error (exit 2).
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid(_) => 1,
            Self::Usage(_) => 2,
        }
    }
}

impl From<tollgate_client::Error> for CliError {
    fn from(e: tollgate_client::Error) -> Self {
        match e {
            tollgate_client::Error::Problem { .. } => Self::Invalid(e.to_string()),
            other => Self::Usage(other.to_string()),
        }
    }
}
