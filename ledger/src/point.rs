//! Point reads of a SQLite ledger, straight on SQLite and on the calling
//! thread: one row by a unique key (an entry by seq, receipt id or
//! idempotency key; an entity by resource), the reads every decision and
//! every receipt lookup makes.
//!
//! Through sqlx's pool, each such read is a round trip to a connection's
//! worker thread and back, which costs ~40–50 µs of CPU on these machines
//! where the read itself costs 3–4 µs (the foundation benchmark measures
//! both). Here a read borrows an idle read-only connection, runs its
//! prepared statement and gives the connection back.
//!
//! Invariants:
//! - A point read never waits for a lock on the runtime's thread: the
//!   connections have no busy timeout, and a read SQLite refuses (busy,
//!   or any other failure, a connection that cannot open included) is
//!   answered `None`, and the caller reads through the pool, which waits
//!   and reports errors as every other read does.
//! - Each read is one statement, so it sees one committed state of the
//!   ledger (WAL snapshot), as a pool read does.
//! - Only single-row lookups by a unique index come here; pages, exports
//!   and anything that scans stay on the pool.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, Row, ToSql};

/// Most idle connections kept. Point reads run on the runtime's threads,
/// one at a time on each, so a few suffice.
const MAX_IDLE: usize = 8;

/// Idle read-only connections to one ledger file.
pub(crate) struct PointReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl PointReads {
    /// Point reads of the ledger at `path`; connections open on first use.
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> Option<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        conn.busy_timeout(Duration::ZERO).ok()?;
        Some(conn)
    }

    /// The row `sql` selects with `key` bound to its one parameter, mapped
    /// by `map`: `Some(None)` if there is none, `None` if SQLite did not
    /// answer at once (the caller reads through the pool).
    pub(crate) fn row<T>(
        &self,
        sql: &str,
        key: &dyn ToSql,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Option<Option<T>> {
        let taken = self.idle.lock().ok()?.pop();
        let conn = match taken {
            Some(c) => c,
            None => self.open()?,
        };
        let found = conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.query_row([key], map).optional());
        // A connection whose read failed is dropped, not kept: whatever
        // went wrong goes with it.
        let found = found.ok()?;
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger_file(dir: &std::path::Path) -> PathBuf {
        let path = dir.join("l.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = wal;
             CREATE TABLE t (k TEXT PRIMARY KEY NOT NULL, v BLOB NOT NULL) STRICT;
             INSERT INTO t VALUES ('a', x'0102');",
        )
        .unwrap();
        path
    }

    #[test]
    fn a_row_is_read_and_its_absence_told_apart_from_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let reads = PointReads::new(ledger_file(dir.path()));
        let get = |k: &str| {
            reads.row("SELECT v FROM t WHERE k = $1", &k, |r| {
                r.get::<_, Vec<u8>>(0)
            })
        };
        assert_eq!(get("a"), Some(Some(vec![1, 2])));
        assert_eq!(get("b"), Some(None));
        // The connection went back, and is used again.
        assert_eq!(reads.idle.lock().unwrap().len(), 1);
        // A statement SQLite refuses is no answer: the caller asks the pool.
        assert_eq!(
            reads.row("SELECT v FROM missing WHERE k = $1", &"a", |r| r
                .get::<_, Vec<u8>>(0)),
            None
        );
        assert_eq!(reads.idle.lock().unwrap().len(), 0);
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_no_answer() {
        let dir = tempfile::tempdir().unwrap();
        let reads = PointReads::new(dir.path().join("absent.db"));
        assert_eq!(
            reads.row("SELECT 1 WHERE $1", &1i64, |r| r.get::<_, i64>(0)),
            None
        );
    }

    #[test]
    fn a_locked_database_is_no_answer_and_no_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = ledger_file(dir.path());
        // Out of WAL mode, a writer's exclusive lock shuts readers out.
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode = delete; PRAGMA locking_mode = exclusive; BEGIN EXCLUSIVE; INSERT INTO t VALUES ('b', x'03');")
            .unwrap();
        let reads = PointReads::new(path);
        let started = std::time::Instant::now();
        assert_eq!(
            reads.row("SELECT v FROM t WHERE k = $1", &"a", |r| r
                .get::<_, Vec<u8>>(0)),
            None
        );
        assert!(started.elapsed() < Duration::from_millis(500));
    }
}
