//! A private PostgreSQL server for tests: Debian's `postgresql` package, a fresh
//! cluster in a temporary folder, listening on 127.0.0.1 on a free port (and a unix
//! socket in that folder), SCRAM passwords, stopped when dropped.
//!
//! PostgreSQL refuses to run as root, so as root `initdb` and `postgres` run as the
//! `postgres` system user (`setpriv`, which execs, so the child is the server
//! itself), in a folder handed to that user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The database role and database Postern uses, and the role's password.
pub const ROLE: &str = "postern";
pub const PASSWORD: &str = "pg-secret-3f9a";

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    child: Option<Child>,
    /// Extra `-c` settings for the server (TLS).
    settings: Vec<String>,
}

/// Where Debian keeps the server binaries (they are not on PATH).
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `program args` as the `postgres` user when we are root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// A running server with the `postern` role (password [`PASSWORD`]) owning an
    /// empty `postern` database; `None` (skip) when PostgreSQL is not installed
    /// outside CI.
    pub fn start() -> Option<Postgres> {
        Postgres::start_with(None)
    }

    /// Like [`Postgres::start`], also accepting TLS with `cert` (certificate and key,
    /// PEM) when given.
    pub fn start_with(cert: Option<(&str, &str)>) -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "postgresql must be installed in CI (.ci/run installs it)"
            );
            eprintln!("skipping: postgresql is not installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
            std::os::unix::fs::chown(dir.path(), Some(pg.uid.as_raw()), Some(pg.gid.as_raw()))
                .unwrap();
        }
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();
        if is_root() {
            let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
            std::os::unix::fs::chown(&pwfile, Some(pg.uid.as_raw()), None).unwrap();
        }
        let out = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                ROLE,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut settings = Vec::new();
        if let Some((cert_pem, key_pem)) = cert {
            let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            super::write(&cert, cert_pem);
            super::write(&key, key_pem);
            if is_root() {
                let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
                for f in [&cert, &key] {
                    std::os::unix::fs::chown(f, Some(pg.uid.as_raw()), None).unwrap();
                }
            }
            settings = vec![
                "ssl=on".to_string(),
                format!("ssl_cert_file={}", cert.display()),
                format!("ssl_key_file={}", key.display()),
            ];
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: super::free_port(),
            child: None,
            settings,
        };
        pg.resume();
        pg.psql("postgres", "CREATE DATABASE postern");
        Some(pg)
    }

    /// The URL Postern is given (no password: that is in a password file).
    pub fn url(&self) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/postern", self.port)
    }

    /// Starts the server (again) on the same files and port, and waits until it
    /// answers queries.
    pub fn resume(&mut self) {
        let mut command = as_owner(&self.bin.join("postgres"));
        for s in &self.settings {
            command.args(["-c", s]);
        }
        let child = command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.try_psql("postgres", "SELECT 1").0 {
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast shutdown: sessions are cut) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Runs `sql` in `database` as the `postern` role: whether it succeeded, and
    /// its output (unaligned, tuples only).
    pub fn try_psql(&self, database: &str, sql: &str) -> (bool, String) {
        let out = Command::new("psql")
            .env("PGPASSWORD", PASSWORD)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", ROLE])
            .args([
                "-d",
                database,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// Like [`Postgres::try_psql`], asserting success; returns the output trimmed.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let (ok, out) = self.try_psql(database, sql);
        assert!(ok, "psql {sql}: {out}");
        out.trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
