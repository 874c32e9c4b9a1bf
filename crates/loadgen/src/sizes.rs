//! Several fleet sizes in one invocation (`--agents 100,5000`,
//! `--coordinators 1,2`): every combination runs in turn, each on a fresh
//! coordinator (or set of coordinators) and store, and each run's
//! throughput is compared with the first run's, so a target such as
//! "5,000 agents reach ≥ 0.7 × the tasks/s of 100" is one ratio measured
//! on one machine in one sitting.

use serde::Serialize;

use crate::{BenchConfig, BenchError, BenchReport, RunReport};

/// One combination and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct SizedRun {
    /// Spawned coordinators (0: in process or the given `--server`s).
    pub coordinators: usize,
    pub agents: usize,
    /// `null` when the run failed (see `error`).
    pub tasks_per_second: Option<f64>,
    /// This run's tasks/s over the first run's (`null` when either failed).
    pub ratio_to_first: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<RunReport>,
    /// Why the run failed, with its causes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The report of a run over several sizes.
#[derive(Debug, Clone, Serialize)]
pub struct SizesReport {
    pub tasks: usize,
    pub runs: Vec<SizedRun>,
}

impl SizesReport {
    /// Every run finished and is clean.
    pub fn is_clean(&self) -> bool {
        self.runs
            .iter()
            .all(|r| r.report.as_ref().is_some_and(RunReport::is_clean))
    }
}

/// The combinations, coordinators outermost, in the order given.
pub fn combinations(agents: &[usize], coordinators: &[usize]) -> Vec<(usize, usize)> {
    coordinators
        .iter()
        .flat_map(|&c| agents.iter().map(move |&a| (c, a)))
        .collect()
}

/// Runs `config` once per combination of `agents` and `coordinators` (an
/// empty list keeps the config's own value). A run that fails is reported
/// with its error and the next one still runs.
pub async fn run_sizes(
    config: &BenchConfig,
    agents: &[usize],
    coordinators: &[usize],
) -> Result<SizesReport, BenchError> {
    if config.policy_compare {
        return Err(BenchError::Invalid(
            "--policy-compare runs one size; give one --agents and one --coordinators".into(),
        ));
    }
    let agents = if agents.is_empty() {
        vec![config.agents]
    } else {
        agents.to_vec()
    };
    let coordinators = if coordinators.is_empty() {
        vec![config.coordinators]
    } else {
        coordinators.to_vec()
    };
    let mut runs: Vec<SizedRun> = Vec::new();
    for (c, a) in combinations(&agents, &coordinators) {
        let mut cfg = config.clone();
        cfg.agents = a;
        cfg.coordinators = c;
        if config.progress {
            eprintln!("bench: {a} agents, {}", describe_coordinators(&cfg));
        }
        let (report, error) = match crate::run(cfg).await {
            Ok(BenchReport::Single(r)) => (Some(r), None),
            Ok(other) => (None, Some(format!("unexpected report: {other:?}"))),
            Err(e) => (None, Some(testfleet_server::bots::error_chain(&e))),
        };
        let tps = report.as_ref().map(|r| r.tasks_per_second);
        let first = runs.first().and_then(|r| r.tasks_per_second);
        let ratio = match (tps, first) {
            (Some(t), Some(f)) if f > 0.0 => Some(crate::recorder::round3(t / f)),
            (Some(_), None) if runs.is_empty() => Some(1.0),
            _ => None,
        };
        runs.push(SizedRun {
            coordinators: c,
            agents: a,
            tasks_per_second: tps,
            ratio_to_first: ratio,
            report,
            error,
        });
    }
    Ok(SizesReport {
        tasks: config.tasks,
        runs,
    })
}

fn describe_coordinators(cfg: &BenchConfig) -> String {
    match cfg.coordinators {
        0 if cfg.server.is_empty() => "coordinator in process".to_owned(),
        0 => format!("coordinators {}", cfg.server.join(", ")),
        n => format!("{n} spawned coordinator(s)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_runs_coordinators_outermost() {
        assert_eq!(
            combinations(&[100, 5000], &[1, 2]),
            vec![(1, 100), (1, 5000), (2, 100), (2, 5000)]
        );
        assert_eq!(combinations(&[200], &[0]), vec![(0, 200)]);
    }
}
