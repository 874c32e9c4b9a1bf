//! The few sysfs files host preparation may touch. A [`Knob`] is named by a
//! CPU number (or not at all), and its path is computed from that: nothing a
//! caller passes is ever used as a path, so the privileged helper can only
//! write these files under its sysfs root.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use testfleet_core::job::bench::{CpuList, Governor};
use testfleet_wire::protocol::{PrepAction, PrepStatus};

/// One writable sysfs file, relative to the sysfs root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "knob", content = "cpu", rename_all = "snake_case")]
pub enum Knob {
    /// `devices/system/cpu/cpuN/cpufreq/scaling_governor`.
    Governor(u32),
    /// `devices/system/cpu/cpuN/online`.
    Online(u32),
    /// `devices/system/cpu/intel_pstate/no_turbo` (1: turbo off).
    NoTurbo,
    /// `devices/system/cpu/cpufreq/boost` (0: boost off; acpi-cpufreq, AMD).
    Boost,
}

const CPU_DIR: &str = "devices/system/cpu";

impl Knob {
    /// The file's path relative to the sysfs root.
    pub fn rel_path(self) -> PathBuf {
        let cpu = Path::new(CPU_DIR);
        match self {
            Knob::Governor(n) => cpu.join(format!("cpu{n}/cpufreq/scaling_governor")),
            Knob::Online(n) => cpu.join(format!("cpu{n}/online")),
            Knob::NoTurbo => cpu.join("intel_pstate/no_turbo"),
            Knob::Boost => cpu.join("cpufreq/boost"),
        }
    }

    /// Whether `value` may be written to this file (a journal is checked
    /// with this before it is replayed).
    pub fn valid_value(self, value: &str) -> bool {
        match self {
            Knob::Governor(_) => Governor::parse(value).is_ok(),
            Knob::Online(_) | Knob::NoTurbo | Knob::Boost => value == "0" || value == "1",
        }
    }

    /// The preparation step this knob belongs to.
    pub fn action(self) -> PrepAction {
        match self {
            Knob::Governor(_) => PrepAction::Governor,
            Knob::Online(_) => PrepAction::SiblingOffline,
            Knob::NoTurbo | Knob::Boost => PrepAction::Turbo,
        }
    }

    /// What a step record names as its target.
    pub fn target(self) -> String {
        match self {
            Knob::Governor(n) | Knob::Online(n) => format!("cpu{n}"),
            Knob::NoTurbo => "turbo (intel_pstate/no_turbo)".to_owned(),
            Knob::Boost => "turbo (cpufreq/boost)".to_owned(),
        }
    }
}

/// A sysfs tree: `/sys`, or a fake one in tests.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    /// The tree under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// The root of the tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The knob's current value, trimmed.
    pub fn read(&self, knob: Knob) -> io::Result<String> {
        Ok(std::fs::read_to_string(self.root.join(knob.rel_path()))?
            .trim()
            .to_owned())
    }

    /// Writes `value` to an existing knob file. Never creates a file, never
    /// follows a symbolic link at the file, and refuses a file whose
    /// directory resolves outside the root.
    pub fn write(&self, knob: Knob, value: &str) -> io::Result<()> {
        let path = self.root.join(knob.rel_path());
        let root = self.root.canonicalize()?;
        let parent = path
            .parent()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?
            .canonicalize()?;
        if !parent.starts_with(&root) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} leads outside {}", path.display(), root.display()),
            ));
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)?;
        io::Write::write_all(&mut file, format!("{value}\n").as_bytes())
    }

    /// The hyperthread siblings of `cpu` (itself included), from
    /// `topology/thread_siblings_list`.
    pub fn siblings(&self, cpu: u32) -> io::Result<CpuList> {
        let path = self
            .root
            .join(CPU_DIR)
            .join(format!("cpu{cpu}/topology/thread_siblings_list"));
        let text = std::fs::read_to_string(path)?;
        CpuList::parse(text.trim()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// The governors `cpu` offers, when the kernel says.
    pub fn available_governors(&self, cpu: u32) -> Option<Vec<String>> {
        let path = self
            .root
            .join(CPU_DIR)
            .join(format!("cpu{cpu}/cpufreq/scaling_available_governors"));
        let text = std::fs::read_to_string(path).ok()?;
        Some(text.split_whitespace().map(str::to_owned).collect())
    }

    /// The CPUs the tree has (`cpuN` directories), in order.
    pub fn cpus(&self) -> Vec<u32> {
        let mut cpus: Vec<u32> = std::fs::read_dir(self.root.join(CPU_DIR))
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()?
                            .strip_prefix("cpu")?
                            .parse::<u32>()
                            .ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        cpus.sort_unstable();
        cpus
    }
}

/// How a failed read or write of a knob is recorded: a missing file is a
/// knob the machine lacks, a refusal is a permission matter, anything else
/// (EINVAL, EBUSY) a failure.
pub fn status_of(e: &io::Error) -> PrepStatus {
    const EPERM: i32 = 1;
    const EACCES: i32 = 13;
    const EROFS: i32 = 30;
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => PrepStatus::Unsupported,
        (io::ErrorKind::PermissionDenied, _) => PrepStatus::NotPermitted,
        (_, Some(EPERM | EACCES | EROFS)) => PrepStatus::NotPermitted,
        _ => PrepStatus::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knob_paths_are_computed_from_cpu_numbers() {
        assert_eq!(
            Knob::Governor(3).rel_path(),
            Path::new("devices/system/cpu/cpu3/cpufreq/scaling_governor")
        );
        assert_eq!(
            Knob::Online(1).rel_path(),
            Path::new("devices/system/cpu/cpu1/online")
        );
        assert!(Knob::Online(1).valid_value("0"));
        assert!(!Knob::Online(1).valid_value("2"));
        assert!(!Knob::Governor(0).valid_value("../x"));
    }

    #[test]
    fn a_symlinked_knob_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join("devices/system/cpu/cpu1");
        std::fs::create_dir_all(&cpu).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep\n").unwrap();
        std::os::unix::fs::symlink(&victim, cpu.join("online")).unwrap();
        let sysfs = Sysfs::new(dir.path());
        assert!(sysfs.write(Knob::Online(1), "0").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
    }
}
