//! `moto_server` (PyPI `moto[server]`, the S3 fake that `cargo xtask setup`
//! installs into `.venv`) on a free loopback port, stopped on drop. moto
//! checks no signatures, so any access key works.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::peers::{MOTO, peer_program};
use crate::process::{KillOnDrop, free_port};

/// A running `moto_server`.
#[derive(Debug)]
pub struct Moto {
    _child: KillOnDrop,
    port: u16,
}

impl Moto {
    /// Starts `moto_server` (`TESTFLEET_MOTO_SERVER` overrides where it is)
    /// and waits until it answers; `None` under the peer rule when it is
    /// missing.
    pub fn start() -> Option<Moto> {
        let program = peer_program(&MOTO, "TESTFLEET_MOTO_SERVER", "moto_server")?;
        let port = free_port();
        let child = KillOnDrop::spawn(
            Command::new(program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let moto = Moto {
            _child: child,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto.request("GET", "/").is_none() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates the bucket `name`.
    pub fn create_bucket(&self, name: &str) {
        let answer = self.request("PUT", &format!("/{name}"));
        assert!(
            answer
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200")),
            "moto refused to create the bucket {name}: {answer:?}"
        );
    }

    /// The whole answer to a body-less request, or `None` when moto does
    /// not answer.
    pub fn request(&self, method: &str, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .ok()?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).ok()?;
        (!answer.is_empty()).then(|| String::from_utf8_lossy(&answer).into_owned())
    }
}
