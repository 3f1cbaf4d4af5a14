//! `tollgate checkpoint key` and `tollgate witness key|serve`: the
//! checkpoint verifier key of a ledger, and a C2SP `tlog-witness` server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tollgate_gateway::datadir::Layout;

use tollgate_ledger::prelude::*;
use tollgate_protocol::checkpoint::{NOTE_ED25519, VerifierKey};
use tollgate_signer::Ed25519Signer;
use tollgate_witness::{Witness, verifier_key};

use crate::error::CliError;

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(usage)
}

/// The checkpoint verifier key of the ledger in `data_dir` (or at
/// `database_url`): its recorded origin with the data folder's
/// checkpoint key. A ledger that never served has no origin yet.
pub fn checkpoint_key(
    data: &Layout,
    key: Option<&str>,
    database: Option<&Path>,
    database_url: Option<&str>,
) -> Result<String, CliError> {
    let spec = key.map_or_else(
        || data.checkpoint_key().display().to_string(),
        str::to_owned,
    );
    let (public, origin) = runtime()?.block_on(async {
        let signer = tollgate_gateway::checkpoint_signer(&spec)
            .await
            .map_err(usage)?;
        let public = signer
            .ed25519_public()
            .ok_or_else(|| CliError::Usage(format!("{spec}: not an Ed25519 key")))?;
        let origin = recorded(database, database_url, data).await?;
        Ok::<_, CliError>((public, origin))
    })?;
    let vkey = VerifierKey::new(&origin, NOTE_ED25519, public).map_err(usage)?;
    Ok(vkey.to_string())
}

/// The origin the ledger recorded.
async fn recorded(
    database: Option<&Path>,
    database_url: Option<&str>,
    data: &Layout,
) -> Result<String, CliError> {
    match database_url {
        Some(url) => {
            let l = tollgate_ledger::postgres::PgLedger::open(
                tollgate_ledger::postgres::PgOptions::new(url),
            )
            .await
            .map_err(usage)?;
            recorded_origin(&l).await
        }
        None => {
            let path = database.map_or_else(|| data.ledger(), Path::to_owned);
            if !path.exists() {
                return Err(CliError::Usage(format!(
                    "{}: no ledger (start the gateway once: its origin is chosen then)",
                    path.display()
                )));
            }
            let l = tollgate_ledger::SqliteLedger::open(tollgate_ledger::SqliteOptions::new(&path))
                .await
                .map_err(usage)?;
            recorded_origin(&l).await
        }
    }
}

async fn recorded_origin<L: Ledger>(l: &L) -> Result<String, CliError> {
    l.origin(None).await.map_err(usage)?.ok_or_else(|| {
        CliError::Usage(
            "the ledger has no origin yet: start the gateway once (--origin chooses it)".into(),
        )
    })
}

/// `tollgate witness key`: a new witness key in `out`; its verifier key.
pub fn witness_key(out: &Path, name: &str) -> Result<String, CliError> {
    let key = Ed25519Signer::generate().map_err(usage)?;
    let vkey = verifier_key(name, &key).map_err(usage)?;
    key.save(out).map_err(usage)?;
    Ok(vkey.to_string())
}

/// `tollgate witness serve`.
pub fn witness_serve(
    key: &Path,
    name: &str,
    logs: &[String],
    state: PathBuf,
    listen: std::net::SocketAddr,
) -> Result<String, CliError> {
    let key = Ed25519Signer::load(key).map_err(usage)?;
    let logs = logs
        .iter()
        .map(|l| VerifierKey::parse(l).map_err(|e| CliError::Usage(format!("--log: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let witness = Arc::new(Witness::open(name, key, logs, state).map_err(usage)?);
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| CliError::Usage(format!("cannot listen on {listen}: {e}")))?;
        let local = listener.local_addr().map_err(usage)?;
        println!("witness {}", witness.verifier_key());
        println!("listening on http://{local}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        tollgate_witness::serve(witness, listener, tollgate_gateway::service::signals())
            .await
            .map_err(usage)?;
        Ok("stopped".to_owned())
    })
}
