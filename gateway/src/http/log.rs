//! The transparency-log API (spec §6): the latest signed checkpoint
//! and the tree's tiles (c2sp.org/tlog-tiles, under `/log/`), inclusion
//! and consistency proofs, and the checkpoint verifier key.
//!
//! Tiles are immutable and served with long-lived caching headers (a CDN
//! may serve them); the checkpoint is mutable and cached for a second at
//! most. Entry bundles (`/log/tile/entries/…`) are not served: an entry
//! may be longer than the 65 535 bytes their length prefix allows; the
//! entries come from `/v1/ledger/entries` and the export instead.

use std::sync::Arc;

use super::UrlPath;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tollgate_ledger::{Ledger, tree};
use tollgate_protocol::checkpoint::hash_b64;
use tollgate_protocol::{Object, Value};

use super::admin::ReadAuth;
use super::{ApiError, App, object};

pub(super) fn router<L: Ledger>() -> Router<Arc<App<L>>> {
    Router::new()
        .route("/log/checkpoint", get(checkpoint::<L>))
        .route("/log/tile/{*path}", get(tile::<L>))
        .route("/v1/proofs/inclusion", get(inclusion::<L>))
        .route("/v1/proofs/consistency", get(consistency::<L>))
        .route("/.well-known/tollgate-checkpoint-key", get(key::<L>))
}

fn disabled() -> ApiError {
    ApiError::NotFound("checkpoints are not enabled on this gateway".into())
}

/// The latest checkpoint's size and note; 404 before the first.
async fn latest<L: Ledger>(app: &App<L>) -> Result<(u64, String), ApiError> {
    app.gateway
        .checkpoints()
        .checkpointer()
        .ok_or_else(disabled)?;
    app.gateway
        .ledger()
        .checkpoint()
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound("no checkpoint has been made yet".into()))
}

async fn checkpoint<L: Ledger>(
    _: ReadAuth,
    State(app): State<Arc<App<L>>>,
) -> Result<Response, ApiError> {
    let (_, note) = latest(&app).await?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=1"),
        ],
        note,
    )
        .into_response())
}

async fn key<L: Ledger>(State(app): State<Arc<App<L>>>) -> Result<Response, ApiError> {
    let c = app
        .gateway
        .checkpoints()
        .checkpointer()
        .ok_or_else(disabled)?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", c.verifier_key()),
    )
        .into_response())
}

async fn tile<L: Ledger>(
    _: ReadAuth,
    State(app): State<Arc<App<L>>>,
    UrlPath(path): UrlPath<String>,
) -> Result<Response, ApiError> {
    if path.starts_with("entries/") {
        return Err(ApiError::NotFound(
            "entry bundles are not served (an entry may exceed 65535 bytes); read /v1/ledger/entries"
                .into(),
        ));
    }
    let t = tree::TilePath::parse(&path).ok_or_else(|| {
        ApiError::NotFound(format!("{path:?} is not a tile path (<L>/<N>[.p/<W>])"))
    })?;
    let (size, _) = latest(&app).await?;
    let data = tree::tile(app.gateway.ledger(), t, size)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "tile {path} is not in the tree of the latest checkpoint ({size} entries)"
            ))
        })?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        data,
    )
        .into_response())
}

/// The named positive integers of a query, each at most once; anything
/// else is an [`ApiError::InvalidQuery`] naming it.
fn numbers(query: Option<&str>, names: &[&str]) -> Result<Vec<Option<u64>>, ApiError> {
    let mut out = vec![None; names.len()];
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |what: &str| ApiError::InvalidQuery(format!("{k}={v:?}: {what}"));
        let i = names
            .iter()
            .position(|n| *n == k)
            .ok_or_else(|| bad(&format!("unknown query parameter ({})", names.join(", "))))?;
        if out[i].is_some() {
            return Err(bad("given twice"));
        }
        let n: u64 = v
            .parse()
            .ok()
            .filter(|n: &u64| n.to_string() == v)
            .ok_or_else(|| bad("a decimal integer"))?;
        out[i] = Some(n);
    }
    Ok(out)
}

fn proof_value(proof: &[[u8; 32]]) -> Value {
    Value::Array(proof.iter().map(|h| hash_b64(h).into()).collect())
}

fn int(n: u64) -> Value {
    Value::integer(i64::try_from(n).unwrap_or(i64::MAX)).unwrap_or(Value::Null)
}

/// Maps a tree the store cannot answer for to a 404, anything else to 500.
fn tree_error(e: tollgate_ledger::Error) -> ApiError {
    match e {
        tollgate_ledger::Error::OutOfTree(m) => ApiError::NotFound(m),
        e => ApiError::internal(e),
    }
}

async fn inclusion<L: Ledger>(
    _: ReadAuth,
    State(app): State<Arc<App<L>>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = numbers(query.as_deref(), &["seq", "size"])?;
    let seq = q[0].ok_or_else(|| ApiError::InvalidQuery("seq is required".into()))?;
    let (latest_size, note) = latest(&app).await?;
    let size = q[1].unwrap_or(latest_size);
    if seq == 0 || seq > size {
        return Err(ApiError::InvalidQuery(format!(
            "seq={seq}: not an entry of a tree of {size} entries"
        )));
    }
    let proof = tree::inclusion(app.gateway.ledger(), seq, size)
        .await
        .map_err(tree_error)?;
    let mut o = Object::new();
    o.insert("seq", int(seq));
    o.insert("size", int(size));
    o.insert("proof", proof_value(&proof));
    if size == latest_size {
        o.insert("checkpoint", note.into());
    }
    Ok(object(StatusCode::OK, o))
}

async fn consistency<L: Ledger>(
    _: ReadAuth,
    State(app): State<Arc<App<L>>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = numbers(query.as_deref(), &["from", "to"])?;
    let from = q[0].ok_or_else(|| ApiError::InvalidQuery("from is required".into()))?;
    let (latest_size, note) = latest(&app).await?;
    let to = q[1].unwrap_or(latest_size);
    if from > to {
        return Err(ApiError::InvalidQuery(format!(
            "from={from}: larger than to={to}"
        )));
    }
    let proof = tree::consistency(app.gateway.ledger(), from, to)
        .await
        .map_err(tree_error)?;
    let mut o = Object::new();
    o.insert("from", int(from));
    o.insert("to", int(to));
    o.insert("proof", proof_value(&proof));
    if to == latest_size {
        o.insert("checkpoint", note.into());
    }
    Ok(object(StatusCode::OK, o))
}
