//! The machine fingerprint the agent reports: platform, kernel, CPU, cores and
//! compiler, read from /etc/os-release, /proc and `gcc`.

use testfleet_wire::protocol::MachineInfo;

/// Reads the fingerprint of this machine; what cannot be read stays empty.
pub async fn fingerprint() -> MachineInfo {
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |key: &str| {
        os_release
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    let mut platform = field("PRETTY_NAME");
    if platform.is_empty() {
        platform = std::env::consts::OS.to_owned();
    }
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|v| v.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let compiler = match tokio::process::Command::new("gcc")
        .arg("-dumpfullversion")
        .output()
        .await
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => String::new(),
    };
    MachineInfo {
        platform,
        os_version: field("VERSION_ID"),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        cpu_model,
        cores: std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1),
        compiler,
        prep: Vec::new(),
    }
}
