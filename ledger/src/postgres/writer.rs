//! The instance's writer: one task that groups the appends queued on this
//! instance and commits each group in one transaction. The transaction
//! first locks the `chain_head` row (`SELECT … FOR UPDATE`): instances
//! append one group at a time, each after the last, so the chain stays
//! single and gap-free however many instances share the database. The
//! head row is written in the same transaction as the entries, so a
//! crashed group leaves neither.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Row as _;
use sqlx::postgres::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use tollgate_protocol::{HashValue, LedgerEntry, Timestamp};

use super::db;
use crate::{Append, ApprovalRow, Clock, Error, event_types, unique_violation};

/// One unit of a group: one or more receipts appended together.
pub(super) struct Request {
    pub items: Vec<Item>,
    pub reply: oneshot::Sender<Result<Vec<LedgerEntry>, Error>>,
}

/// A receipt to append, with its id read once.
pub(super) struct Item {
    pub append: Append,
    pub receipt_id: String,
}

/// Groups and entries committed by this instance.
#[derive(Default)]
pub(super) struct Counters {
    pub groups: AtomicU64,
    pub appends: AtomicU64,
}

pub(super) struct Writer {
    pub pool: PgPool,
    pub clock: Box<dyn Clock>,
    pub max_batch: usize,
    pub stats: Arc<Counters>,
}

impl Writer {
    pub async fn run(self, mut rx: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while rx.recv_many(&mut batch, self.max_batch).await > 0 {
            self.commit_group(std::mem::take(&mut batch)).await;
        }
    }

    /// Commits a group; if one unit of it is refused (a receipt or key
    /// already stored, or an approval row the tables refuse), the others
    /// are committed one by one so that only it fails.
    async fn commit_group(&self, batch: Vec<Request>) {
        match self.insert_all(&batch).await {
            Ok(mut entries) => {
                for req in batch {
                    let rest = entries.split_off(req.items.len());
                    let _ = req.reply.send(Ok(std::mem::replace(&mut entries, rest)));
                }
            }
            Err(
                Error::DuplicateReceipt(_) | Error::DuplicateKey(_) | Error::ApprovalConflict(_),
            ) if batch.len() > 1 => {
                for req in batch {
                    let result = self.insert_all(std::slice::from_ref(&req)).await;
                    let _ = req.reply.send(result);
                }
            }
            Err(e) => {
                for req in batch {
                    let _ = req.reply.send(Err(e.clone()));
                }
            }
        }
    }

