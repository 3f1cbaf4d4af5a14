//! The PostgreSQL ledger's schema: the same tables and rules as the
//! SQLite ledger's, with PostgreSQL's types and trigger functions, plus the
//! one row every instance locks to append (`chain_head`). Applied at start
//! under an advisory lock, so instances starting together apply it once,
//! and only where its version is not recorded yet ([`marker`]): DDL on a
//! ledger that other instances are appending to could deadlock.
//!
//! The rules the triggers enforce, whoever connects: entries, registry
//! rows, spending, approvals and the outbox are append-only; a revoked
//! issuer, delegation or reviewer is never registered again; only a
//! registered delegation or reviewer is revoked; only a published policy
//! version is activated; an approval takes no step once it has ended.
//! Their messages start as the SQLite ledger's do (`registry conflict:`,
//! `approval conflict:`), so errors map the same way.

/// The key of the advisory lock held while the schema is applied.
pub(crate) const SCHEMA_LOCK: i64 = 0x746f_6c6c_6761_7465; // "tollgate"

/// The key of the transaction lock held while the tree is grown.
pub(crate) const TREE_LOCK: i64 = 0x746f_6c6c_7472_6565; // "tolltree"

/// The key of the session lock held by the one instance that delivers
/// webhooks.
pub(crate) const DELIVERY_LOCK: i64 = 0x746f_6c6c_686f_6f6b; // "tollhook"

