//! Reading the files a command is given.

use std::path::Path;

use tollgate_policies::{Bundle, Error as PolicyError};
use tollgate_protocol::{Value, parse};

use crate::error::CliError;

pub fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

pub fn read_json(path: &Path) -> Result<Value, CliError> {
    parse(&read(path)?).map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))
}

pub fn load_bundle(dir: &Path) -> Result<Bundle, CliError> {
    Bundle::load(dir).map_err(|e| match e {
        PolicyError::Bundle(problems) => CliError::Invalid(
            problems
                .iter()
                .map(|p| format!("{}/{p}", dir.display()))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        PolicyError::Io { .. } => CliError::Usage(e.to_string()),
        other => CliError::Invalid(other.to_string()),
    })
}
