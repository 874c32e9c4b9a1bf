//! Standard output for every command.
//!
//! Commands print through [`outln!`] and [`out!`], never `println!`: those
//! panic when the reader has gone away (`testfleet parse f.xml --json |
//! head`). Here a write to a closed pipe is a [`StdoutClosed`] error that
//! ends the command, and `main` exits quietly with status 0, as `head`
//! asked for no more.

use std::fmt;
use std::io::{self, Write};

/// The reader of standard output went away (EPIPE): end quietly.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `args` to standard output and flushes it, so a closed pipe is
/// noticed at the write that hit it.
pub fn write(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.flush())
        .map_err(classify)
}

/// Writes raw bytes (a log as it came) to standard output.
pub fn write_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(classify)
}

fn classify(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::anyhow!("failed to write to standard output: {e}")
    }
}

/// Whether `e` (or a cause of it) is a closed standard output.
pub fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}

/// `print!` that returns an error (quiet on a closed pipe) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}

/// `println!` that returns an error (quiet on a closed pipe) instead of panicking.
macro_rules! outln {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_stdout_closed_and_other_errors_are_not() {
        let closed = classify(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_closed(&closed));
        assert!(is_closed(&closed.context("while printing the job")));
        let full = classify(io::Error::from(io::ErrorKind::StorageFull));
        assert!(!is_closed(&full));
        assert!(
            full.to_string()
                .starts_with("failed to write to standard output")
        );
    }
}
