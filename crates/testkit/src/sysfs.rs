//! A fake sysfs CPU tree for the host-preparation tests: four CPUs, two
//! cores of two threads (0 and 2 on one core, 1 and 3 on the other),
//! governor `powersave`, turbo on. cpu0 has no `online` file, as on real
//! machines.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// How the fake machine turns turbo off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turbo {
    /// `intel_pstate/no_turbo` (1: off).
    IntelPstate,
    /// `cpufreq/boost` (0: off), as acpi-cpufreq and AMD have it.
    Boost,
}

/// Writes the tree under `root/devices/system/cpu`.
pub fn fake_cpu_tree(root: &Path, turbo: Turbo) -> io::Result<()> {
    let cpu = root.join("devices/system/cpu");
    for n in 0..4u32 {
        let dir = cpu.join(format!("cpu{n}"));
        std::fs::create_dir_all(dir.join("cpufreq"))?;
        std::fs::create_dir_all(dir.join("topology"))?;
        std::fs::write(dir.join("cpufreq/scaling_governor"), "powersave\n")?;
        std::fs::write(
            dir.join("cpufreq/scaling_available_governors"),
            "performance powersave\n",
        )?;
        let siblings = if n % 2 == 0 { "0,2\n" } else { "1,3\n" };
        std::fs::write(dir.join("topology/thread_siblings_list"), siblings)?;
        if n > 0 {
            std::fs::write(dir.join("online"), "1\n")?;
        }
    }
    match turbo {
        Turbo::IntelPstate => {
            std::fs::create_dir_all(cpu.join("intel_pstate"))?;
            std::fs::write(cpu.join("intel_pstate/no_turbo"), "0\n")
        }
        Turbo::Boost => {
            std::fs::create_dir_all(cpu.join("cpufreq"))?;
            std::fs::write(cpu.join("cpufreq/boost"), "1\n")
        }
    }
}

/// Every file under `root` with its content, to compare before and after.
pub fn snapshot(root: &Path) -> io::Result<BTreeMap<PathBuf, String>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, String>) -> io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, root, out)?;
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.insert(rel.to_owned(), std::fs::read_to_string(&p)?);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

/// A file under `root/devices/system/cpu`, trimmed (empty when absent).
pub fn read_cpu(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join("devices/system/cpu").join(rel))
        .unwrap_or_default()
        .trim()
        .to_owned()
}