/// Statements, in order; each can run again on an existing schema.
pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS ledger_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS chain_head (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL CHECK (seq >= 0),
        hash TEXT NOT NULL,
        appended_at TEXT
    )",
    "CREATE TABLE IF NOT EXISTS entries (
        seq BIGINT PRIMARY KEY CHECK (seq >= 1),
        receipt_id TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL,
        line BYTEA NOT NULL,
        idempotency_key TEXT UNIQUE
    )",
    "CREATE TABLE IF NOT EXISTS pending (
        idempotency_key TEXT PRIMARY KEY,
        body BYTEA NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS held (
        idempotency_key TEXT NOT NULL REFERENCES pending (idempotency_key) ON DELETE CASCADE,
        delegation TEXT NOT NULL,
        currency TEXT NOT NULL,
        window_start BIGINT NOT NULL,
        window_seconds BIGINT NOT NULL CHECK (window_seconds > 0),
        amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0)
    )",
    "CREATE INDEX IF NOT EXISTS held_window ON held (window_start, delegation, currency)",
    "CREATE INDEX IF NOT EXISTS held_key ON held (idempotency_key)",
    "CREATE TABLE IF NOT EXISTS pending_approvals (
        idempotency_key TEXT PRIMARY KEY
            REFERENCES pending (idempotency_key) ON DELETE CASCADE,
        approval TEXT NOT NULL,
        reviewer TEXT
    )",
    "CREATE INDEX IF NOT EXISTS pending_approvals_by_approval ON pending_approvals (approval)",
    "CREATE TABLE IF NOT EXISTS reg_issuers (
        kid TEXT PRIMARY KEY, jwk BYTEA NOT NULL, seq BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS reg_issuer_revocations (
        kid TEXT PRIMARY KEY, seq BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS reg_delegations (
        id TEXT PRIMARY KEY, token BYTEA NOT NULL, seq BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS reg_delegation_revocations (
        id TEXT PRIMARY KEY, seq BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS reg_reviewers (
        id TEXT PRIMARY KEY, reviewer BYTEA NOT NULL, seq BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS reg_reviewer_revocations (
        id TEXT PRIMARY KEY, seq BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS leases (
        lease TEXT PRIMARY KEY, agent TEXT NOT NULL, seq BIGINT NOT NULL,
        request_hash TEXT, issued_at TEXT, request_seq BIGINT,
        request_nanos BIGINT
    )",
    "CREATE TABLE IF NOT EXISTS reg_sources (
        id TEXT PRIMARY KEY, source BYTEA NOT NULL, seq BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS reg_source_revocations (
        id TEXT PRIMARY KEY, seq BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS reg_resources (
        resource TEXT PRIMARY KEY, attributes BYTEA NOT NULL, seq BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS reg_policies (
        version TEXT PRIMARY KEY, files BYTEA NOT NULL, seq BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS reg_policy_history (
        seq BIGINT PRIMARY KEY,
        change TEXT NOT NULL,
        version TEXT NOT NULL REFERENCES reg_policies (version)
    )",
    "CREATE TABLE IF NOT EXISTS spend (
        seq BIGINT NOT NULL REFERENCES entries (seq),
        delegation TEXT NOT NULL,
        currency TEXT NOT NULL,
        window_start BIGINT NOT NULL,
        window_seconds BIGINT NOT NULL CHECK (window_seconds > 0),
        amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0)
    )",
    "CREATE INDEX IF NOT EXISTS spend_window ON spend (window_start, delegation, currency)",
    "CREATE TABLE IF NOT EXISTS tree_hashes (
        idx BIGINT PRIMARY KEY CHECK (idx >= 0),
        hash BYTEA NOT NULL CHECK (length(hash) = 32)
    )",
    "CREATE TABLE IF NOT EXISTS checkpoints (
        size BIGINT PRIMARY KEY CHECK (size >= 0),
        note TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS approvals (
        id TEXT PRIMARY KEY,
        seq BIGINT NOT NULL UNIQUE REFERENCES entries (seq),
        deadline BIGINT NOT NULL,
        body BYTEA NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS approvals_by_deadline ON approvals (deadline)",
    "CREATE TABLE IF NOT EXISTS approval_steps (
        seq BIGINT PRIMARY KEY REFERENCES entries (seq),
        approval TEXT NOT NULL REFERENCES approvals (id),
        reviewer TEXT,
        verdict TEXT NOT NULL CHECK (verdict IN ('grant', 'deny', 'expire')),
        status TEXT NOT NULL
            CHECK (status IN ('pending_approval', 'approved', 'denied', 'expired')),
        decision_hash TEXT UNIQUE,
        UNIQUE (approval, reviewer)
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS approval_ends_once ON approval_steps (approval)
        WHERE status <> 'pending_approval'",
    "CREATE TABLE IF NOT EXISTS approval_withdrawals (
        step BIGINT PRIMARY KEY REFERENCES approval_steps (seq),
        seq BIGINT NOT NULL REFERENCES entries (seq)
    )",
    "CREATE TABLE IF NOT EXISTS entities (
        resource TEXT PRIMARY KEY,
        attributes BYTEA NOT NULL,
        version BIGINT NOT NULL CHECK (version > 0),
        seq BIGINT NOT NULL REFERENCES entries (seq)
    )",
    "CREATE TABLE IF NOT EXISTS entity_changes (
        resource TEXT NOT NULL,
        version BIGINT NOT NULL,
        seq BIGINT NOT NULL REFERENCES entries (seq),
        PRIMARY KEY (resource, version)
    )",
    "CREATE TABLE IF NOT EXISTS reg_reviewer_keys (
        kid TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, seq BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS outbox (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        seq BIGINT NOT NULL REFERENCES entries (seq),
        type TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS outbox_by_seq ON outbox (seq)",
    "CREATE TABLE IF NOT EXISTS webhook_endpoints (
        id TEXT PRIMARY KEY,
        config BYTEA NOT NULL,
        secrets BYTEA NOT NULL,
        enabled BIGINT NOT NULL CHECK (enabled IN (0, 1)),
        disabled_reason TEXT,
        cursor BIGINT NOT NULL CHECK (cursor >= 0)
    )",
    "CREATE TABLE IF NOT EXISTS webhook_attempts (
        endpoint TEXT NOT NULL REFERENCES webhook_endpoints (id),
        event BIGINT NOT NULL,
        n BIGINT NOT NULL CHECK (n >= 1),
        at TEXT NOT NULL,
        status BIGINT,
        error TEXT,
        outcome TEXT NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
        PRIMARY KEY (endpoint, event, n)
    )",
    "CREATE TABLE IF NOT EXISTS webhook_redeliveries (
        endpoint TEXT NOT NULL REFERENCES webhook_endpoints (id),
        event BIGINT NOT NULL,
        PRIMARY KEY (endpoint, event)
    )",
    // A whole group of plain appends in one round trip: under the chain
    // head's row lock, if the head is still the one the writer chained
    // from (and the registries the one the group's decisions read), the
    // entries, their outbox events, the reservations they fulfil and the
    // new head. Otherwise nothing, and -1 (the head moved) or -2 (the
    // registries changed): the writer then takes the general path.
    "CREATE OR REPLACE FUNCTION tollgate_append(
        head_seq BIGINT, head_hash TEXT, registry BIGINT,
        seqs BIGINT[], ids TEXT[], hashes TEXT[], lines BYTEA[], keys TEXT[],
        ev_seqs BIGINT[], ev_types TEXT[], last_hash TEXT, at TEXT
     ) RETURNS BIGINT LANGUAGE plpgsql AS $$
     DECLARE cur_seq BIGINT; cur_hash TEXT; cur_registry TEXT;
     BEGIN
       SELECT seq, hash INTO cur_seq, cur_hash FROM chain_head WHERE id = 1 FOR UPDATE;
       IF cur_seq <> head_seq OR cur_hash <> head_hash THEN RETURN -1; END IF;
       IF registry IS NOT NULL THEN
         SELECT value INTO cur_registry FROM ledger_meta WHERE key = 'registry_seq';
         IF COALESCE(cur_registry, '0') <> registry::TEXT THEN RETURN -2; END IF;
       END IF;
       INSERT INTO entries (seq, receipt_id, hash, line, idempotency_key)
         SELECT * FROM UNNEST(seqs, ids, hashes, lines, keys);
       INSERT INTO outbox (seq, type)
         SELECT s, t FROM UNNEST(ev_seqs, ev_types) WITH ORDINALITY AS u (s, t, n) ORDER BY n;
       IF EXISTS (SELECT 1 FROM UNNEST(keys) AS k WHERE k IS NOT NULL) THEN
         DELETE FROM pending WHERE idempotency_key = ANY(keys);
       END IF;
       UPDATE chain_head SET seq = head_seq + cardinality(seqs), hash = last_hash, appended_at = at
         WHERE id = 1;
       RETURN head_seq + cardinality(seqs);
     END $$",
    // One function refuses a change with the message it is given.
    "CREATE OR REPLACE FUNCTION tollgate_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$",
    // A row may be inserted only if a query over its table's neighbours
    // says so: each rule is one function.
    // Each insert rule, by table. (PL/pgSQL compiles the function per
    // table; a branch names only its own table's columns.)
    "CREATE OR REPLACE FUNCTION tollgate_registry_rules() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       CASE TG_TABLE_NAME
       WHEN 'reg_issuers' THEN
         IF EXISTS (SELECT 1 FROM reg_issuer_revocations WHERE kid = NEW.kid) THEN
           RAISE EXCEPTION 'registry conflict: issuer was revoked';
         END IF;
       WHEN 'reg_delegations' THEN
         IF EXISTS (SELECT 1 FROM reg_delegation_revocations WHERE id = NEW.id) THEN
           RAISE EXCEPTION 'registry conflict: delegation was revoked';
         END IF;
       WHEN 'reg_delegation_revocations' THEN
         IF NOT EXISTS (SELECT 1 FROM reg_delegations WHERE id = NEW.id) THEN
           RAISE EXCEPTION 'registry conflict: delegation is not registered';
         END IF;
       WHEN 'reg_reviewers' THEN
         IF EXISTS (SELECT 1 FROM reg_reviewer_revocations WHERE id = NEW.id) THEN
           RAISE EXCEPTION 'registry conflict: reviewer was revoked';
         END IF;
       WHEN 'reg_reviewer_revocations' THEN
         IF NOT EXISTS (SELECT 1 FROM reg_reviewers WHERE id = NEW.id) THEN
           RAISE EXCEPTION 'registry conflict: reviewer is not registered';
         END IF;
       WHEN 'reg_sources' THEN
         IF EXISTS (SELECT 1 FROM reg_source_revocations WHERE id = NEW.id) THEN
           RAISE EXCEPTION 'registry conflict: event source was revoked';
         END IF;
       WHEN 'reg_source_revocations' THEN
         IF NOT EXISTS (SELECT 1 FROM reg_sources WHERE id = NEW.id) THEN
           RAISE EXCEPTION 'registry conflict: event source is not registered';
         END IF;
       WHEN 'reg_policy_history' THEN
         IF NOT EXISTS (SELECT 1 FROM reg_policies WHERE version = NEW.version) THEN
           RAISE EXCEPTION 'registry conflict: policy version is not published';
         END IF;
       WHEN 'approval_steps' THEN
         IF NOT EXISTS (SELECT 1 FROM approvals WHERE id = NEW.approval)
            OR EXISTS (SELECT 1 FROM approval_steps
                       WHERE approval = NEW.approval AND status <> 'pending_approval') THEN
           RAISE EXCEPTION 'approval conflict: the approval is unknown or has ended';
         END IF;
       END CASE;
       RETURN NEW;
     END $$",
];

