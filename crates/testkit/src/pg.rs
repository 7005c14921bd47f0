//! A PostgreSQL server of a test's own, which the test may stop and start
//! again (the shared server `scripts/test` starts serves every other test and
//! must stay up).
//!
//! Started as `scripts/pg.sh` starts the shared one: Debian's PostgreSQL 15
//! binaries (`/usr/lib/postgresql/15/bin`, or `$PG_BIN`), `initdb` into a
//! temporary folder, trust authentication for `postgres`, listening on
//! `127.0.0.1` only, on a free port, with fsync off (tests check behaviour,
//! not the disk). As root, the server runs as the `postgres` user, since
//! PostgreSQL refuses to run as root. Dropping it stops the server and
//! removes its data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// Server settings, as `scripts/pg.sh` sets them for tests.
const SETTINGS: &str = "-c listen_addresses=127.0.0.1 -c max_connections=400 \
    -c shared_buffers=256MB -c fsync=off -c synchronous_commit=off -c full_page_writes=off";

/// A throwaway PostgreSQL 15 server on `127.0.0.1`.
pub struct PgServer {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    /// Run the server's programs as the `postgres` user (we are root).
    as_postgres: bool,
}

impl PgServer {
    /// Creates a cluster in a temporary folder and starts it on a free port.
    /// Blocks for a few seconds: from async code, call it in `spawn_blocking`.
    pub fn start_new() -> PgServer {
        let bin = PathBuf::from(
            std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_owned()),
        );
        assert!(
            bin.join("initdb").is_file(),
            "PostgreSQL binaries not found in {} (install postgresql-15 or set PG_BIN)",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("tessera-pg.")
            .tempdir()
            .expect("a folder for the server");
        let as_postgres = is_root();
        if as_postgres {
            let chown = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .output()
                .expect("running chown");
            assert!(chown.status.success(), "chown: {}", text(&chown));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = PgServer {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = server.data();
        let initdb = server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("running initdb");
        assert!(initdb.status.success(), "initdb failed: {}", text(&initdb));
        server.start();
        server
    }

    /// The admin URL (database `postgres`, user `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again), on the same port and data; waits until it
    /// accepts connections. Blocking.
    pub fn start(&self) {
        let options = format!(
            "-p {} -k {} {SETTINGS}",
            self.port,
            self.dir.path().display()
        );
        let started = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log())
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .expect("running pg_ctl start");
        assert!(
            started.status.success(),
            "PostgreSQL did not start: {}\n{}",
            text(&started),
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// Stops the server as an operator restarting it does (`pg_ctl stop -m
    /// fast`: sessions are terminated, transactions in flight roll back); waits
    /// until it is down. Blocking.
    pub fn stop(&self) {
        let stopped = self.pg_ctl_stop("fast");
        assert!(
            stopped.status.success(),
            "PostgreSQL did not stop: {}",
            text(&stopped)
        );
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn pg_ctl_stop(&self, mode: &str) -> Output {
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "stop"])
            .output()
            .expect("running pg_ctl stop")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// `program` of the PostgreSQL binaries, as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let _ = self.pg_ctl_stop("immediate");
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether this process runs as root (its effective user id is 0).
fn is_root() -> bool {
    std::fs::read_to_string(Path::new("/proc/self/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
