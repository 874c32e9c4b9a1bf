//! `[task.bench]`: how an agent prepares its host before it runs a
//! benchmark's steps (pinned CPUs, the frequency governor, turbo, hyperthread
//! siblings offline, `nice`/`ionice`, a load limit), and the same table as an
//! agent's default (`[agent.bench]`), which a task's own values override
//! field by field.
//!
//! Every value is checked as it is read, so a bad CPU list or governor name
//! is refused with the job file's line and field, never at the agent.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The highest CPU number a CPU list may name (Linux's `NR_CPUS` limit).
pub const MAX_CPU: u32 = 8191;

/// How a task wants its host prepared; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchSpec {
    /// The CPUs the test steps are pinned to, such as `"0"` or `"2-3"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<CpuList>,
    /// The cpufreq governor of the pinned CPUs (every CPU when none are
    /// pinned), such as `"performance"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governor: Option<Governor>,
    /// `false` turns turbo (boost) off for the attempt; `true` turns it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turbo: Option<bool>,
    /// Take the hyperthread siblings of the pinned CPUs offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siblings_offline: Option<bool>,
    /// The niceness the steps run at, 0 to 19.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<Nice>,
    /// The I/O scheduling class of the steps: `"idle"` or `"best-effort:N"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ionice: Option<IoNice>,
    /// The attempt waits (a bounded time) while the host's 1-minute load
    /// average is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_load: Option<MaxLoad>,
}

impl BenchSpec {
    /// This spec with every field it leaves out taken from `defaults`.
    pub fn over(&self, defaults: &BenchSpec) -> BenchSpec {
        BenchSpec {
            cpus: self.cpus.clone().or_else(|| defaults.cpus.clone()),
            governor: self.governor.clone().or_else(|| defaults.governor.clone()),
            turbo: self.turbo.or(defaults.turbo),
            siblings_offline: self.siblings_offline.or(defaults.siblings_offline),
            nice: self.nice.or(defaults.nice),
            ionice: self.ionice.or(defaults.ionice),
            max_load: self.max_load.or(defaults.max_load),
        }
    }

    /// Whether it asks for nothing.
    pub fn is_empty(&self) -> bool {
        *self == BenchSpec::default()
    }
}

/// Why a bench value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BenchSpecError {
    #[error("`{0}` is not a CPU list; write it like \"0\", \"2-3\" or \"0,2-3\"")]
    NotACpuList(String),
    #[error("the CPU range `{0}` runs backwards; write the lower CPU first")]
    BackwardsRange(String),
    #[error("CPU {0} is above the highest CPU number Linux allows ({MAX_CPU})")]
    CpuTooHigh(u32),
    #[error(
        "`{0}` is not a cpufreq governor name (lowercase letters, digits, `_` or `-`, such as \"performance\")"
    )]
    BadGovernor(String),
    #[error("nice must be a whole number from 0 to 19, not {0}")]
    BadNice(String),
    #[error(
        "`{0}` is not an I/O class; write \"idle\" or \"best-effort:N\" with N from 0 (highest) to 7"
    )]
    BadIoNice(String),
    #[error("max_load must be a number above 0, such as 1.5, not {0}")]
    BadMaxLoad(String),
}

/// A set of CPU numbers, written as Linux writes them: `0,2-3`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuList(pub BTreeSet<u32>);

impl CpuList {
    /// Parses `0`, `2-3`, `0,2-3` (spaces allowed around items).
    pub fn parse(text: &str) -> Result<CpuList, BenchSpecError> {
        let bad = || BenchSpecError::NotACpuList(text.to_owned());
        let mut set = BTreeSet::new();
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(bad());
            }
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (lo.trim(), hi.trim()),
                None => (item, item),
            };
            let num = |s: &str| -> Result<u32, BenchSpecError> {
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let n: u32 = s.parse().map_err(|_| bad())?;
                if n > MAX_CPU {
                    return Err(BenchSpecError::CpuTooHigh(n));
                }
                Ok(n)
            };
            let (lo, hi) = (num(lo)?, num(hi)?);
            if lo > hi {
                return Err(BenchSpecError::BackwardsRange(item.to_owned()));
            }
            set.extend(lo..=hi);
        }
        Ok(CpuList(set))
    }

    /// Whether `cpu` is in the list.
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }
}

