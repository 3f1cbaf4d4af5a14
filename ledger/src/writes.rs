//! The writes both backends share, written once, as [`crate::reads`] is:
//! one SQL text for SQLite and PostgreSQL (`$n` placeholders, `ON
//! CONFLICT` clauses both understand). Each function runs inside the
//! caller's transaction on its connection.

macro_rules! shared_writes {
    ($conn:ty) => {
        use crate::{ApprovalRow, Error, Item, RegistryChange, WebhookOp, event_types};
        use tollgate_protocol::LedgerEntry;

        /// Settles the ledger's hash algorithm ([`crate::settle_hash_alg`])
        /// and, on a new ledger, records it with the format; the algorithm
        /// and whether the ledger is new.
        pub(crate) async fn init_meta(
            conn: &mut $conn,
            wanted: Option<tollgate_protocol::HashAlg>,
        ) -> Result<(tollgate_protocol::HashAlg, bool), Error> {
            let existing: Option<String> =
                sqlx::query_scalar("SELECT value FROM ledger_meta WHERE key = 'hash_alg'")
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db)?;
            let alg = crate::settle_hash_alg(existing.as_deref(), wanted)?;
            if existing.is_none() {
                sqlx::query(
                    "INSERT INTO ledger_meta (key, value) VALUES ('hash_alg', $1), ('format', $2)",
                )
                .bind(alg.name())
                .bind(crate::FORMAT)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            }
            Ok((alg, existing.is_none()))
        }

        /// What a group's entries record besides themselves, with them: each
        /// entry's outbox events, its approval row and its spending.
        #[allow(dead_code)]
        pub(crate) async fn insert_recorded(
            conn: &mut $conn,
            items: &[&Item],
            entries: &[LedgerEntry],
        ) -> Result<(), Error> {
            let events: Vec<(i64, Vec<&'static str>)> = entries
                .iter()
                .map(|e| (e.seq as i64, event_types(e.receipt())))
                .collect();
            insert_events(&mut *conn, &events).await?;
            insert_rows(conn, items, entries).await
        }

        /// Each entry's approval row, spending and the reservation it
        /// opens, with it.
        pub(crate) async fn insert_rows(
            conn: &mut $conn,
            items: &[&Item],
            entries: &[LedgerEntry],
        ) -> Result<(), Error> {
            let mut changes = Vec::new();
            for (item, entry) in items.iter().zip(entries) {
                if let Some(row) = &item.append.approval {
                    insert_approval(&mut *conn, entry.seq as i64, row).await?;
                }
                if let Some(r) = &item.append.reserve {
                    insert_reservation(&mut *conn, &r.key, &r.body, &r.charges, None).await?;
                }
                if let Some(e) = &item.append.entity {
                    changes.push((e, entry.seq as i64));
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
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
                }
            }
            insert_entity_changes(conn, &changes).await
        }

        /// Entity changes: each entity's new state and the change's row, a
        /// few multi-row statements per group. A group that changes one
        /// entity twice writes row by row, in order (one statement may not
        /// update a row twice).
        async fn insert_entity_changes(
            conn: &mut $conn,
            changes: &[(&crate::EntityWrite, i64)],
        ) -> Result<(), Error> {
            let distinct: std::collections::BTreeSet<&str> =
                changes.iter().map(|(e, _)| e.resource.as_str()).collect();
            let sizes: &[usize] = if distinct.len() == changes.len() {
                &[32, 8, 2, 1]
            } else {
                &[1]
            };
            let mut done = 0;
            while done < changes.len() {
                let n = sizes
                    .iter()
                    .copied()
                    .find(|n| *n <= changes.len() - done)
                    .unwrap_or(1);
                let rows = &changes[done..done + n];
                let mut upsert =
                    String::from("INSERT INTO entities (resource, attributes, version, seq) VALUES ");
                let mut history = String::from("INSERT INTO entity_changes (resource, version, seq) VALUES ");
                for i in 0..n {
                    let sep = if i == 0 { "" } else { ", " };
                    upsert.push_str(&format!(
                        "{sep}(${}, ${}, ${}, ${})",
                        4 * i + 1,
                        4 * i + 2,
                        4 * i + 3,
                        4 * i + 4
                    ));
                    history.push_str(&format!("{sep}(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3));
                }
                upsert.push_str(
                    " ON CONFLICT (resource) DO UPDATE SET attributes = excluded.attributes,
                         version = excluded.version, seq = excluded.seq",
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(upsert));
                let mut h = sqlx::query(sqlx::AssertSqlSafe(history));
                for (e, seq) in rows {
                    let version = e.read as i64 + 1;
                    q = q
                        .bind(e.resource.as_str())
                        .bind(e.attributes.as_slice())
                        .bind(version)
                        .bind(*seq);
                    h = h.bind(e.resource.as_str()).bind(version).bind(*seq);
                }
                q.execute(&mut *conn).await.map_err(db)?;
                h.execute(&mut *conn).await.map_err(db)?;
                done += n;
            }
            Ok(())
        }

        /// The lease state after a lease change, and the lease it
        /// concerns: a new lease id is its agent's for ever.
        async fn apply_lease(
            conn: &mut $conn,
            seq: i64,
            state: &[u8],
            mark: Option<&crate::LeaseMark>,
        ) -> Result<(), Error> {
            let text = std::str::from_utf8(state)
                .map_err(|_| Error::RegistryConflict("lease: the state is not UTF-8".into()))?;
            sqlx::query(
                "INSERT INTO ledger_meta (key, value) VALUES ('leases', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(text)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
            let Some(m) = mark else { return Ok(()) };
            let (hash, at) = match &m.request {
                Some((h, a)) => (Some(h.as_str()), Some(a.as_str())),
                None => (None, None),
            };
            let nanos = at
                .and_then(tollgate_protocol::Timestamp::parse)
                .map(|t| t.unix_nanos());
            // An acquire takes a new id; any other request on a lease is
            // its agent's, issued later than the lease's last request.
            let sql = if m.acquire {
                "INSERT INTO leases (lease, agent, seq, request_hash, issued_at, request_seq, request_nanos)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)"
            } else {
                "INSERT INTO leases (lease, agent, seq, request_hash, issued_at, request_seq, request_nanos)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (lease) DO UPDATE SET seq = excluded.seq,
                     request_hash = COALESCE(excluded.request_hash, leases.request_hash),
                     issued_at = COALESCE(excluded.issued_at, leases.issued_at),
                     request_seq = COALESCE(excluded.request_seq, leases.request_seq),
                     request_nanos = COALESCE(excluded.request_nanos, leases.request_nanos)
                 WHERE leases.agent = excluded.agent
                     AND (excluded.request_nanos IS NULL OR leases.request_nanos IS NULL
                          OR leases.request_nanos < excluded.request_nanos)"
            };
            let done = sqlx::query(sql)
                .bind(m.lease.as_str())
                .bind(m.agent.as_str())
                .bind(seq)
                .bind(hash)
                .bind(at)
                .bind(m.request.as_ref().map(|_| seq))
                .bind(nanos)
                .execute(&mut *conn)
                .await
                .map_err(|e| {
                    if e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
                        Error::RegistryConflict(format!("lease: {} was acquired before", m.lease))
                    } else {
                        db(e)
                    }
                })?;
            if done.rows_affected() != 1 {
                return Err(Error::RegistryConflict(format!(
                    "lease: {} is another agent's, or its last request was issued as late",
                    m.lease
                )));
            }
            Ok(())
        }

        fn db(e: sqlx::Error) -> Error {
            crate::db_error(e)
        }

        /// The `kid` of a stored reviewer object's key.
        fn reviewer_kid(bytes: &[u8]) -> Option<String> {
            let v = tollgate_protocol::parse(bytes).ok()?;
            let key = v.as_object()?.get("key")?;
            tollgate_protocol::Jwk::from_value(key, "/key").ok().map(|k| k.kid)
        }

        /// The seq of the last registry change (0 before any).
        pub(crate) async fn registry_seq(conn: &mut $conn) -> Result<u64, Error> {
            let v: Option<String> =
                sqlx::query_scalar("SELECT value FROM ledger_meta WHERE key = 'registry_seq'")
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db)?;
            Ok(v.and_then(|s| s.parse().ok()).unwrap_or(0))
        }

        /// Records `seq` as the last registry change, in its transaction.
        pub(crate) async fn set_registry_seq(conn: &mut $conn, seq: u64) -> Result<(), Error> {
            sqlx::query(
                "INSERT INTO ledger_meta (key, value) VALUES ('registry_seq', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(seq.to_string())
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(db)
        }

        /// Committed and held amounts in one budget window.
        async fn window_sums(conn: &mut $conn, w: &(String, String, i64)) -> Result<(i64, i64), Error> {
            let mut sums = [0i64; 2];
            for (i, table) in ["spend", "held"].into_iter().enumerate() {
                let sql = format!(
                    "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM {table}
                     WHERE window_start = $1 AND delegation = $2 AND currency = $3"
                );
                sums[i] = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(w.2)
                    .bind(w.0.as_str())
                    .bind(w.1.as_str())
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db)?;
            }
            Ok((sums[0], sums[1]))
        }

        /// The guard check ([`crate::Guard`]) of a group's units, in order,
        /// inside the group's transaction: for each unit, `None` to append
        /// it or why it is stale. A unit refused charges nothing for the
        /// units after it.
        pub(crate) async fn check_guards(
            conn: &mut $conn,
            units: &[Vec<crate::Guarded<'_>>],
        ) -> Result<Vec<Option<crate::Staleness>>, Error> {
            use std::collections::BTreeMap;
            use crate::Staleness;
            type W = (String, String, i64);
            if units
                .iter()
                .flatten()
                .all(|g| g.guard.is_none() && g.entity.is_none())
            {
                return Ok(vec![None; units.len()]);
            }
            let current = registry_seq(&mut *conn).await?;
            // Each entity's version as earlier units leave it, and as
            // recorded (each read once per group).
            let mut versions: BTreeMap<String, u64> = BTreeMap::new();
            let mut stored: BTreeMap<String, u64> = BTreeMap::new();
            let mut recorded: BTreeMap<W, (i64, i64)> = BTreeMap::new();
            let mut charged: BTreeMap<W, i64> = BTreeMap::new();
            // Steps per approval: recorded, then added by earlier units.
            let mut steps: BTreeMap<String, u64> = BTreeMap::new();
            let mut answers = Vec::with_capacity(units.len());
            for unit in units {
                let mut why = None;
                let mut mine: BTreeMap<W, i64> = BTreeMap::new();
                // Entity versions as this unit's earlier changes leave them.
                let mut local: BTreeMap<String, u64> = BTreeMap::new();
                'unit: for crate::Guarded { guard, charges, entity, .. } in unit {
                    // The entity the decision read, before any change of this
                    // unit's own.
                    if let Some(seen) = guard.as_ref().and_then(|g| g.entity.as_ref()) {
                        let now = match local.get(&seen.resource).or(versions.get(&seen.resource)) {
                            Some(v) => *v,
                            None => stored_version(&mut *conn, &mut stored, &seen.resource).await?,
                        };
                        if now != seen.version {
                            why = Some(Staleness::Entity {
                                resource: seen.resource.clone(),
                                read: seen.version,
                                current: now,
                            });
                            break;
                        }
                    }
                    if let Some(e) = entity {
                        let now = match local.get(&e.resource).or(versions.get(&e.resource)) {
                            Some(v) => *v,
                            None => stored_version(&mut *conn, &mut stored, &e.resource).await?,
                        };
                        if now != e.read {
                            why = Some(Staleness::Entity {
                                resource: e.resource.clone(),
                                read: e.read,
                                current: now,
                            });
                            break;
                        }
                        local.insert(e.resource.clone(), e.read + 1);
                    }
                    let Some(g) = guard else { continue };
                    if g.registry_seq != current {
                        why = Some(Staleness::Registry { seen: g.registry_seq, current });
                        break;
                    }
                    if let Some(read) = &g.approval {
                        let now = match steps.get(&read.approval) {
                            Some(n) => *n,
                            None => {
                                let n = approval_steps(&mut *conn, &read.approval).await?;
                                steps.insert(read.approval.clone(), n);
                                n
                            }
                        };
                        if now != read.steps {
                            why = Some(Staleness::Approval {
                                approval: read.approval.clone(),
                                seen: read.steps,
                                recorded: now,
                            });
                            break;
                        }
                        if executing(&mut *conn, &read.approval).await? {
                            why = Some(Staleness::Executing(read.approval.clone()));
                            break;
                        }
                    }
                    for b in &g.budgets {
                        let w = (b.delegation.clone(), b.currency.clone(), b.window_start);
                        let (committed, held) = match recorded.get(&w) {
                            Some(v) => *v,
                            None => {
                                let v = window_sums(&mut *conn, &w).await?;
                                recorded.insert(w.clone(), v);
                                v
                            }
                        };
                        if b.spent < committed {
                            why = Some(Staleness::Spending {
                                delegation: b.delegation.clone(),
                                currency: b.currency.clone(),
                                read: b.spent,
                                recorded: committed,
                            });
                            break 'unit;
                        }
                        let charge: i64 = charges
                            .iter()
                            .filter(|s| s.delegation == w.0 && s.currency == w.1 && s.window_start == w.2)
                            .map(|s| s.amount_minor)
                            .sum();
                        let before = committed
                            + charged.get(&w).copied().unwrap_or(0)
                            + mine.get(&w).copied().unwrap_or(0);
                        if charge > 0 && before.saturating_add(held).saturating_add(charge) > b.limit {
                            why = Some(Staleness::OverBudget {
                                delegation: b.delegation.clone(),
                                currency: b.currency.clone(),
                                limit: b.limit,
                                committed: before,
                                held,
                                charge,
                            });
                            break 'unit;
                        }
                    }
                    for s in charges.iter() {
                        *mine
                            .entry((s.delegation.clone(), s.currency.clone(), s.window_start))
                            .or_insert(0) += s.amount_minor;
                    }
                }
                if why.is_none() {
                    for (w, n) in mine {
                        *charged.entry(w).or_insert(0) += n;
                    }
                    versions.extend(local);
                    for approval in unit.iter().filter_map(|g| g.step_of) {
                        let n = match steps.get(approval) {
                            Some(n) => *n,
                            None => approval_steps(&mut *conn, approval).await?,
                        };
                        steps.insert(approval.to_owned(), n + 1);
                    }
                }
                answers.push(why);
            }
            Ok(answers)
        }

        /// The version of entity `resource` as recorded, read once into
        /// `stored`.
        async fn stored_version(
            conn: &mut $conn,
            stored: &mut std::collections::BTreeMap<String, u64>,
            resource: &str,
        ) -> Result<u64, Error> {
            if let Some(v) = stored.get(resource) {
                return Ok(*v);
            }
            let v = entity_version(conn, resource).await?;
            stored.insert(resource.to_owned(), v);
            Ok(v)
        }

        /// The version of entity `resource` (0 when none is recorded).
        async fn entity_version(conn: &mut $conn, resource: &str) -> Result<u64, Error> {
            let v: Option<i64> = sqlx::query_scalar("SELECT version FROM entities WHERE resource = $1")
                .bind(resource)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)?;
            Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
        }

        /// How many steps approval `id` has recorded.
        async fn approval_steps(conn: &mut $conn, id: &str) -> Result<u64, Error> {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM approval_steps WHERE approval = $1")
                .bind(id)
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
            Ok(u64::try_from(n).unwrap_or(0))
        }

        /// Whether a reservation made on approval `id` is held: its
        /// execution is under way.
        async fn executing(conn: &mut $conn, id: &str) -> Result<bool, Error> {
            let found: Option<String> =
                sqlx::query_scalar("SELECT idempotency_key FROM pending_approvals WHERE approval = $1")
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db)?;
            Ok(found.is_some())
        }

        /// What a reviewer's revocation does to the approvals, in its
        /// transaction: refused while the execution of a quorum the
        /// reviewer is part of (by an earlier grant, or by the completing
        /// one) is reserved; else every grant of the reviewer on an
        /// approval still pending is withdrawn, recorded against the
        /// revocation's entry at `seq`.
        async fn withdraw_grants(conn: &mut $conn, seq: i64, reviewer: &str) -> Result<(), Error> {
            let executing: Option<String> = sqlx::query_scalar(
                "SELECT p.approval FROM pending_approvals p
                 WHERE p.reviewer = $1
                    OR EXISTS (SELECT 1 FROM approval_steps s
                               WHERE s.approval = p.approval AND s.reviewer = $1
                                 AND s.verdict = 'grant')
                 ORDER BY p.approval LIMIT 1",
            )
            .bind(reviewer)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
            if let Some(approval) = executing {
                return Err(Error::Stale(crate::Staleness::Executing(approval)));
            }
            sqlx::query(
                "INSERT INTO approval_withdrawals (step, seq)
                 SELECT s.seq, $1 FROM approval_steps s
                 WHERE s.reviewer = $2 AND s.verdict = 'grant'
                   AND NOT EXISTS (SELECT 1 FROM approval_steps e
                                   WHERE e.approval = s.approval AND e.status <> 'pending_approval')",
            )
            .bind(seq)
            .bind(reviewer)
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(db)
        }

        /// What a ledger written before reviewer keys and withdrawals were
        /// recorded lacks, in the caller's transaction: the key of every
        /// registered reviewer that has no key row (of two ids with one
        /// key, the first registered keeps it), and the withdrawal of every
        /// grant whose reviewer was revoked while its approval was pending.
        /// Idempotent: on a ledger that records both, it adds nothing.
        pub(crate) async fn backfill(conn: &mut $conn) -> Result<(), Error> {
            backfill_reviewer_keys(&mut *conn).await?;
            sqlx::query(
                "INSERT INTO approval_withdrawals (step, seq)
                 SELECT s.seq, r.seq FROM approval_steps s
                 JOIN reg_reviewer_revocations r ON r.id = s.reviewer
                 WHERE s.verdict = 'grant' AND s.seq < r.seq
                   AND NOT EXISTS (SELECT 1 FROM approval_steps e
                                   WHERE e.approval = s.approval AND e.seq < r.seq
                                     AND e.status <> 'pending_approval')
                 ON CONFLICT DO NOTHING",
            )
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(db)
        }

        async fn backfill_reviewer_keys(conn: &mut $conn) -> Result<(), Error> {
            use sqlx::Row as _;
            let rows = sqlx::query(
                "SELECT r.id, r.reviewer, r.seq FROM reg_reviewers r
                 WHERE NOT EXISTS (SELECT 1 FROM reg_reviewer_keys k WHERE k.id = r.id)
                 ORDER BY r.seq",
            )
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
            for r in rows {
                let (id, bytes, seq): (String, Vec<u8>, i64) = (r.get(0), r.get(1), r.get(2));
                let Some(kid) = reviewer_kid(&bytes) else {
                    return Err(Error::Corrupt {
                        seq: u64::try_from(seq).unwrap_or(0),
                        reason: format!("reviewer {id} has no readable key"),
                    });
                };
                sqlx::query(
                    "INSERT INTO reg_reviewer_keys (kid, id, seq) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                )
                .bind(kid)
                .bind(&id)
                .bind(seq)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            }
            Ok(())
        }

        /// Hashes that grow the tree from `from` entries to `to`, with the
        /// new size, if the recorded size is still `from`; whether it was.
        pub(crate) async fn extend_tree(
            conn: &mut $conn,
            from: u64,
            to: u64,
            hashes: &[(u64, [u8; 32])],
        ) -> Result<bool, Error> {
            let size: Option<String> =
                sqlx::query_scalar("SELECT value FROM ledger_meta WHERE key = 'tree_size'")
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db)?;
            if size.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) != from {
                return Ok(false);
            }
            // Growing the tree adds a contiguous run of stored indexes (the
            // tlog layout stores each leaf's hashes after the previous
            // leaf's): one statement splits one blob into its rows, instead
            // of binding two parameters per row.
            if let Some(&(first, _)) = hashes.first() {
                if hashes.iter().enumerate().any(|(i, (idx, _))| *idx != first + i as u64) {
                    return Err(Error::Database(
                        "tree: the hashes to record are not one contiguous run".into(),
                    ));
                }
                let blob: Vec<u8> = hashes.iter().flat_map(|(_, h)| *h).collect();
                sqlx::query(
                    "WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r WHERE i + 1 < $3)
                     INSERT INTO tree_hashes (idx, hash) SELECT $1 + i, substr($2, i * 32 + 1, 32) FROM r",
                )
                .bind(i64::try_from(first).unwrap_or(i64::MAX))
                .bind(blob)
                .bind(hashes.len() as i64)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            }
            sqlx::query(
                "INSERT INTO ledger_meta (key, value) VALUES ('tree_size', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(to.to_string())
            .execute(&mut *conn)
            .await
            .map_err(db)?;
            Ok(true)
        }

        /// The ledger's origin: the recorded one, or `proposed`, recorded
        /// now, on a ledger that has none.
        pub(crate) async fn origin(
            conn: &mut $conn,
            proposed: Option<&str>,
        ) -> Result<Option<String>, Error> {
            if let Some(proposed) = proposed {
                sqlx::query(
                    "INSERT INTO ledger_meta (key, value) VALUES ('origin', $1) ON CONFLICT (key) DO NOTHING",
                )
                .bind(proposed)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            }
            sqlx::query_scalar("SELECT value FROM ledger_meta WHERE key = 'origin'")
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)
        }

        /// Records a checkpoint of `size` entries if it is larger than every
        /// recorded one; whether it was.
        pub(crate) async fn put_checkpoint(
            conn: &mut $conn,
            size: u64,
            note: &str,
        ) -> Result<bool, Error> {
            let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(size) FROM checkpoints")
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
            let size = i64::try_from(size).map_err(|_| Error::Database("checkpoint size".into()))?;
            if latest.is_some_and(|l| l >= size) {
                return Ok(false);
            }
            sqlx::query("INSERT INTO checkpoints (size, note) VALUES ($1, $2)")
                .bind(size)
                .bind(note)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            Ok(true)
        }

        /// A reservation, the charges it holds and, for one made on an
        /// approval (`approval`), that the approval's execution is under
        /// way.
        pub(crate) async fn insert_reservation(
            conn: &mut $conn,
            key: &str,
            body: &[u8],
            charges: &[crate::Spend],
            approval: Option<&crate::ApprovalRead>,
        ) -> Result<(), Error> {
            let new = sqlx::query(
                "INSERT INTO pending (idempotency_key, body) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(key)
            .bind(body)
            .execute(&mut *conn)
            .await
            .map_err(db)?
            .rows_affected()
                == 1;
            if let (true, Some(a)) = (new, approval) {
                sqlx::query(
                    "INSERT INTO pending_approvals (idempotency_key, approval, reviewer) VALUES ($1, $2, $3)",
                )
                .bind(key)
                .bind(a.approval.as_str())
                .bind(a.reviewer.as_deref())
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            }
            if new {
                for s in charges {
                    sqlx::query(
                        "INSERT INTO held (idempotency_key, delegation, currency, window_start, window_seconds, amount_minor)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(key)
                    .bind(s.delegation.as_str())
                    .bind(s.currency.as_str())
                    .bind(s.window_start)
                    .bind(s.window_seconds)
                    .bind(s.amount_minor)
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
                }
            }
            Ok(())
        }

        /// Writes one registry change's rows; a refusal by the tables' rules is a
        /// [`Error::RegistryConflict`] naming what was refused.
        pub(crate) async fn apply_change(
            conn: &mut $conn,
            seq: i64,
            change: &RegistryChange,
        ) -> Result<(), Error> {
            if matches!(
                change,
                RegistryChange::PolicyActivate { .. }
                    | RegistryChange::PolicyRollback { .. }
                    | RegistryChange::PolicyDeactivate { .. }
            ) {
                // The history is read by bundle name from here on
                // (RegistryState::policy_domains).
                sqlx::query(
                    "INSERT INTO ledger_meta (key, value) VALUES ('policy_model', 'domains')
                         ON CONFLICT (key) DO NOTHING",
                )
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            }
            if let Some(done) = webhook_change(&mut *conn, change).await {
                let done = done.map_err(|e| {
                    if e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
                        Error::RegistryConflict(format!("{}: the endpoint exists", change.name()))
                    } else {
                        db(e)
                    }
                })?;
                if done != 1 {
                    return Err(Error::RegistryConflict(format!(
                        "{}: no such endpoint",
                        change.name()
                    )));
                }
                return Ok(());
            }
            if let RegistryChange::Lease { state, mark, .. } = change {
                return apply_lease(conn, seq, state, mark.as_ref()).await;
            }
            // A resource whose entity has a recorded state is changed by its
            // model's transitions alone: a put decided on its absence is
            // stale once one is recorded (it raced the first transition).
            if let RegistryChange::ResourcePut { resource, .. } = change {
                let current = entity_version(&mut *conn, resource).await?;
                if current > 0 {
                    return Err(Error::Stale(crate::Staleness::Entity {
                        resource: resource.clone(),
                        read: 0,
                        current,
                    }));
                }
            }
            let q = match change {
                RegistryChange::Lease { .. } => return Ok(()),
                RegistryChange::IssuerRegister { kid, jwk } => {
                    sqlx::query("INSERT INTO reg_issuers (kid, jwk, seq) VALUES ($1, $2, $3)")
                        .bind(kid.as_str())
                        .bind(jwk.as_slice())
                }
                RegistryChange::IssuerRevoke { kid } => {
                    sqlx::query("INSERT INTO reg_issuer_revocations (kid, seq) VALUES ($1, $2)")
                        .bind(kid.as_str())
                }
                RegistryChange::DelegationRegister { id, token } => {
                    sqlx::query("INSERT INTO reg_delegations (id, token, seq) VALUES ($1, $2, $3)")
                        .bind(id.as_str())
                        .bind(token.as_slice())
                }
                RegistryChange::DelegationRevoke { id } => {
                    sqlx::query("INSERT INTO reg_delegation_revocations (id, seq) VALUES ($1, $2)")
                        .bind(id.as_str())
                }
                RegistryChange::ReviewerRegister { id, kid, reviewer } => {
                    let key = sqlx::query(
                        "INSERT INTO reg_reviewer_keys (kid, id, seq) VALUES ($1, $2, $3)",
                    )
                    .bind(kid.as_str())
                    .bind(id.as_str())
                    .bind(seq)
                    .execute(&mut *conn)
                    .await;
                    if let Err(e) = key {
                        return Err(if e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
                            Error::RegistryConflict(format!(
                                "reviewer.register: key {kid} is another reviewer's"
                            ))
                        } else {
                            db(e)
                        });
                    }
                    sqlx::query("INSERT INTO reg_reviewers (id, reviewer, seq) VALUES ($1, $2, $3)")
                        .bind(id.as_str())
                        .bind(reviewer.as_slice())
                }
                RegistryChange::ReviewerRevoke { id } => {
                    withdraw_grants(&mut *conn, seq, id).await?;
                    sqlx::query("INSERT INTO reg_reviewer_revocations (id, seq) VALUES ($1, $2)")
                        .bind(id.as_str())
                }
                RegistryChange::SourceRegister { id, source } => {
                    sqlx::query("INSERT INTO reg_sources (id, source, seq) VALUES ($1, $2, $3)")
                        .bind(id.as_str())
                        .bind(source.as_slice())
                }
                RegistryChange::SourceRevoke { id } => {
                    sqlx::query("INSERT INTO reg_source_revocations (id, seq) VALUES ($1, $2)")
                        .bind(id.as_str())
                }
                RegistryChange::ResourcePut {
                    resource,
                    attributes,
                } => sqlx::query(
                    "INSERT INTO reg_resources (resource, attributes, seq) VALUES ($1, $2, $3)
                         ON CONFLICT (resource) DO UPDATE SET attributes = excluded.attributes, seq = excluded.seq",
                )
                .bind(resource.as_str())
                .bind(attributes.as_slice()),
                RegistryChange::PolicyPublish { version, files } => {
                    sqlx::query("INSERT INTO reg_policies (version, files, seq) VALUES ($1, $2, $3)")
                        .bind(version.as_str())
                        .bind(files.as_slice())
                }
                RegistryChange::PolicyActivate { version }
                | RegistryChange::PolicyRollback { version }
                | RegistryChange::PolicyDeactivate { version } => {
                    sqlx::query("INSERT INTO reg_policy_history (change, version, seq) VALUES ($1, $2, $3)")
                        .bind(change.name())
                        .bind(version.as_str())
                }
                RegistryChange::WebhookAdd { .. }
                | RegistryChange::WebhookAdopt { .. }
                | RegistryChange::WebhookEnable { .. }
                | RegistryChange::WebhookDisable { .. }
                | RegistryChange::WebhookRotate { .. } => return Ok(()),
            };
            q.bind(seq).execute(conn).await.map(|_| ()).map_err(|e| {
                let conflict = e.as_database_error().is_some_and(|d| {
                    d.is_unique_violation() || d.message().starts_with("registry conflict")
                });
                if conflict {
                    Error::RegistryConflict(format!(
                        "{}: {}",
                        change.name(),
                        e.as_database_error()
                            .map(|d| d.message().to_owned())
                            .unwrap_or_default()
                    ))
                } else {
                    db(e)
                }
            })
        }

        /// Writes a `webhook.*` change to the endpoint table and returns how
        /// many rows it changed (one, unless the endpoint is not there);
        /// `None` for other changes.
        async fn webhook_change(
            conn: &mut $conn,
            change: &RegistryChange,
        ) -> Option<Result<u64, sqlx::Error>> {
            let q = match change {
                RegistryChange::WebhookAdd {
                    id,
                    config,
                    secrets,
                    cursor,
                } => sqlx::query(
                    "INSERT INTO webhook_endpoints (id, config, secrets, enabled, cursor) VALUES ($1, $2, $3, 1, $4)",
                )
                .bind(id.as_str())
                .bind(config.as_slice())
                .bind(secrets.as_slice())
                .bind(i64::try_from(*cursor).unwrap_or(i64::MAX)),
                RegistryChange::WebhookAdopt { id, config } => {
                    sqlx::query("UPDATE webhook_endpoints SET config = $1 WHERE id = $2")
                        .bind(config.as_slice())
                        .bind(id.as_str())
                }
                RegistryChange::WebhookEnable { id } => sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = 1, disabled_reason = NULL WHERE id = $1",
                )
                .bind(id.as_str()),
                RegistryChange::WebhookDisable { id, reason } => sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $1 WHERE id = $2",
                )
                .bind(reason.as_str())
                .bind(id.as_str()),
                RegistryChange::WebhookRotate { id, secrets } => {
                    sqlx::query("UPDATE webhook_endpoints SET secrets = $1 WHERE id = $2")
                        .bind(secrets.as_slice())
                        .bind(id.as_str())
                }
                _ => return None,
            };
            Some(q.execute(conn).await.map(|r| r.rows_affected()))
        }

        /// Inserts outbox rows `(seq, type)` in order, in few statements.
        pub(crate) async fn insert_events(
            conn: &mut $conn,
            events: &[(i64, Vec<&'static str>)],
        ) -> Result<(), Error> {
            let rows: Vec<(i64, &str)> = events
                .iter()
                .flat_map(|(seq, types)| types.iter().map(move |t| (*seq, *t)))
                .collect();
            let mut done = 0;
            while done < rows.len() {
                let n = [64, 16, 4, 1]
                    .into_iter()
                    .find(|n| *n <= rows.len() - done)
                    .unwrap_or(1);
                let mut sql = String::from("INSERT INTO outbox (seq, type) VALUES ($1, $2)");
                for i in 1..n {
                    sql.push_str(&format!(", (${}, ${})", 2 * i + 1, 2 * i + 2));
                }
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (seq, t) in &rows[done..done + n] {
                    q = q.bind(*seq).bind(*t);
                }
                q.execute(&mut *conn).await.map_err(db)?;
                done += n;
            }
            Ok(())
        }

        /// Applies one webhook state change.
        pub(crate) async fn apply_webhook(conn: &mut $conn, op: &WebhookOp) -> Result<(), Error> {
            let q = match op {
                WebhookOp::SetCursor { id, cursor } => {
                    sqlx::query("UPDATE webhook_endpoints SET cursor = $1 WHERE id = $2")
                        .bind(i64::try_from(*cursor).unwrap_or(i64::MAX))
                        .bind(id.as_str())
                }
                WebhookOp::AdvanceCursor { id, from, to } => {
                    sqlx::query("UPDATE webhook_endpoints SET cursor = $1 WHERE id = $2 AND cursor = $3")
                        .bind(i64::try_from(*to).unwrap_or(i64::MAX))
                        .bind(id.as_str())
                        .bind(i64::try_from(*from).unwrap_or(i64::MAX))
                }
                WebhookOp::Attempt(a) => sqlx::query(
                    "INSERT INTO webhook_attempts (endpoint, event, n, at, status, error, outcome)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(a.endpoint.as_str())
                .bind(i64::try_from(a.event).unwrap_or(i64::MAX))
                .bind(i64::from(a.n))
                .bind(a.at.as_str())
                .bind(a.status.map(i64::from))
                .bind(a.error.as_deref())
                .bind(a.outcome.as_str()),
                WebhookOp::Redeliver { endpoint, event } => sqlx::query(
                    "INSERT INTO webhook_redeliveries (endpoint, event) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(endpoint.as_str())
                .bind(i64::try_from(*event).unwrap_or(i64::MAX)),
                WebhookOp::Redelivered { endpoint, event } => {
                    sqlx::query("DELETE FROM webhook_redeliveries WHERE endpoint = $1 AND event = $2")
                        .bind(endpoint.as_str())
                        .bind(i64::try_from(*event).unwrap_or(i64::MAX))
                }
            };
            q.execute(conn).await.map(|_| ()).map_err(db)
        }

        /// Writes an approval row with the entry at `seq`; a refusal by the
        /// tables' rules is an [`Error::ApprovalConflict`] naming what was refused.
        pub(crate) async fn insert_approval(
            conn: &mut $conn,
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
                .bind(verdict.name())
                .bind(status.name())
                .bind(decision_hash.as_deref()),
            };
            q.execute(conn).await.map(|_| ()).map_err(|e| {
                let Some(d) = e.as_database_error() else {
                    return db(e);
                };
                let m = d.message();
                // SQLite names the column (`approval_steps.reviewer`), PostgreSQL
                // the constraint (`approval_steps_approval_reviewer_key`).
                if m.contains("decision_hash") {
                    Error::ApprovalConflict("this signed decision was already used".into())
                } else if m.contains("approval_steps.reviewer")
                    || m.contains("approval_steps_approval_reviewer_key")
                {
                    Error::ApprovalConflict("this reviewer already decided on this approval".into())
                } else if m.contains("approvals.id") || m.contains("approvals_pkey") {
                    Error::ApprovalConflict("the approval is already open".into())
                } else if d.is_unique_violation() || m.starts_with("approval conflict") {
                    Error::ApprovalConflict("the approval is unknown or has ended".into())
                } else {
                    db(e)
                }
            })
        }

    };
}

/// The shared writes on an SQLite connection.
pub(crate) mod sqlite {
    shared_writes!(sqlx::SqliteConnection);
}

/// The shared writes on a PostgreSQL connection.
#[cfg(feature = "postgres")]
pub(crate) mod postgres {
    shared_writes!(sqlx::PgConnection);
}
