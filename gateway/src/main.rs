//! The `tollgate` command.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tollgate: an authorization gateway for actions AI agents take.
#[derive(Parser)]
#[command(name = "tollgate", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an Ed25519 signing key into a new file (mode 0600) and
    /// print its public JWK.
    Keygen {
        /// Where to write the private key; an existing file is never
        /// overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Keygen { out } => match tollgate_gateway::keygen(&out) {
            Ok(jwk) => {
                println!("{jwk}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tollgate: error: {e}");
                ExitCode::from(2)
            }
        },
    }
}
