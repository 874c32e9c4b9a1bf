//! Processes a test starts: a `testfleet server` (its URL read from the first
//! line it prints, killed on drop) and any child killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago (for programs that cannot
/// listen on port 0 and say which port they got).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Spawns `cmd`; panics with the command when it cannot start.
    pub fn spawn(cmd: &mut Command) -> KillOnDrop {
        KillOnDrop(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("failed to start {cmd:?}: {e}")),
        )
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `testfleet server` process. Dropping it is a SIGKILL; [`stop`] is a
/// SIGTERM and returns what the server printed.
///
/// [`stop`]: ServerProcess::stop
#[derive(Debug)]
pub struct ServerProcess {
    child: KillOnDrop,
    url: String,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts `cmd`, a `testfleet server … --listen ADDR` command line, and
    /// waits for the URL it prints (`http://…` or `https://…`, without a
    /// trailing `/`). Its stdout is kept (see [`ServerProcess::stop`]); its
    /// stderr goes where `cmd` says, nowhere by default.
    pub fn start(cmd: &mut Command) -> ServerProcess {
        cmd.stderr(Stdio::null());
        ServerProcess::spawn(cmd, false)
    }

    /// As [`ServerProcess::start`], keeping stderr too.
    pub fn start_capturing(cmd: &mut Command) -> ServerProcess {
        ServerProcess::spawn(cmd, true)
    }

    fn spawn(cmd: &mut Command, capture_stderr: bool) -> ServerProcess {
        cmd.stdout(Stdio::piped());
        if capture_stderr {
            cmd.stderr(Stdio::piped());
        }
        let mut child = KillOnDrop::spawn(cmd);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(stderr) = child.0.stderr.take() {
            readers.push(keep(stderr, output.clone()));
        }
        let mut stdout = BufReader::new(
            child
                .0
                .stdout
                .take()
                .unwrap_or_else(|| panic!("no stdout from {cmd:?}")),
        );
        let mut line = String::new();
        let url = loop {
            line.clear();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let status = child.0.wait();
                    for reader in readers.drain(..) {
                        let _ = reader.join();
                    }
                    panic!(
                        "the server exited ({status:?}) before printing its URL: {cmd:?}\n{}",
                        String::from_utf8_lossy(&lock(&output))
                    );
                }
                Ok(_) => {
                    lock(&output).extend_from_slice(line.as_bytes());
                    if let Some(url) = line
                        .split_whitespace()
                        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
                    {
                        break url.trim_end_matches('/').to_owned();
                    }
                }
            }
        };
        // Keep reading, so the server never writes into a closed pipe.
        readers.push(keep(stdout, output.clone()));
        ServerProcess {
            child,
            url,
            output,
            readers,
        }
    }

    /// The URL the server printed, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port of [`ServerProcess::url`].
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {}", self.url))
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What the server printed so far (of what is kept), for a failing
    /// test's message.
    pub fn output_so_far(&self) -> String {
        String::from_utf8_lossy(&lock(&self.output)).into_owned()
    }

    /// Stops the server with SIGTERM (a normal shutdown; SIGKILL after 10 s)
    /// and returns everything it printed that was kept.
    pub fn stop(mut self) -> String {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        String::from_utf8_lossy(&lock(&self.output)).into_owned()
    }
}

/// Reads `from` to its end into `into`, on a thread of its own.
fn keep(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            lock(&into).extend_from_slice(&chunk[..n]);
        }
    })
}

fn lock(output: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    output
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_and_port_come_from_the_first_line_and_stop_returns_the_output() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            // stderr first: the test stops the server as soon as the URL
            // is read, which may be before a later line is written.
            "trap 'echo stopped; exit 0' TERM; echo err >&2; \
             echo 'listening on http://127.0.0.1:4321/'; while :; do sleep 0.05; done",
        ]);
        let server = ServerProcess::start_capturing(&mut cmd);
        assert_eq!(server.url(), "http://127.0.0.1:4321");
        assert_eq!(server.port(), 4321);
        let started = Instant::now();
        let output = server.stop();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "SIGTERM stops it"
        );
        assert!(
            output.contains("listening on") && output.contains("stopped"),
            "SIGTERM, not SIGKILL: {output}"
        );
        assert!(output.contains("err"), "{output}");
    }

    #[test]
    #[should_panic(expected = "before printing its URL")]
    fn a_server_that_exits_first_is_a_clear_failure() {
        ServerProcess::start(Command::new("sh").args(["-c", "echo no url here"]));
    }
}