/// Tables whose rows are never updated or deleted, and the message of the
/// refusal. (`reg_resources`, `pending`, `chain_head`, `ledger_meta` and
/// the webhook endpoints and redeliveries change by design; webhook
/// attempts may be deleted with their endpoint's history but never
/// changed.)
pub(crate) const APPEND_ONLY: &[(&str, &str, &str)] = &[
    (
        "entries",
        "UPDATE OR DELETE",
        "ledger entries are append-only",
    ),
    (
        "reg_issuers",
        "UPDATE OR DELETE",
        "registry rows are append-only",
    ),
    (
        "reg_issuer_revocations",
        "UPDATE OR DELETE",
        "registry rows are append-only",
    ),
    (
        "reg_delegations",
        "UPDATE OR DELETE",
        "registry rows are append-only",
    ),
    (
        "reg_delegation_revocations",
        "UPDATE OR DELETE",
        "registry rows are append-only",
    ),
    (
        "reg_reviewers",
        "UPDATE OR DELETE",
        "registry rows are append-only",
    ),
    (
        "reg_reviewer_revocations",
        "UPDATE OR DELETE",
        "registry rows are append-only",
    ),
    (
        "reg_sources",
        "UPDATE OR DELETE",
        "registry rows are append-only",
    ),
    (
        "reg_source_revocations",
        "UPDATE OR DELETE",
        "registry rows are append-only",
    ),
    (
        "reg_policies",
        "UPDATE OR DELETE",
        "registry rows are append-only",
    ),
    (
        "reg_policy_history",
        "UPDATE OR DELETE",
        "registry rows are append-only",
    ),
    ("spend", "UPDATE OR DELETE", "spending rows are append-only"),
    (
        "tree_hashes",
        "UPDATE OR DELETE",
        "tree hashes are append-only",
    ),
    (
        "checkpoints",
        "UPDATE OR DELETE",
        "checkpoints are append-only",
    ),
    (
        "approvals",
        "UPDATE OR DELETE",
        "approval rows are append-only",
    ),
    (
        "approval_steps",
        "UPDATE OR DELETE",
        "approval rows are append-only",
    ),
    (
        "approval_withdrawals",
        "UPDATE OR DELETE",
        "approval rows are append-only",
    ),
    (
        "entity_changes",
        "UPDATE OR DELETE",
        "entity changes are append-only",
    ),
    (
        "reg_reviewer_keys",
        "UPDATE OR DELETE",
        "registry rows are append-only",
    ),
    ("outbox", "UPDATE OR DELETE", "outbox rows are append-only"),
    ("webhook_attempts", "UPDATE", "attempts are append-only"),
];

