//! Running under a service manager: the systemd units verify, readiness reaches
//! `$NOTIFY_SOCKET`, socket activation hands over the listeners, and a server
//! started as root drops to `run_as` after binding.

mod common;

use common::{Harness, Setup, crlf, free_port, postern_bin};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const W: Duration = Duration::from_secs(10);

#[test]
fn systemd_units_verify() {
    if !common::have("systemd-analyze") {
        eprintln!("systemd-analyze missing; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for unit in ["postern.service", "postern.socket"] {
        let text = std::fs::read_to_string(root.join(unit))
            .unwrap()
            .replace("/usr/local/bin/postern", postern_bin());
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let service = std::fs::read_to_string(root.join("postern.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/spool/postern",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "PrivateTmp=yes",
        "User=postern",
    ] {
        assert!(service.lines().any(|l| l == line), "missing {line}");
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("postern.service"))
        .arg(dir.path().join("postern.socket"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys but names them: any remark about our units fails.
    let remarks: Vec<&str> = stderr.lines().filter(|l| l.contains("postern.")).collect();
    assert!(out.status.success() && remarks.is_empty(), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_stopping_are_sent_to_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(W)).unwrap();
    let mut h = Harness::start(Setup {
        env: vec![("NOTIFY_SOCKET", path.display().to_string())],
        ..Setup::default()
    })
    .await;
    let mut received = String::new();
    let mut buf = [0u8; 512];
    while !received.contains("READY=1") {
        let n = socket.recv(&mut buf).expect("no READY=1 from postern");
        received.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Ready means ready: a client is served right away.
    let mut c = h.session("alice", "alice-password").await;
    c.expect("QUIT", 221).await;
    assert!(h.terminate().success());
    let mut stopping = false;
    while !stopping {
        let n = socket.recv(&mut buf).expect("no STOPPING=1 from postern");
        stopping = String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
    }
}

/// Plays systemd: binds the sockets, puts them at fd 3, 4…, sets LISTEN_FDS and
/// LISTEN_PID, and execs postern (same pid).
const ACTIVATE: &str = r#"
import os, socket, sys
n = int(sys.argv[1])
socks = []
for a in sys.argv[2:2 + n]:
    host, port = a.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(128)
    socks.append(s)
for i, s in enumerate(socks):
    os.dup2(s.fileno(), 20 + i)
for i in range(n):
    os.dup2(20 + i, 3 + i)
    os.close(20 + i)
os.environ["LISTEN_FDS"] = str(n)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2 + n], sys.argv[2 + n:])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_uses_the_sockets_it_is_given() {
    if !common::have("python3") {
        eprintln!("python3 missing; skipped");
        return;
    }
    let (p587, p465) = (free_port(), free_port());
    let h = Harness::start(Setup {
        listen_ports: Some((p587, p465)),
        wrapper: vec![
            "python3".into(),
            "-c".into(),
            ACTIVATE.into(),
            "2".into(),
            format!("127.0.0.1:{p587}"),
            format!("127.0.0.1:{p465}"),
        ],
        ..Setup::default()
    })
    .await;
    // The sockets stay open in the process, so had postern bound its own it would
    // have failed with "address in use"; instead it serves on them.
    assert_eq!(h.starttls.port(), p587);
    assert_eq!(h.implicit.port(), p465);
    assert!(h.logs().iter().any(|l| l.contains("from_systemd=true")));
    let mut c = h.session("alice", "alice-password").await;
    let body = crlf("From: a@alice.example\nSubject: activated\n\nhi\n");
    let r = c
        .send_mail("a@alice.example", &["bob@example.org"], &body)
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(h.sink.wait_for(1, W).await.len(), 1);
    let mut c = common::client::Client::connect_tls(h.implicit, &h.ca_pem()).await;
    assert_eq!(c.greeting.code, 220);
    c.expect("QUIT", 221).await;
}

fn proc_status(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The spool must belong to the account postern becomes.
fn spool_for_nobody(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::os::unix::fs::chown(&spool, Some(65534), Some(65534)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_as_root_it_drops_to_run_as_after_binding() {
    if !nix_is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root so this test can run"
        );
        eprintln!("not root; skipped");
        return;
    }
    let h = Harness::start(Setup {
        queue: true,
        extra: "run_as:\n  user: nobody\n  group: nogroup\n".into(),
        before_launch: Some(spool_for_nobody),
        ..Setup::default()
    })
    .await;
    let pid = h.pid();
    assert_eq!(proc_status(pid, "Uid"), "65534 65534 65534 65534");
    assert_eq!(proc_status(pid, "Gid"), "65534 65534 65534 65534");
    assert_eq!(proc_status(pid, "Groups"), "65534");
    assert_eq!(proc_status(pid, "CapEff"), "0000000000000000");
    assert!(h.wait_log("dropped root privileges", W).await);

    // The spool (written as nobody) still works end to end.
    let mut c = h.session("alice", "alice-password").await;
    let body = crlf("From: a@alice.example\nSubject: unprivileged\n\nhi\n");
    let r = c
        .send_mail("a@alice.example", &["bob@example.org"], &body)
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(h.sink.wait_for(1, W).await.len(), 1);
    use std::os::unix::fs::MetadataExt;
    let control = h.dir.path().join("spool/control.sock");
    assert_eq!(std::fs::metadata(control).unwrap().uid(), 65534);
}

#[test]
fn run_as_an_unknown_account_refuses_to_start() {
    if !nix_is_root() {
        eprintln!("not root; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = postern::tls::TestCa::new("t").unwrap();
    let files = common::write_cert(&ca, dir.path(), "server");
    std::fs::write(dir.path().join("users.yaml"), "users: []\n").unwrap();
    let config = format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\n    tls: implicit\n\
         tls:\n  certificate: {}\n  private_key: {}\n\
         users:\n  file: users.yaml\n\
         smarthost:\n  address: \"127.0.0.1:1\"\n  tls: none\n\
         delivery:\n  mode: passthrough\n  spool_directory: spool\n\
         run_as:\n  user: no-such-user-postern\n",
        files.certificate.display(),
        files.private_key.display()
    );
    std::fs::write(dir.path().join("postern.yaml"), config).unwrap();
    let out = Command::new(postern_bin())
        .args(["serve", "-c"])
        .arg(dir.path().join("postern.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("run_as.user \"no-such-user-postern\" does not exist"),
        "{stderr}"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_socket_is_never_reachable_by_others() {
    // strace holds every chmod for 3 s, and the umask is 000: a socket bound at its
    // final path and chmodded afterwards is then visibly 0777 for those 3 s.
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "CI must install strace");
        eprintln!("strace not installed; skipped");
        return;
    }
    let script = "umask 000; exec strace -f -qq -o /dev/null \
                  -e trace=/chmod -e inject=/chmod:delay_enter=3000000 \"$@\"";
    let h = Harness::start(Setup {
        queue: true,
        wrapper: vec!["sh".into(), "-c".into(), script.into(), "sh".into()],
        ..Setup::default()
    })
    .await;
    // strace does not take its tracee with it when killed: kill postern ourselves.
    let _tracee = KillOnDrop(traced_child(h.pid()));
    let socket = h.dir.path().join("spool/control.sock");
    let deadline = std::time::Instant::now() + W;
    let meta = loop {
        match std::fs::symlink_metadata(&socket) {
            Ok(m) => break m,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(e) => panic!("no control socket: {e}"),
        }
    };
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        format!("{:o}", meta.mode() & 0o777),
        "600",
        "mode when it first appeared"
    );
}

/// The process that `strace` (pid `tracer`) started.
fn traced_child(tracer: u32) -> u32 {
    let children =
        std::fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children")).unwrap();
    children.split_whitespace().next().unwrap().parse().unwrap()
}

/// Sends SIGKILL to one process of ours when dropped.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_binds_then_runs_until_its_shutdown_future_completes() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.yaml"), "users: []\n").unwrap();
    let path = dir.path().join("postern.yaml");
    std::fs::write(
        &path,
        "hostname: in-process.test\n\
         listeners:\n  - address: \"127.0.0.1:0\"\n    tls: none\n\
         users:\n  file: users.yaml\n\
         smarthost:\n  address: \"127.0.0.1:1\"\n  tls: none\n\
         delivery:\n  mode: passthrough\n  spool_directory: spool\n",
    )
    .unwrap();
    let (config, users) = postern::config::Config::load(&path).unwrap();
    let server = postern::server::Server::bind(config, users).await.unwrap();
    let addrs = server.local_addrs();
    assert_eq!(addrs.len(), 1);
    assert_ne!(addrs[0].port(), 0);
    // Bound: the kernel accepts already; nothing answers until run.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let tcp = tokio::net::TcpStream::connect(addrs[0]).await.unwrap();
    let (r, mut w) = tcp.into_split();
    let mut lines = BufReader::new(r).lines();
    let greeting = tokio::time::timeout(W, lines.next_line()).await.unwrap();
    assert!(
        greeting
            .unwrap()
            .unwrap()
            .starts_with("220 in-process.test")
    );
    w.write_all(b"NOOP\r\n").await.unwrap();
    let noop = tokio::time::timeout(W, lines.next_line()).await.unwrap();
    assert!(noop.unwrap().unwrap().starts_with("250"));
    // The shutdown future completes: idle sessions hear 421, run returns Ok.
    stop.send(()).unwrap();
    let bye = tokio::time::timeout(W, lines.next_line()).await.unwrap();
    assert!(bye.unwrap().unwrap().starts_with("421"));
    let result = tokio::time::timeout(W, running).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(!dir.path().join("spool/control.sock").exists());
    // The spool folder it made is private whatever the umask.
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(dir.path().join("spool")).unwrap().mode();
    assert_eq!(format!("{:o}", mode & 0o777), "700");
}
