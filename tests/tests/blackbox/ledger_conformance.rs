//! Both ledgers pass the one conformance suite (`tollgate_tests::
//! conformance`): the embedded SQLite ledger on files, the PostgreSQL one
//! on a real server (a throwaway cluster this test starts).

use tollgate_ledger::postgres::{PgLedger, PgOptions};
use tollgate_ledger::{SqliteLedger, SqliteOptions};
use tollgate_tests::conformance::{Backend, suite};
use tollgate_tests::postgres::Postgres;

struct Sqlite {
    dir: tempfile::TempDir,
    made: u32,
}

impl Backend for Sqlite {
    type L = SqliteLedger;

    fn create(&mut self) -> String {
        self.made += 1;
        format!("ledger-{}.db", self.made)
    }

    async fn open(&self, name: &str) -> SqliteLedger {
        SqliteLedger::open(SqliteOptions::new(self.dir.path().join(name)))
            .await
            .unwrap()
    }
}

struct Pg {
    cluster: Postgres,
    made: u32,
}

impl Backend for Pg {
    type L = PgLedger;

    fn create(&mut self) -> String {
        self.made += 1;
        self.cluster.database(&format!("ledger_{}", self.made))
    }

    async fn open(&self, url: &str) -> PgLedger {
        PgLedger::open(PgOptions::new(url)).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_ledger_passes_the_conformance_suite() {
    suite(&mut Sqlite {
        dir: tempfile::tempdir().unwrap(),
        made: 0,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgresql_ledger_passes_the_conformance_suite() {
    suite(&mut Pg {
        cluster: Postgres::start(),
        made: 0,
    })
    .await;
}