/// Tables whose inserts [`SCHEMA`]'s `tollgate_registry_rules` checks.
pub(crate) const RULED: &[&str] = &[
    "reg_issuers",
    "reg_delegations",
    "reg_delegation_revocations",
    "reg_reviewers",
    "reg_reviewer_revocations",
    "reg_sources",
    "reg_source_revocations",
    "reg_policy_history",
    "approval_steps",
];

/// Every statement that makes the schema, triggers included, in order.
/// The `ledger_meta` key that records that `statements` were applied:
/// `schema:` and the SHA-256 of the statements. A start that finds it
/// runs no DDL.
pub(crate) fn marker(statements: &[String]) -> String {
    let joined = statements.join("\n;\n");
    format!(
        "schema:{}",
        tollgate_protocol::HashAlg::Sha256.digest(&[joined.as_bytes()])
    )
}

pub(crate) fn statements() -> Vec<String> {
    let mut all: Vec<String> = SCHEMA.iter().map(|s| (*s).to_owned()).collect();
    for (table, events, message) in APPEND_ONLY {
        all.push(format!(
            "CREATE OR REPLACE TRIGGER {table}_append_only BEFORE {events} ON {table}
             FOR EACH ROW EXECUTE FUNCTION tollgate_refuse('{message}')"
        ));
    }
    for table in RULED {
        all.push(format!(
            "CREATE OR REPLACE TRIGGER {table}_rules BEFORE INSERT ON {table}
             FOR EACH ROW EXECUTE FUNCTION tollgate_registry_rules()"
        ));
    }
    all
}
