//! A private `redis-server` for cluster-mode tests: its own port, no persistence,
//! in a temporary folder, stopped (SIGKILL) when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// TLS only (`--port 0 --tls-port PORT`), with this certificate and key.
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Redis {
    /// Starts redis-server on a free loopback port and waits until it answers.
    pub fn start() -> Redis {
        let mut r = Redis {
            port: super::free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            tls: None,
        };
        r.launch();
        r
    }

    /// Starts redis-server speaking TLS only, with a certificate for localhost
    /// issued by `ca`.
    pub fn start_tls(ca: &postern::tls::TestCa) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let files = super::write_cert(ca, dir.path(), "redis");
        let mut r = Redis {
            port: super::free_port(),
            dir,
            child: None,
            tls: Some((files.certificate, files.private_key)),
        };
        r.launch();
        r
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The `cluster:` section for a Postern config.
    pub fn cluster_yaml(&self) -> String {
        format!(
            "cluster:\n  redis: {}\n  key_prefix: \"test:\"\n",
            self.url()
        )
    }

    /// Starts the server (again, on the same port).
    pub fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.tls.is_some() {
                // redis-cli may lack TLS: wait for the port to open.
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return;
                }
            } else if self.cli(&["PING"]).trim() == "PONG" {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Kills the server, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `redis-cli` against this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `lines` (commands, one per line) on one `redis-cli` connection, so
    /// that nothing of another client's runs in between but between two of
    /// them; the output, a line per reply.
    pub fn cli_batch(&self, lines: &str) -> Vec<String> {
        use std::io::Write;
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("redis-cli runs");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(lines.as_bytes()).expect("redis-cli reads");
        drop(stdin);
        let out = child.wait_with_output().expect("redis-cli ends");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// How many times this server ran `cmd` since the last `CONFIG RESETSTAT`,
    /// from `INFO commandstats`.
    pub fn calls(&self, cmd: &str) -> u32 {
        let stats = self.cli(&["INFO", "commandstats"]);
        let line = stats
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")));
        line.and_then(|l| l.split("calls=").nth(1))
            .and_then(|v| v.split(',').next())
            .map_or(0, |v| v.parse().unwrap())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