    async fn insert_all(&self, batch: &[Request]) -> Result<Vec<LedgerEntry>, Error> {
        let items: Vec<&Item> = batch.iter().flat_map(|r| &r.items).collect();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let head =
            sqlx::query("SELECT seq, hash, appended_at FROM chain_head WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        let (mut seq, hash, last): (i64, String, Option<String>) =
            (head.get(0), head.get(1), head.get(2));
        let mut prev = HashValue::parse(&hash).ok_or_else(|| Error::Corrupt {
            seq: seq as u64,
            reason: format!("the chain head's hash {hash:?} is not a hash value"),
        })?;
        // The clock, but never before the last group's, whichever
        // instance appended it.
        let now = self.clock.now();
        let at = match last.as_deref().and_then(Timestamp::parse) {
            Some(last) if last > now => last,
            _ => now,
        };
        let mut entries = Vec::with_capacity(items.len());
        for item in &items {
            seq += 1;
            let entry = LedgerEntry::seal(
                seq as u64,
                prev,
                at.clone(),
                item.append.receipt.clone(),
                item.append.signature.clone(),
            );
            prev = entry.hash;
            entries.push(entry);
        }
        let inserted = sqlx::query(
            "INSERT INTO entries (seq, receipt_id, hash, line, idempotency_key)
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BYTEA[], $5::TEXT[])",
        )
        .bind(entries.iter().map(|e| e.seq as i64).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|i| i.receipt_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            entries
                .iter()
                .map(|e| e.hash.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(
            entries
                .iter()
                .map(LedgerEntry::to_canonical)
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|i| i.append.idempotency_key.clone())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            // With several rows the culprit is not known: the caller
            // retries one by one, where it is.
            let one = items.len() == 1;
            return Err(if unique_violation(&e, "receipt_id") {
                Error::DuplicateReceipt(if one {
                    items[0].receipt_id.clone()
                } else {
                    String::new()
                })
            } else if unique_violation(&e, "idempotency_key") {
                Error::DuplicateKey(if one {
                    items[0].append.idempotency_key.clone().unwrap_or_default()
                } else {
                    String::new()
                })
            } else {
                db(e)
            });
        }
        // The webhook outbox: each entry's events, with it, in order.
        let (event_seqs, event_types): (Vec<i64>, Vec<&str>) = entries
            .iter()
            .flat_map(|e| {
                event_types(e.receipt())
                    .into_iter()
                    .map(|t| (e.seq as i64, t))
            })
            .unzip();
        if !event_seqs.is_empty() {
            sqlx::query(
                "INSERT INTO outbox (seq, type)
                 SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[]) WITH ORDINALITY AS e(seq, type, n)
                 ORDER BY n",
            )
            .bind(event_seqs)
            .bind(event_types)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        for (item, entry) in items.iter().zip(&entries) {
            if let Some(row) = &item.append.approval {
                insert_approval(&mut tx, entry.seq as i64, row).await?;
            }
            for sp in &item.append.spend {
                sqlx::query(
                    "INSERT INTO spend (seq, delegation, currency, window_start, window_seconds, amount_minor)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(entry.seq as i64)
                .bind(&sp.delegation)
                .bind(&sp.currency)
                .bind(sp.window_start)
                .bind(sp.window_seconds)
                .bind(sp.amount_minor)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
        // The reservations this group fulfils, whichever instance made
        // them.
        let keys: Vec<String> = items
            .iter()
            .filter_map(|i| i.append.idempotency_key.clone())
            .collect();
        if !keys.is_empty() {
            sqlx::query("DELETE FROM pending WHERE idempotency_key = ANY($1)")
                .bind(keys)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        sqlx::query("UPDATE chain_head SET seq = $1, hash = $2, appended_at = $3 WHERE id = 1")
            .bind(seq)
            .bind(prev.to_string())
            .bind(at.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.stats.groups.fetch_add(1, Ordering::Relaxed);
        self.stats
            .appends
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        Ok(entries)
    }
}

/// Writes an approval's row; what the tables refuse is an
/// [`Error::ApprovalConflict`] saying why.
async fn insert_approval(
    conn: &mut PgConnection,
    seq: i64,
    row: &ApprovalRow,
) -> Result<(), Error> {
    let q = match row {
        ApprovalRow::Open { id, deadline, body } => {
            sqlx::query("INSERT INTO approvals (id, seq, deadline, body) VALUES ($1, $2, $3, $4)")
                .bind(id.as_str())
                .bind(seq)
                .bind(*deadline)
                .bind(body.as_slice())
        }
        ApprovalRow::Step {
            approval,
            reviewer,
            verdict,
            status,
            decision_hash,
        } => sqlx::query(
            "INSERT INTO approval_steps (seq, approval, reviewer, verdict, status, decision_hash)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(seq)
        .bind(approval.as_str())
        .bind(reviewer.as_deref())
        .bind(verdict.as_str())
        .bind(status.as_str())
        .bind(decision_hash.as_deref()),
    };
    q.execute(conn).await.map(|_| ()).map_err(|e| {
        let Some(d) = e.as_database_error() else {
            return db(e);
        };
        // PostgreSQL names the constraint: table_columns_key / _pkey.
        let m = d.message();
        if m.contains("approval_steps_decision_hash_key") {
            Error::ApprovalConflict("this signed decision was already used".into())
        } else if m.contains("approval_steps_approval_reviewer_key") {
            Error::ApprovalConflict("this reviewer already decided on this approval".into())
        } else if m.contains("approvals_pkey") {
            Error::ApprovalConflict("the approval is already open".into())
        } else if d.is_unique_violation() || m.starts_with("approval conflict") {
            Error::ApprovalConflict("the approval is unknown or has ended".into())
        } else {
            db(e)
        }
    })
}
