//! The preparation journal: one JSON line per sysfs change (which knob, its
//! old value, its new value), written and synced to disk BEFORE the change is
//! made, so that whatever happens to the process afterwards (a crash, a
//! SIGKILL, a power cut after the sync) the change can be undone from it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::sysfs::Knob;

/// One change: `knob` went from `old` to `new`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub knob: Knob,
    pub old: String,
    pub new: String,
}

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "the journal {0} already exists: the host is still prepared from an earlier attempt; run `restore` first"
    )]
    Exists(PathBuf),
    #[error("failed to write the journal {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{0} is not a host-prep journal (a line other than the last is not a change); it is left alone"
    )]
    NotAJournal(PathBuf),
    #[error("failed to read the journal {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A journal being written (one preparation).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    entries: usize,
}

impl Journal {
    /// Starts a journal at `path`, which must not exist yet (an existing one
    /// holds changes not yet undone; it is never overwritten).
    pub fn create(path: &Path) -> Result<Journal, JournalError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => JournalError::Exists(path.to_owned()),
                _ => JournalError::Write {
                    path: path.to_owned(),
                    source,
                },
            })?;
        Ok(Journal {
            path: path.to_owned(),
            file,
            entries: 0,
        })
    }

    /// Records `entry` and syncs it to disk; the change may be made after
    /// this returns.
    pub fn record(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(entry).map_err(|e| JournalError::Write {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| JournalError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.entries += 1;
        Ok(())
    }

    /// Ends the journal; one that recorded nothing is removed (there is
    /// nothing to undo).
    pub fn close(self) -> Result<(), JournalError> {
        if self.entries == 0 {
            return remove(&self.path);
        }
        Ok(())
    }
}

/// The entries of the journal at `path`, in the order they were made
/// (`None`: there is no journal). A torn last line (the process died while
/// writing it, so its change was never made) and entries whose values a knob
/// cannot take are skipped. A file with any other line that is not a
/// change is not a journal, and is refused (so `restore`, run as root, never
/// removes a file that is not its own).
pub fn read(path: &Path) -> Result<Option<Vec<Entry>>, JournalError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(JournalError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut entries = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Entry>(line) {
            Ok(e) if e.knob.valid_value(&e.old) && e.knob.valid_value(&e.new) => entries.push(e),
            Ok(_) => {}
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(_) => return Err(JournalError::NotAJournal(path.to_owned())),
        }
    }
    if entries.is_empty() && !text.trim().is_empty() {
        return Err(JournalError::NotAJournal(path.to_owned()));
    }
    Ok(Some(entries))
}

/// Removes the journal at `path` (gone already is fine).
pub fn remove(path: &Path) -> Result<(), JournalError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(JournalError::Write {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_in_order_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prep.journal");
        let mut j = Journal::create(&path).unwrap();
        let a = Entry {
            knob: Knob::NoTurbo,
            old: "0".into(),
            new: "1".into(),
        };
        let b = Entry {
            knob: Knob::Governor(2),
            old: "powersave".into(),
            new: "performance".into(),
        };
        j.record(&a).unwrap();
        j.record(&b).unwrap();
        j.close().unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"knob\":{\"knob\":\"onl");
        std::fs::write(&path, text).unwrap();
        assert_eq!(read(&path).unwrap(), Some(vec![a, b]));
        assert!(matches!(
            Journal::create(&path),
            Err(JournalError::Exists(_))
        ));
    }

    #[test]
    fn a_journal_that_recorded_nothing_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prep.journal");
        Journal::create(&path).unwrap().close().unwrap();
        assert!(!path.exists());
        assert_eq!(read(&path).unwrap(), None);
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "root:x:0:0:root:/root:/bin/sh\nuser:x:1000\n").unwrap();
        assert!(matches!(read(&path), Err(JournalError::NotAJournal(_))));
        std::fs::write(&path, "one line without a newline").unwrap();
        assert!(matches!(read(&path), Err(JournalError::NotAJournal(_))));
    }
}