/// A command that could not be started, or ran and failed.
#[derive(Debug)]
pub enum CommandError {
    Spawn {
        command: String,
        source: std::io::Error,
    },
    Failed {
        command: String,
        status: std::process::ExitStatus,
        /// Its standard output, then its standard error.
        output: String,
    },
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Spawn { command, source } => {
                write!(f, "failed to start {command}: {source}")
            }
            CommandError::Failed {
                command,
                status,
                output,
            } => write!(f, "{command} failed ({status}):\n{output}"),
        }
    }
}

impl std::error::Error for CommandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CommandError::Spawn { source, .. } => Some(source),
            CommandError::Failed { .. } => None,
        }
    }
}

/// Runs `cmd` to its end; its trimmed standard output when it succeeded.
pub fn output_of(cmd: &mut Command) -> Result<String, CommandError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| CommandError::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(CommandError::Failed {
            command,
            status: out.status,
            output: format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

/// The project's own QtTest benchmark (`crates/formats/tests/qtbench`),
/// configured under `build_dir` (a CMake configure: it fails without Qt 6,
/// CMake or a compiler, which makes it the Qt 6 peer's probe).
pub fn configure_qtbench(build_dir: &std::path::Path) -> Result<(), CommandError> {
    let src = crate::peers::workspace_root().join("crates/formats/tests/qtbench");
    output_of(
        Command::new("cmake")
            .arg("-S")
            .arg(&src)
            .arg("-B")
            .arg(build_dir)
            .arg("-DCMAKE_BUILD_TYPE=Release"),
    )
    .map(|_| ())
}

/// Configures and builds the QtTest benchmark under `build_dir`; the path
/// of its `tst_bench` executable.
pub fn build_qtbench(build_dir: &std::path::Path) -> Result<std::path::PathBuf, CommandError> {
    configure_qtbench(build_dir)?;
    output_of(
        Command::new("cmake")
            .arg("--build")
            .arg(build_dir)
            .arg("-j2"),
    )?;
    Ok(build_dir.join("tst_bench"))
}

/// Debian's `influxd` (InfluxDB 1.x) in `/usr/bin` or `/usr/local/bin`, or
/// `None` under the peer rule ([`crate::peers::INFLUXD`]).
pub fn influxd_program() -> Option<std::path::PathBuf> {
    let found = ["/usr/bin/influxd", "/usr/local/bin/influxd"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .ok_or("no influxd in /usr/bin or /usr/local/bin");
    crate::peers::require_peer(&crate::peers::INFLUXD, found)
}

/// An `influxd` (InfluxDB 1.x) on free loopback ports, with its data, WAL and
/// meta directories and its config file under a directory of the caller's;
/// killed on drop.
#[derive(Debug)]
pub struct Influxd {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    http_port: u16,
    child: Option<KillOnDrop>,
}

impl Influxd {
    /// Writes a config under `dir` (created) and starts `bin` with it, waiting
    /// up to 20 s for its HTTP port.
    pub fn start(bin: std::path::PathBuf, dir: std::path::PathBuf) -> Influxd {
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let http_port = free_port();
        let config = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{http_port}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n",
            rpc = free_port(),
            d = dir.display(),
        );
        let path = dir.join("influxdb.conf");
        std::fs::write(&path, config)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        let mut influxd = Influxd {
            bin,
            dir,
            http_port,
            child: None,
        };
        influxd.run();
        influxd
    }

    /// Its HTTP API, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts it again after [`Influxd::stop`], on the same port and data.
    pub fn run(&mut self) {
        self.child = Some(KillOnDrop::spawn(
            Command::new(&self.bin)
                .arg("-config")
                .arg(self.dir.join("influxdb.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.http_port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("influxd did not open 127.0.0.1:{} in 20 s", self.http_port);
    }

    /// Kills it (SIGKILL): InfluxDB is down until [`Influxd::run`].
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Runs the InfluxQL `q` against database `db` (`POST /query`,
    /// `epoch=ns`) and returns the JSON answer's text. Blocking, over a plain
    /// HTTP/1.0 connection (so the answer is not chunked).
    pub fn query(&self, db: &str, q: &str) -> String {
        use std::io::Write;
        let body = format!("q={}&db={}&epoch=ns", form_encode(q), form_encode(db));
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port))
            .unwrap_or_else(|e| panic!("influxd at {}: {e}", self.url()));
        write!(
            stream,
            "POST /query HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            self.http_port,
            body.len()
        )
        .unwrap_or_else(|e| panic!("influxd at {}: {e}", self.url()));
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .unwrap_or_else(|e| panic!("influxd at {}: {e}", self.url()));
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP answer from influxd: {answer}"));
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "influxd refused {q:?}: {head}\n{body}"
        );
        body.to_owned()
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
