//! A throwaway PostgreSQL cluster for one test: Debian's server binaries
//! (`postgresql`; `scripts/test.sh` installs the package), a new data
//! folder, loopback on a free port, trust authentication for the one
//! local user, removed when dropped. The server never runs as root: under
//! root it runs as the `postgres` system user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running cluster.
pub struct Postgres {
    child: Child,
    /// The cluster's folder (data and socket), removed on drop.
    dir: tempfile::TempDir,
    /// Its loopback port.
    pub port: u16,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The folder of the newest PostgreSQL server binaries
/// (`TOLLGATE_PG_BIN`, or Debian's `/usr/lib/postgresql/N/bin`).
fn bin_dir() -> PathBuf {
    if let Ok(p) = std::env::var("TOLLGATE_PG_BIN") {
        return PathBuf::from(p);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries: install Debian's postgresql package")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .expect("no initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The server on the cluster in `dir` (its `data` folder, its socket in
/// `dir`), on loopback `port`, logging to `log`.
fn server(bin: &Path, root: bool, dir: &Path, port: u16, log: std::fs::File) -> Child {
    command(&bin.join("postgres"), root)
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=200",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// `program args…`, as the `postgres` user when this process is root.
fn command(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Starts a new cluster and waits until it accepts connections.
    pub fn start() -> Self {
        let bin = bin_dir();
        let root = is_root();
        let mut dir = tempfile::tempdir().unwrap();
        if root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the cluster folder failed");
        }
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"), root)
            .args([
                "--auth=trust",
                "--username=tollgate",
                "--encoding=UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {out:?}");
        // PostgreSQL cannot take port 0 and say which it got: it is given
        // a free one, which another process may take first. Then it stops
        // at once, saying so, and is started again on another.
        for attempt in 1..=5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
            let child = server(&bin, root, dir.path(), port, log);
            let mut pg = Postgres { child, dir, port };
            if pg.wait_ready(&bin, &data) {
                return pg;
            }
            let log = std::fs::read_to_string(pg.dir.path().join("server.log")).unwrap_or_default();
            assert!(
                attempt < 5 && log.contains("could not bind"),
                "PostgreSQL did not start: {log}"
            );
            // Taken meanwhile: the folder is kept for the next try.
            let _ = pg.child.wait();
            dir = std::mem::replace(&mut pg.dir, tempfile::tempdir().unwrap());
        }
        unreachable!("the last attempt either started or failed")
    }

    /// Waits until this server (not another on its port) accepts
    /// connections: true, or false if it stopped first.
    fn wait_ready(&mut self, bin: &Path, data: &Path) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            // postmaster.pid: line 4 the port, line 8 the status.
            let pid = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
            let lines: Vec<&str> = pid.lines().collect();
            let ours = lines.get(3).map(|l| l.trim()) == Some(&self.port.to_string())
                && lines.get(7).map(|l| l.trim()) == Some("ready");
            let ready = ours
                && Command::new(bin.join("pg_isready"))
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &self.port.to_string(),
                        "-U",
                        "tollgate",
                    ])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
            if ready {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server at once (SIGQUIT: PostgreSQL's immediate
    /// shutdown, no checkpoint, as after a crash) and waits for it to go.
    pub fn stop_immediate(&mut self) {
        // The postmaster's own pid (under root, `child` is `runuser`,
        // which does not pass SIGQUIT on).
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|p| p.lines().next().map(str::to_owned))
            .unwrap_or_else(|| self.child.id().to_string());
        let _ = Command::new("kill").args(["-QUIT", &pid]).status();
        let _ = self.child.wait();
    }

    /// Starts the stopped server again on its folder and port (recovering
    /// from its WAL), and waits until it accepts connections.
    pub fn start_again(&mut self) {
        let bin = bin_dir();
        let data = self.dir.path().join("data");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        self.child = server(&bin, is_root(), self.dir.path(), self.port, log);
        assert!(
            self.wait_ready(&bin, &data),
            "PostgreSQL did not start again: {}",
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// A new, empty database on this cluster; its URL.
    pub fn database(&self, name: &str) -> String {
        let out = Command::new(bin_dir().join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "tollgate",
                name,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "createdb {name}: {out:?}");
        format!("postgres://tollgate@127.0.0.1:{}/{name}", self.port)
    }
}
