//! Point reads of a SQLite ledger, straight on SQLite: one row by a unique
//! key (an entry by seq, receipt id or idempotency key; an entity by
//! resource), the reads every decision and every receipt lookup makes.
//!
//! Through sqlx's pool, each such read costs ~40–50 µs of CPU on these
//! machines where the statement itself costs 3–4 µs (the foundation
//! benchmark measures both): a pool checkout, and per statement a round
//! trip of commands and rows through channels to the connection's worker
//! thread. Here a read is one job handed to a few reader threads of the
//! ledger's own, each holding a read-only connection with its statements
//! prepared, and one reply.
//!
//! Invariants:
//! - SQLite never runs on the async runtime's threads: a reader stalled
//!   inside SQLite (another process holding the WAL index's locks, a slow
//!   disk) holds up point reads only, never the runtime.
//! - A read SQLite does not answer at once is answered `None`, and the
//!   caller reads through the pool, which waits and reports errors as
//!   every other read does: the connections have no busy timeout, a
//!   failed statement or a connection that cannot open is no answer, and
//!   so is a full queue (every reader busy or stalled).
//! - Each read is one statement, so it sees one committed state of the
//!   ledger (a WAL snapshot), as a pool read does.
//! - Only single-row lookups by a unique index come here; pages, exports
//!   and anything that scans stay on the pool.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, Row};
use tokio::sync::oneshot;

/// Reads waiting for a reader before more go through the pool.
const QUEUE: usize = 256;

/// A read's key: an integer (a seq) or text.
pub(crate) enum Key {
    /// A seq.
    Int(i64),
    /// A receipt id, idempotency key or resource.
    Text(String),
}

type Job = Box<dyn FnOnce(Option<&Connection>) + Send>;

/// The ledger's reader threads and their queue.
pub(crate) struct PointReads {
    queue: SyncSender<Job>,
}

impl PointReads {
    /// `readers` threads reading the ledger at `path`; each opens its
    /// connection on its first read.
    pub(crate) fn new(path: PathBuf, readers: usize) -> Self {
        let (queue, jobs) = sync_channel::<Job>(QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..readers.max(1) {
            let (path, jobs) = (path.clone(), jobs.clone());
            // A reader that cannot start leaves the others; with none,
            // every send fails and reads go through the pool.
            let _ = std::thread::Builder::new()
                .name(format!("tollgate-reader-{i}"))
                .spawn(move || read_loop(&path, &jobs));
        }
        Self { queue }
    }

    /// The row `sql` selects with `key` bound to its one parameter,
    /// mapped by `map`: `Some(None)` if there is none, `None` if no reader
    /// answered it at once (the caller reads through the pool).
    pub(crate) async fn row<T: Send + 'static>(
        &self,
        sql: &'static str,
        key: Key,
        map: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Option<Option<T>> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let found = conn.and_then(|c| {
                let mut stmt = c.prepare_cached(sql).ok()?;
                let row = match &key {
                    Key::Int(n) => stmt.query_row([n], map),
                    Key::Text(s) => stmt.query_row([s], map),
                };
                row.optional().ok()
            });
            let _ = reply.send(found);
        });
        match self.queue.try_send(job) {
            Ok(()) => answer.await.ok().flatten(),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => None,
        }
    }
}

fn open(path: &std::path::Path) -> Option<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    conn.busy_timeout(Duration::ZERO).ok()?;
    Some(conn)
}

/// A reader: takes jobs until the ledger is dropped. A connection whose
/// read failed is closed, and the next job opens another.
fn read_loop(path: &std::path::Path, jobs: &Mutex<Receiver<Job>>) {
    let mut conn: Option<Connection> = None;
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return;
        };
        if conn.is_none() {
            conn = open(path);
        }
        // Run the job; whether it got an answer is seen by the caller.
        // A statement that failed may have left the connection unsound:
        // check it with a trivial statement and drop it if it fails.
        job(conn.as_ref());
        if let Some(c) = &conn
            && c.execute_batch("SELECT 1").is_err()
        {
            conn = None;
        }
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

    fn blob(r: &Row<'_>) -> rusqlite::Result<Vec<u8>> {
        r.get(0)
    }

    #[tokio::test]
    async fn a_row_is_read_and_its_absence_told_apart_from_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let reads = PointReads::new(ledger_file(dir.path()), 2);
        let sql = "SELECT v FROM t WHERE k = $1";
        assert_eq!(
            reads.row(sql, Key::Text("a".into()), blob).await,
            Some(Some(vec![1, 2]))
        );
        assert_eq!(
            reads.row(sql, Key::Text("b".into()), blob).await,
            Some(None)
        );
        // A statement SQLite refuses is no answer: the caller asks the pool.
        assert_eq!(
            reads
                .row("SELECT v FROM missing WHERE k = $1", Key::Int(1), blob)
                .await,
            None
        );
        // And the readers go on.
        assert_eq!(
            reads.row(sql, Key::Text("a".into()), blob).await,
            Some(Some(vec![1, 2]))
        );
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_opened_is_no_answer() {
        let dir = tempfile::tempdir().unwrap();
        let reads = PointReads::new(dir.path().join("absent.db"), 1);
        assert_eq!(
            reads.row("SELECT 1 WHERE $1", Key::Int(1), blob).await,
            None
        );
    }

    #[tokio::test]
    async fn a_locked_database_is_no_answer_and_no_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = ledger_file(dir.path());
        // Out of WAL mode, a writer's exclusive lock shuts readers out.
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode = delete; PRAGMA locking_mode = exclusive; BEGIN EXCLUSIVE; INSERT INTO t VALUES ('b', x'03');")
            .unwrap();
        let reads = PointReads::new(path, 1);
        let started = std::time::Instant::now();
        assert_eq!(
            reads
                .row("SELECT v FROM t WHERE k = $1", Key::Text("a".into()), blob)
                .await,
            None
        );
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    /// Readers stalled (here: none left to take jobs) never hold a caller
    /// past a full queue: it is told to use the pool.
    #[tokio::test]
    async fn a_full_queue_is_no_answer() {
        let (queue, jobs) = sync_channel::<Job>(1);
        let reads = PointReads { queue };
        // One job fills the queue; nobody takes it.
        let first = reads.row("SELECT 1", Key::Int(1), |r| r.get::<_, i64>(0));
        let second = reads.row("SELECT 1", Key::Int(1), |r| r.get::<_, i64>(0));
        let (_, second) = tokio::join!(
            async {
                tokio::select! {
                    _ = first => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            },
            second
        );
        assert_eq!(second, None);
        drop(jobs);
    }
}
