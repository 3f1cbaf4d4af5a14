//! The reads both backends share, written once. The SQL is the same for
//! SQLite and PostgreSQL: `$n` placeholders (SQLite numbers them in order
//! of first appearance, as PostgreSQL does), integers stored and read as
//! 64-bit, blobs as bytes, limits bound as 64-bit integers, and sums cast
//! back to integers. Each backend gets the functions for its pool type.

// Single-row reads by a unique key: the statements the SQLite ledger
// also runs straight on SQLite (`crate::point`).

/// The line of the entry at a seq.
pub(crate) const ENTRY_BY_SEQ: &str = "SELECT line FROM entries WHERE seq = $1";
/// The seq and line of the entry holding a receipt id.
pub(crate) const ENTRY_BY_RECEIPT_ID: &str = "SELECT seq, line FROM entries WHERE receipt_id = $1";
/// An entity's attributes, version and the seq that last changed it.
pub(crate) const ENTITY: &str = "SELECT attributes, version, seq FROM entities WHERE resource = $1";

macro_rules! shared_reads {
    ($pool:ty, $conn:ty, $row:ty, $writes:ident, $snapshot:expr) => {
        use std::collections::BTreeSet;

        use sqlx::Row as _;
        use tollgate_protocol::{LedgerEntry, Status};

        use crate::{
            ApprovalRecord, ApprovalStep, AttemptRow, EndpointRow, Error, OutboxEvent,
            RegistryState, Spend, StepVerdict, decode,
        };

        fn db(e: sqlx::Error) -> Error {
            crate::db_error(e)
        }

        fn int(n: u64) -> i64 {
            i64::try_from(n).unwrap_or(i64::MAX)
        }

        /// The entry at `seq`.
        pub(crate) async fn get(pool: &$pool, seq: u64) -> Result<Option<LedgerEntry>, Error> {
            let line: Option<Vec<u8>> =
                sqlx::query_scalar(crate::reads::ENTRY_BY_SEQ)
                    .bind(int(seq))
                    .fetch_optional(pool)
                    .await
                    .map_err(db)?;
            line.map(|l| decode(seq, &l)).transpose()
        }

        /// The entry holding receipt `receipt_id`.
        pub(crate) async fn get_by_receipt_id(
            pool: &$pool,
            receipt_id: &str,
        ) -> Result<Option<LedgerEntry>, Error> {
            let row = sqlx::query(crate::reads::ENTRY_BY_RECEIPT_ID)
                .bind(receipt_id)
                .fetch_optional(pool)
                .await
                .map_err(db)?;
            row.map(|r| decode(r.get::<i64, _>(0) as u64, &r.get::<Vec<u8>, _>(1)))
                .transpose()
        }

        /// The line of the entry whose `column` (`idempotency_key` or
        /// `receipt_id`) is `value`.
        pub(crate) async fn line_by(
            pool: &$pool,
            column: Column,
            value: &str,
        ) -> Result<Option<Vec<u8>>, Error> {
            sqlx::query_scalar(column.line_sql())
                .bind(value)
                .fetch_optional(pool)
                .await
                .map_err(db)
        }

        /// Up to `limit` export lines from `from` on, in order.
        pub(crate) async fn lines(
            pool: &$pool,
            from: u64,
            limit: u32,
        ) -> Result<Vec<Vec<u8>>, Error> {
            sqlx::query_scalar("SELECT line FROM entries WHERE seq >= $1 ORDER BY seq LIMIT $2")
                .bind(int(from.max(1)))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(db)
        }

        /// The byte lengths of up to `limit` lines from `from` on.
        pub(crate) async fn line_lengths(
            pool: &$pool,
            from: u64,
            limit: u32,
        ) -> Result<Vec<u64>, Error> {
            let rows: Vec<i64> = sqlx::query_scalar(
                "SELECT CAST(length(line) AS BIGINT) FROM entries WHERE seq >= $1 ORDER BY seq LIMIT $2",
            )
            .bind(int(from.max(1)))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(db)?;
            Ok(rows.into_iter().map(|n| u64::try_from(n).unwrap_or(0)).collect())
        }

        /// Approval rows `(id, seq, deadline, body)` with their steps.
        async fn with_steps(
            pool: &$pool,
            rows: Vec<$row>,
        ) -> Result<Vec<ApprovalRecord>, Error> {
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let id: String = r.get(0);
                let steps = sqlx::query(
                    "SELECT s.seq, e.receipt_id, s.reviewer, s.verdict, s.status, s.decision_hash,
                            we.receipt_id
                     FROM approval_steps s JOIN entries e ON e.seq = s.seq
                     LEFT JOIN approval_withdrawals w ON w.step = s.seq
                     LEFT JOIN entries we ON we.seq = w.seq
                     WHERE s.approval = $1 ORDER BY s.seq",
                )
                .bind(&id)
                .fetch_all(pool)
                .await
                .map_err(db)?
                .iter()
                .map(|s| {
                    let seq = s.get::<i64, _>(0) as u64;
                    let (verdict, status): (String, String) = (s.get(3), s.get(4));
                    let corrupt = |what: &str, name: &str| Error::Corrupt {
                        seq,
                        reason: format!("approval step {what} {name:?} is not one"),
                    };
                    Ok(ApprovalStep {
                        seq,
                        receipt_id: s.get(1),
                        reviewer: s.get(2),
                        verdict: StepVerdict::from_name(&verdict)
                            .ok_or_else(|| corrupt("verdict", &verdict))?,
                        status: Status::from_name(&status)
                            .ok_or_else(|| corrupt("status", &status))?,
                        decision_hash: s.get(5),
                        withdrawn_by: s.get(6),
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?;
                out.push(ApprovalRecord {
                    id,
                    seq: r.get::<i64, _>(1) as u64,
                    deadline: r.get(2),
                    body: r.get(3),
                    steps,
                });
            }
            Ok(out)
        }

        /// The approval `id`, with its steps.
        pub(crate) async fn approval(
            pool: &$pool,
            id: &str,
        ) -> Result<Option<ApprovalRecord>, Error> {
            let row = sqlx::query("SELECT id, seq, deadline, body FROM approvals WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(db)?;
            match row {
                None => Ok(None),
                Some(r) => Ok(with_steps(pool, vec![r]).await?.pop()),
            }
        }

        /// Approvals in ledger order after `after_seq`; with `open_only`,
        /// only those not ended.
        pub(crate) async fn approvals(
            pool: &$pool,
            open_only: bool,
            after_seq: u64,
            limit: u32,
        ) -> Result<Vec<ApprovalRecord>, Error> {
            let sql = if open_only {
                "SELECT id, seq, deadline, body FROM approvals a WHERE seq > $1
                   AND NOT EXISTS (SELECT 1 FROM approval_steps s
                                   WHERE s.approval = a.id AND s.status <> 'pending_approval')
                 ORDER BY seq LIMIT $2"
            } else {
                "SELECT id, seq, deadline, body FROM approvals WHERE seq > $1 ORDER BY seq LIMIT $2"
            };
            let rows = sqlx::query(sql)
                .bind(int(after_seq))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(db)?;
            with_steps(pool, rows).await
        }

        /// Open approvals whose deadline is at or before `now`, earliest
        /// first.
        pub(crate) async fn approvals_due(
            pool: &$pool,
            now: i64,
            limit: u32,
        ) -> Result<Vec<ApprovalRecord>, Error> {
            let rows = sqlx::query(
                "SELECT id, seq, deadline, body FROM approvals a WHERE deadline <= $1
                   AND NOT EXISTS (SELECT 1 FROM approval_steps s
                                   WHERE s.approval = a.id AND s.status <> 'pending_approval')
                 ORDER BY deadline, seq LIMIT $2",
            )
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(db)?;
            with_steps(pool, rows).await
        }

        fn outbox_row(r: &$row) -> OutboxEvent {
            OutboxEvent {
                id: r.get::<i64, _>(0) as u64,
                seq: r.get::<i64, _>(1) as u64,
                event_type: r.get(2),
            }
        }

        /// Up to `limit` outbox events after event `after`, in order.
        pub(crate) async fn outbox_after(
            pool: &$pool,
            after: u64,
            limit: u32,
        ) -> Result<Vec<OutboxEvent>, Error> {
            let rows =
                sqlx::query("SELECT id, seq, type FROM outbox WHERE id > $1 ORDER BY id LIMIT $2")
                    .bind(int(after))
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await
                    .map_err(db)?;
            Ok(rows.iter().map(outbox_row).collect())
        }

        /// The number of the last outbox event (0 if there is none).
        pub(crate) async fn outbox_last(pool: &$pool) -> Result<u64, Error> {
            let id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM outbox")
                .fetch_one(pool)
                .await
                .map_err(db)?;
            Ok(id as u64)
        }

        /// Outbox event `id`.
        pub(crate) async fn outbox_event(
            pool: &$pool,
            id: u64,
        ) -> Result<Option<OutboxEvent>, Error> {
            let row = sqlx::query("SELECT id, seq, type FROM outbox WHERE id = $1")
                .bind(int(id))
                .fetch_optional(pool)
                .await
                .map_err(db)?;
            Ok(row.as_ref().map(outbox_row))
        }

        /// The first outbox event about entry `seq` or a later one.
        pub(crate) async fn outbox_first_from(
            pool: &$pool,
            seq: u64,
        ) -> Result<Option<u64>, Error> {
            let id: Option<i64> = sqlx::query_scalar("SELECT MIN(id) FROM outbox WHERE seq >= $1")
                .bind(int(seq))
                .fetch_one(pool)
                .await
                .map_err(db)?;
            Ok(id.map(|i| i as u64))
        }

        /// Every webhook endpoint, by id.
        pub(crate) async fn webhook_endpoints(pool: &$pool) -> Result<Vec<EndpointRow>, Error> {
            let rows = sqlx::query(
                "SELECT id, config, secrets, enabled, disabled_reason, cursor
                 FROM webhook_endpoints ORDER BY id",
            )
            .fetch_all(pool)
            .await
            .map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| EndpointRow {
                    id: r.get(0),
                    config: r.get(1),
                    secrets: r.get(2),
                    enabled: r.get::<i64, _>(3) == 1,
                    disabled_reason: r.get(4),
                    cursor: r.get::<i64, _>(5) as u64,
                })
                .collect())
        }

        /// Up to `limit` attempts to `endpoint` of events from
        /// `from_event` on, in order of event and attempt.
        pub(crate) async fn webhook_attempts(
            pool: &$pool,
            endpoint: &str,
            from_event: u64,
            limit: u32,
        ) -> Result<Vec<AttemptRow>, Error> {
            let rows = sqlx::query(
                "SELECT endpoint, event, n, at, status, error, outcome FROM webhook_attempts
                 WHERE endpoint = $1 AND event >= $2 ORDER BY event, n LIMIT $3",
            )
            .bind(endpoint)
            .bind(int(from_event))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| AttemptRow {
                    endpoint: r.get(0),
                    event: r.get::<i64, _>(1) as u64,
                    n: r.get::<i64, _>(2) as u32,
                    at: r.get(3),
                    status: r.get::<Option<i64>, _>(4).map(|s| s as u16),
                    error: r.get(5),
                    outcome: r.get(6),
                })
                .collect())
        }

        /// Redeliveries asked for `endpoint`, oldest event first.
        pub(crate) async fn webhook_redeliveries(
            pool: &$pool,
            endpoint: &str,
        ) -> Result<Vec<u64>, Error> {
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT event FROM webhook_redeliveries WHERE endpoint = $1 ORDER BY event",
            )
            .bind(endpoint)
            .fetch_all(pool)
            .await
            .map_err(db)?;
            Ok(ids.into_iter().map(|i| i as u64).collect())
        }

        /// Amounts committed per delegation, currency and window, for
        /// every window not ended at `now`.
        pub(crate) async fn spending(pool: &$pool, now: i64) -> Result<Vec<Spend>, Error> {
            let rows = sqlx::query(
                "SELECT delegation, currency, window_start, window_seconds,
                        CAST(SUM(amount_minor) AS BIGINT)
                 FROM spend WHERE window_start + window_seconds > $1
                 GROUP BY delegation, currency, window_start, window_seconds
                 ORDER BY delegation, currency, window_start",
            )
            .bind(now)
            .fetch_all(pool)
            .await
            .map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| Spend {
                    delegation: r.get(0),
                    currency: r.get(1),
                    window_start: r.get(2),
                    window_seconds: r.get(3),
                    amount_minor: r.get(4),
                })
                .collect())
        }

        /// Reservations without their entry, oldest key first.
        pub(crate) async fn pending(pool: &$pool) -> Result<Vec<(String, Vec<u8>)>, Error> {
            let rows =
                sqlx::query("SELECT idempotency_key, body FROM pending ORDER BY idempotency_key")
                    .fetch_all(pool)
                    .await
                    .map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<String, _>(0), r.get::<Vec<u8>, _>(1)))
                .collect())
        }

        /// What reservations hold, for every window not ended at `now`.
        pub(crate) async fn held(pool: &$pool, now: i64) -> Result<Vec<(String, Spend)>, Error> {
            let rows = sqlx::query(
                "SELECT idempotency_key, delegation, currency, window_start, window_seconds, amount_minor
                 FROM held WHERE window_start + window_seconds > $1
                 ORDER BY idempotency_key, delegation, currency",
            )
            .bind(now)
            .fetch_all(pool)
            .await
            .map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        Spend {
                            delegation: r.get(1),
                            currency: r.get(2),
                            window_start: r.get(3),
                            window_seconds: r.get(4),
                            amount_minor: r.get(5),
                        },
                    )
                })
                .collect())
        }

        async fn pairs(conn: &mut $conn, sql: &'static str) -> Result<Vec<(String, Vec<u8>)>, Error> {
            Ok(sqlx::query(sql)
                .fetch_all(conn)
                .await
                .map_err(db)?
                .iter()
                .map(|r| (r.get::<String, _>(0), r.get::<Vec<u8>, _>(1)))
                .collect())
        }

        async fn ids(conn: &mut $conn, sql: &'static str) -> Result<BTreeSet<String>, Error> {
            Ok(sqlx::query_scalar::<_, String>(sql)
                .fetch_all(conn)
                .await
                .map_err(db)?
                .into_iter()
                .collect())
        }

        /// The latest recorded checkpoint: its size and signed note.
        pub(crate) async fn checkpoint(pool: &$pool) -> Result<Option<(u64, String)>, Error> {
            let row: Option<(i64, String)> =
                sqlx::query_as("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")
                    .fetch_optional(pool)
                    .await
                    .map_err(db)?;
            Ok(row.map(|(s, n)| (s.max(0) as u64, n)))
        }

        /// Entity `resource` as recorded.
        pub(crate) async fn entity(
            pool: &$pool,
            resource: &str,
        ) -> Result<Option<crate::EntityRecord>, Error> {
            let row = sqlx::query(crate::reads::ENTITY)
            .bind(resource)
            .fetch_optional(pool)
            .await
            .map_err(db)?;
            Ok(row.map(|r| crate::EntityRecord {
                resource: resource.to_owned(),
                attributes: r.get::<Vec<u8>, _>(0),
                version: u64::try_from(r.get::<i64, _>(1)).unwrap_or(0),
                seq: u64::try_from(r.get::<i64, _>(2)).unwrap_or(0),
            }))
        }

        /// The entries that changed entity `resource`, `(version, seq)`.
        pub(crate) async fn entity_history(
            pool: &$pool,
            resource: &str,
        ) -> Result<Vec<(u64, u64)>, Error> {
            Ok(sqlx::query(
                "SELECT version, seq FROM entity_changes WHERE resource = $1 ORDER BY version",
            )
            .bind(resource)
            .fetch_all(pool)
            .await
            .map_err(db)?
            .iter()
            .map(|r| {
                (
                    u64::try_from(r.get::<i64, _>(0)).unwrap_or(0),
                    u64::try_from(r.get::<i64, _>(1)).unwrap_or(0),
                )
            })
            .collect())
        }

        /// The number of entries the stored tree covers.
        pub(crate) async fn tree_size(pool: &$pool) -> Result<u64, Error> {
            let v: Option<String> =
                sqlx::query_scalar("SELECT value FROM ledger_meta WHERE key = 'tree_size'")
                    .fetch_optional(pool)
                    .await
                    .map_err(db)?;
            Ok(v.and_then(|s| s.parse().ok()).unwrap_or(0))
        }

        /// The stored tree hashes at `indexes`, in that order; missing
        /// ones left out.
        pub(crate) async fn tree_hashes(pool: &$pool, indexes: &[u64]) -> Result<Vec<[u8; 32]>, Error> {
            let mut found = std::collections::BTreeMap::new();
            for chunk in indexes.chunks(256) {
                let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
                let sql = format!(
                    "SELECT idx, hash FROM tree_hashes WHERE idx IN ({})",
                    list.join(", ")
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for i in chunk {
                    q = q.bind(int(*i));
                }
                for r in q.fetch_all(pool).await.map_err(db)? {
                    let bytes: Vec<u8> = r.get(1);
                    if let Ok(h) = <[u8; 32]>::try_from(bytes.as_slice()) {
                        found.insert(r.get::<i64, _>(0), h);
                    }
                }
            }
            Ok(indexes
                .iter()
                .filter_map(|i| found.get(&int(*i)).copied())
                .collect())
        }

        /// The seq of the last registry change.
        pub(crate) async fn registry_seq(pool: &$pool) -> Result<u64, Error> {
            let mut conn = pool.acquire().await.map_err(db)?;
            crate::writes::$writes::registry_seq(&mut conn).await
        }

        /// The lease `id` as recorded.
        pub(crate) async fn lease(pool: &$pool, id: &str) -> Result<Option<crate::LeaseRecord>, Error> {
            let row = sqlx::query(
                "SELECT lease, agent, seq, request_hash, issued_at, request_seq FROM leases WHERE lease = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(db)?;
            Ok(row.map(|r| {
                let hash: Option<String> = r.get(3);
                let at: Option<String> = r.get(4);
                let request_seq: Option<i64> = r.get(5);
                crate::LeaseRecord {
                    lease: r.get(0),
                    agent: r.get(1),
                    seq: u64::try_from(r.get::<i64, _>(2)).unwrap_or(0),
                    request: hash
                        .zip(at)
                        .zip(request_seq)
                        .map(|((h, a), s)| (h, a, u64::try_from(s).unwrap_or(0))),
                }
            }))
        }

        /// The registries as recorded, every table and the registry seq
        /// read in one snapshot.
        pub(crate) async fn registry(pool: &$pool) -> Result<RegistryState, Error> {
            let mut tx = pool.begin().await.map_err(db)?;
            if let Some(sql) = $snapshot {
                sqlx::query(sql).execute(&mut *tx).await.map_err(db)?;
            }
            let c = &mut *tx;
            let seeded: Option<String> =
                sqlx::query_scalar("SELECT value FROM ledger_meta WHERE key = 'seeded'")
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(db)?;
            let model: Option<String> =
                sqlx::query_scalar("SELECT value FROM ledger_meta WHERE key = 'policy_model'")
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(db)?;
            let history =
                sqlx::query("SELECT change, version FROM reg_policy_history ORDER BY seq")
                    .fetch_all(&mut *c)
                    .await
                    .map_err(db)?
                    .iter()
                    .map(|r| {
                        let change: String = r.get(0);
                        let change = tollgate_protocol::Change::from_name(&change)
                            .filter(|c| {
                                matches!(
                                    c,
                                    tollgate_protocol::Change::PolicyActivate
                                        | tollgate_protocol::Change::PolicyRollback
                                        | tollgate_protocol::Change::PolicyDeactivate
                                )
                            })
                            .ok_or_else(|| Error::Corrupt {
                                seq: 0,
                                reason: format!("policy history holds change {change:?}"),
                            })?;
                        Ok((change, r.get::<String, _>(1)))
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
            let leases: Option<String> =
                sqlx::query_scalar("SELECT value FROM ledger_meta WHERE key = 'leases'")
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(db)?;
            let state = RegistryState {
                leases: leases.map(String::into_bytes),
                seq: crate::writes::$writes::registry_seq(&mut *c).await?,
                seeded: seeded.is_some(),
                policy_domains: model.is_some(),
                issuers: pairs(&mut *c, "SELECT kid, jwk FROM reg_issuers ORDER BY kid").await?,
                revoked_issuers: ids(&mut *c, "SELECT kid FROM reg_issuer_revocations").await?,
                delegations: pairs(&mut *c, "SELECT id, token FROM reg_delegations ORDER BY id").await?,
                revoked_delegations: ids(&mut *c, "SELECT id FROM reg_delegation_revocations").await?,
                reviewers: pairs(&mut *c, "SELECT id, reviewer FROM reg_reviewers ORDER BY id").await?,
                revoked_reviewers: ids(&mut *c, "SELECT id FROM reg_reviewer_revocations").await?,
                sources: pairs(&mut *c, "SELECT id, source FROM reg_sources ORDER BY id").await?,
                revoked_sources: ids(&mut *c, "SELECT id FROM reg_source_revocations").await?,
                resources: pairs(
                    &mut *c,
                    "SELECT resource, attributes FROM reg_resources ORDER BY resource",
                )
                .await?,
                policies: pairs(&mut *c, "SELECT version, files FROM reg_policies ORDER BY version")
                    .await?,
                policy_history: history,
            };
            tx.commit().await.map_err(db)?;
            Ok(state)
        }
    };
}

/// Which unique column names an entry.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Column {
    /// `idempotency_key`.
    IdempotencyKey,
    /// `receipt_id`.
    ReceiptId,
}

impl Column {
    /// The statement reading the line of the entry whose column holds a
    /// value.
    pub(crate) fn line_sql(self) -> &'static str {
        match self {
            Self::IdempotencyKey => "SELECT line FROM entries WHERE idempotency_key = $1",
            Self::ReceiptId => "SELECT line FROM entries WHERE receipt_id = $1",
        }
    }
}

/// The shared reads over an SQLite pool.
pub(crate) mod sqlite {
    pub(crate) use super::Column;
    // A read transaction on SQLite is a snapshot from its first read.
    shared_reads!(
        sqlx::SqlitePool,
        sqlx::SqliteConnection,
        sqlx::sqlite::SqliteRow,
        sqlite,
        None::<&'static str>
    );
}

/// The shared reads over a PostgreSQL pool.
#[cfg(feature = "postgres")]
pub(crate) mod postgres {
    pub(crate) use super::Column;
    shared_reads!(
        sqlx::PgPool,
        sqlx::PgConnection,
        sqlx::postgres::PgRow,
        postgres,
        Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    );
}