impl fmt::Display for CpuList {
    /// The shortest form: ranges of consecutive CPUs, `0,2-3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut iter = self.0.iter().copied().peekable();
        while let Some(lo) = iter.next() {
            let mut hi = lo;
            while iter.peek() == Some(&(hi + 1)) {
                hi += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// A cpufreq governor name, such as `performance` or `schedutil`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Governor(String);

impl Governor {
    /// Checks the name: 1 to 32 lowercase letters, digits, `_` or `-`.
    pub fn parse(text: &str) -> Result<Governor, BenchSpecError> {
        let t = text.trim();
        let ok = !t.is_empty()
            && t.len() <= 32
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Governor(t.to_owned()))
        } else {
            Err(BenchSpecError::BadGovernor(text.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A niceness from 0 to 19.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nice(u8);

impl Nice {
    /// A niceness from 0 to 19.
    pub fn new(n: i64) -> Result<Nice, BenchSpecError> {
        u8::try_from(n)
            .ok()
            .filter(|n| *n <= 19)
            .map(Nice)
            .ok_or_else(|| BenchSpecError::BadNice(n.to_string()))
    }

    /// The niceness.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// An I/O scheduling class a user may pick without privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoNice {
    /// Only when no other process wants the disk (`ionice -c 3`).
    Idle,
    /// Best effort at priority 0 (highest) to 7 (`ionice -c 2 -n N`).
    BestEffort(u8),
}

impl IoNice {
    /// Parses `idle` or `best-effort:N`.
    pub fn parse(text: &str) -> Result<IoNice, BenchSpecError> {
        let t = text.trim();
        if t == "idle" {
            return Ok(IoNice::Idle);
        }
        t.strip_prefix("best-effort:")
            .and_then(|n| n.parse::<u8>().ok())
            .filter(|n| *n <= 7)
            .map(IoNice::BestEffort)
            .ok_or_else(|| BenchSpecError::BadIoNice(text.to_owned()))
    }
}

impl fmt::Display for IoNice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoNice::Idle => f.write_str("idle"),
            IoNice::BestEffort(n) => write!(f, "best-effort:{n}"),
        }
    }
}

/// A 1-minute load average limit, above 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaxLoad(f64);

impl MaxLoad {
    /// A finite limit above 0.
    pub fn new(v: f64) -> Result<MaxLoad, BenchSpecError> {
        if v.is_finite() && v > 0.0 {
            Ok(MaxLoad(v))
        } else {
            Err(BenchSpecError::BadMaxLoad(v.to_string()))
        }
    }

    /// The limit.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// Serialized as a string, read from one through `parse`.
macro_rules! string_serde {
    ($ty:ty, $parse:path, $show:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let show: fn(&$ty) -> String = $show;
                s.serialize_str(&show(self))
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw {
                    Text(String),
                    Int(i64),
                }
                let text = match Raw::deserialize(d).map_err(|_| {
                    serde::de::Error::custom(concat!("expected a string for ", stringify!($ty)))
                })? {
                    Raw::Text(t) => t,
                    Raw::Int(n) => n.to_string(),
                };
                $parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_serde!(CpuList, CpuList::parse, |c| c.to_string());
string_serde!(Governor, Governor::parse, |g| g.0.clone());
string_serde!(IoNice, IoNice::parse, |i| i.to_string());

impl Serialize for Nice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.0)
    }
}

impl<'de> Deserialize<'de> for Nice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)
            .map_err(|_| serde::de::Error::custom("nice must be a whole number from 0 to 19"))?;
        Nice::new(n).map_err(serde::de::Error::custom)
    }
}

impl Serialize for MaxLoad {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

impl<'de> Deserialize<'de> for MaxLoad {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)
            .map_err(|_| serde::de::Error::custom("max_load must be a number, such as 1.5"))?;
        MaxLoad::new(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_print_in_linux_form() {
        let l = CpuList::parse("0, 2-3,5").unwrap();
        assert_eq!(l.0.iter().copied().collect::<Vec<_>>(), [0, 2, 3, 5]);
        assert_eq!(l.to_string(), "0,2-3,5");
        assert_eq!(CpuList::parse("7").unwrap().to_string(), "7");
    }

    #[test]
    fn bad_cpu_lists_say_what_is_wrong() {
        for bad in ["", "a", "1-", "0,,1", "-1", "1.5"] {
            assert!(
                matches!(CpuList::parse(bad), Err(BenchSpecError::NotACpuList(_))),
                "{bad}"
            );
        }
        assert_eq!(
            CpuList::parse("3-2"),
            Err(BenchSpecError::BackwardsRange("3-2".into()))
        );
        assert_eq!(
            CpuList::parse("9000"),
            Err(BenchSpecError::CpuTooHigh(9000))
        );
    }

    #[test]
    fn governors_ioclasses_nice_and_load_are_checked() {
        assert!(Governor::parse("performance").is_ok());
        assert!(Governor::parse("../../etc").is_err());
        assert!(Governor::parse("Performance").is_err());
        assert_eq!(IoNice::parse("idle"), Ok(IoNice::Idle));
        assert_eq!(IoNice::parse("best-effort:4"), Ok(IoNice::BestEffort(4)));
        assert!(IoNice::parse("best-effort:8").is_err());
        assert!(IoNice::parse("realtime:0").is_err());
        assert!(Nice::new(20).is_err() && Nice::new(-1).is_err());
        assert!(MaxLoad::new(0.0).is_err() && MaxLoad::new(f64::NAN).is_err());
    }

    #[test]
    fn a_job_file_with_a_bad_bench_value_names_its_line_and_field() {
        let job = |bench: &str| {
            format!(
                "name = \"b\"\n[[task]]\nname = \"t\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n[task.bench]\n{bench}\n"
            )
        };
        let ok = crate::JobSpec::from_toml(&job("cpus = \"2-3\"\nmax_load = 1.5")).unwrap();
        let b = ok.tasks[0].bench.clone().unwrap();
        assert_eq!(b.cpus.unwrap().to_string(), "2-3");
        let e = crate::JobSpec::from_toml(&job("cpus = \"3-1\"")).unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert_eq!(e.field.as_deref(), Some("task[0].bench.cpus"), "{e}");
        assert!(e.message.contains("runs backwards"), "{e}");
        let e = crate::JobSpec::from_toml(&job("governor = \"Fast!\"")).unwrap_err();
        assert!(e.message.contains("not a cpufreq governor"), "{e}");
        let e = crate::JobSpec::from_toml(&job("turbo_boost = false")).unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn a_task_overrides_the_agent_default_field_by_field() {
        let agent: BenchSpec =
            toml::from_str("cpus = \"0\"\ngovernor = \"performance\"\nnice = 5").unwrap();
        let task: BenchSpec = toml::from_str("cpus = \"2-3\"\nturbo = false").unwrap();
        let merged = task.over(&agent);
        assert_eq!(merged.cpus.unwrap().to_string(), "2-3");
        assert_eq!(merged.governor.unwrap().as_str(), "performance");
        assert_eq!(merged.turbo, Some(false));
        assert_eq!(merged.nice.map(Nice::get), Some(5));
        assert!(BenchSpec::default().is_empty());
    }
}
