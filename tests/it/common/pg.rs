//! A throwaway PostgreSQL cluster on 127.0.0.1: initdb in a temp dir owned by the
//! `postgres` OS user (initdb and pg_ctl refuse to run as root), started with pg_ctl on
//! a free port, stopped on drop. SQL runs through psql.

use super::run_ok as run;
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    match versions.pop() {
        Some(v) if v.join("bin/initdb").exists() => v.join("bin"),
        _ => panic!(
            "PostgreSQL is not installed: the SQL tests need a real server. Install it with \
             `apt-get install postgresql` (tests/run.sh does this)"
        ),
    }
}

pub struct Postgres {
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
    running: bool,
}

fn as_postgres(program: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.current_dir("/");
    cmd
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("mxisd-pg")
            .tempdir_in("/tmp")
            .unwrap();
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()));
        }
        run(as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]));
        let mut pg = Postgres {
            port: 0,
            dir,
            bin,
            running: false,
        };
        pg.launch();
        pg
    }

    fn launch(&mut self) {
        for _ in 0..5 {
            let port = if self.port == 0 {
                super::free_port()
            } else {
                self.port
            };
            let ok = as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-p {port} -k {} -h 127.0.0.1 -c fsync=off",
                    self.dir.path().display()
                ))
                .arg("start")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                self.port = port;
                self.running = true;
                return;
            }
        }
        panic!(
            "PostgreSQL would not start; see {}/server.log",
            self.dir.path().display()
        );
    }

    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .output();
        self.running = false;
    }

    pub fn restart(&mut self) {
        self.launch();
    }

    /// Makes every role but `postgres` log in over TCP with its password (the cluster
    /// trusts everyone at first), for tests of wrong credentials.
    pub fn require_passwords(&self) {
        let hba = self.dir.path().join("data/pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        run(as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("reload"));
        // The postmaster rereads pg_hba.conf asynchronously.
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    /// `postgres://postgres@127.0.0.1:PORT/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL on `db` (stops at the first error).
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let path = self.dir.path().join("run.sql");
        std::fs::write(&path, sql).unwrap();
        run(Command::new(self.bin.join("psql"))
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-X", "-d"])
            .arg(self.url(db))
            .arg("-f")
            .arg(&path))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
