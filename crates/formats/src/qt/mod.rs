//! QtTest: the parsers for each logger's output and the builder they share.
//!
//! QtTest reports a test function (and data row) as a sequence of incidents and
//! messages; the builder folds them into one normalized case per function and data tag,
//! so every logger format yields the same model for the same run.

pub(crate) mod csv;
pub(crate) mod teamcity;
pub(crate) mod txt;
pub(crate) mod xml;

use std::collections::HashMap;
use std::hash::Hasher;

use testfleet_wire::results::{Case, CaseOutcome, CrashedTest, Metric, Property, Results, Suite};

use crate::util::{FxBuild, FxHasher, MAX_TEXT, append_capped, set_capped, split_qt_name};

/// QtTest metric names (`QTest::QBenchmarkMetric`) and the unit its text logger prints.
const METRIC_UNITS: &[(&str, &str)] = &[
    ("FramesPerSecond", "fps"),
    ("BitsPerSecond", "bits/s"),
    ("BytesPerSecond", "bytes/s"),
    ("WalltimeMilliseconds", "msecs"),
    ("CPUTicks", "CPU ticks"),
    ("InstructionReads", "instruction reads"),
    ("Events", "events"),
    ("WalltimeNanoseconds", "nsecs"),
    ("BytesAllocated", "bytes"),
    ("CPUMigrations", "CPU migrations"),
    ("CPUCycles", "CPU cycles"),
    ("RefCPUCycles", "CPU cycles"),
    ("BusCycles", "bus cycles"),
    ("StalledCycles", "stalled cycles"),
    ("Instructions", "instructions"),
    ("BranchInstructions", "branch instructions"),
    ("BranchMisses", "branch misses"),
    ("CacheReferences", "cache references"),
    ("CacheReads", "cache loads"),
    ("CacheWrites", "cache stores"),
    ("CachePrefetches", "cache prefetches"),
    ("CacheMisses", "cache misses"),
    ("CacheReadMisses", "cache load misses"),
    ("CacheWriteMisses", "cache store misses"),
    ("CachePrefetchMisses", "cache prefetch misses"),
    ("ContextSwitches", "context switches"),
    ("PageFaults", "page faults"),
    ("MinorPageFaults", "minor page faults"),
    ("MajorPageFaults", "major page faults"),
    ("AlignmentFaults", "alignment faults"),
    ("EmulationFaults", "emulation faults"),
];

/// The unit QtTest prints for a metric name (the name itself when unknown).
pub(crate) fn unit_for_metric(name: &str) -> String {
    METRIC_UNITS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(name, |(_, u)| *u)
        .to_string()
}

/// The metric name for a unit printed by the text logger (the unit itself when unknown).
pub(crate) fn metric_for_unit(unit: &str) -> String {
    METRIC_UNITS
        .iter()
        .find(|(_, u)| *u == unit)
        .map_or(unit, |(n, _)| *n)
        .to_string()
}

/// What one QtTest incident says about its case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Incident {
    pub outcome: CaseOutcome,
    pub blacklisted: bool,
}

impl Incident {
    /// Maps an XML `type` / text-logger prefix (`pass`, `xfail`, `bfail`, `FAIL!`, …).
    pub(crate) fn from_type(t: &str) -> Option<Incident> {
        let t = t.trim().trim_end_matches('!').to_ascii_lowercase();
        let (blacklisted, base) = match t.strip_prefix('b') {
            Some(rest) if matches!(rest, "pass" | "fail" | "xpass" | "xfail") => (true, rest),
            _ => (false, t.as_str()),
        };
        let outcome = match base {
            "pass" => CaseOutcome::Pass,
            "fail" => CaseOutcome::Fail,
            "xpass" => CaseOutcome::Xpass,
            "xfail" => CaseOutcome::Xfail,
            "skip" => CaseOutcome::Skip,
            _ => return None,
        };
        Some(Incident {
            outcome,
            blacklisted,
        })
    }

    /// True when QtTest stops the function (or data row) after this incident.
    pub(crate) fn ends_function(self) -> bool {
        !matches!(self.outcome, CaseOutcome::Xfail)
    }
}

type Key = (String, Option<String>);

fn fn_hash(function: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(function.as_bytes());
    h.finish()
}

fn case_hash(function: &str, tag: Option<&str>) -> u64 {
    let mut h = FxHasher::default();
    h.write(function.as_bytes());
    match tag {
        Some(t) => {
            h.write_u8(1);
            h.write(t.as_bytes());
        }
        None => h.write_u8(0),
    }
    h.finish()
}

/// A hash index whose entries are the ids `0, 1, 2, …` in insertion order, chained per
/// hash; the caller checks each candidate, so the index holds no keys.
#[derive(Default)]
struct ChainedIndex {
    heads: HashMap<u64, usize, FxBuild>,
    /// Per id: the previous id with the same hash (`usize::MAX`: none).
    next: Vec<usize>,
}

impl ChainedIndex {
    fn find(&self, hash: u64, mut is_it: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut id = *self.heads.get(&hash)?;
        loop {
            if is_it(id) {
                return Some(id);
            }
            id = self.next[id];
            if id == usize::MAX {
                return None;
            }
        }
    }

    /// Adds `id`, which must be the number of ids added so far.
    fn insert(&mut self, hash: u64, id: usize) {
        debug_assert_eq!(id, self.next.len());
        let prev = self.heads.insert(hash, id).unwrap_or(usize::MAX);
        self.next.push(prev);
    }

    fn clear(&mut self) {
        self.heads.clear();
        self.next.clear();
    }
}

/// Folds QtTest incidents, messages and benchmark results into normalized cases.
pub(crate) struct QtBuilder {
    results: Results,
    suite: Option<Suite>,
    /// Cases by hash of (function, tag); entries are case indices, checked against the
    /// case itself, so no owned key is built per case.
    index: ChainedIndex,
    /// The case found or created last: incidents, messages and benchmark results of one
    /// case come in a row, so most lookups end here without building an owned key.
    last: Option<usize>,
    /// Per function: how many cases it has and the last one's index, so a function's
    /// `<Duration>` finds its case without scanning the suite (which was quadratic).
    /// Indexed by hash of the function name; entries index `function_cases`.
    functions: ChainedIndex,
    function_cases: Vec<(usize, usize)>,
    /// Messages seen for a function before any incident created its case (e.g. the
    /// `_data()` function's debug output, or output just before a crash).
    pending: Option<(Key, Option<String>)>,
    /// The function that was running when the output last said something.
    running: Option<Key>,
    /// Raw output since the last finished case, kept for the crash log.
    tail: Option<String>,
    /// Reused buffer for log lines built from parts.
    scratch: String,
}

impl QtBuilder {
    pub(crate) fn new(format: &str) -> QtBuilder {
        QtBuilder {
            results: Results::new(format),
            suite: None,
            index: ChainedIndex::default(),
            last: None,
            functions: ChainedIndex::default(),
            function_cases: Vec::new(),
            pending: None,
            running: None,
            tail: None,
            scratch: String::new(),
        }
    }

    pub(crate) fn warn(&mut self, warning: impl Into<String>) {
        let w = warning.into();
        // Cap warnings too: a hostile file could produce one per line.
        if self.results.warnings.len() < 100 {
            self.results.warnings.push(w);
        }
    }

    pub(crate) fn start_suite(&mut self, name: &str) {
        self.finish_suite();
        self.suite = Some(Suite::new(name));
    }

    fn suite_mut(&mut self) -> &mut Suite {
        self.suite.get_or_insert_with(|| Suite::new(""))
    }

    pub(crate) fn has_suite(&self) -> bool {
        self.suite.is_some()
    }

    pub(crate) fn suite_name(&self) -> Option<&str> {
        self.suite.as_ref().map(|s| s.name.as_str())
    }

    pub(crate) fn property(&mut self, name: &str, value: &str) {
        self.suite_mut().properties.push(Property {
            name: name.to_string(),
            value: value.to_string(),
        });
    }

    pub(crate) fn suite_duration(&mut self, ms: Option<f64>) {
        self.suite_mut().duration_ms = ms;
    }

    /// Closes the current suite; its cases keep their place.
    pub(crate) fn finish_suite(&mut self) {
        if let Some(suite) = self.suite.take() {
            self.results.suites.push(suite);
        }
        self.index.clear();
        self.last = None;
        self.functions.clear();
        self.function_cases.clear();
        self.pending = None;
        self.running = None;
        self.tail = None;
    }

    /// The index of an existing case, checking the last one used before the map.
    fn find_case(&mut self, function: &str, tag: Option<&str>) -> Option<usize> {
        if let (Some(i), Some(suite)) = (self.last, &self.suite)
            && let Some(c) = suite.cases.get(i)
            && c.name == function
            && c.data_tag.as_deref() == tag
        {
            return Some(i);
        }
        let cases = &self.suite.as_ref()?.cases;
        let found = self.index.find(case_hash(function, tag), |i| {
            cases[i].name == function && cases[i].data_tag.as_deref() == tag
        });
        if found.is_some() {
            self.last = found;
        }
        found
    }

    /// Marks `(function, tag)` as running, reusing the strings already held.
    fn set_running_key(&mut self, function: &str, tag: Option<&str>) {
        match &mut self.running {
            Some((f, t)) => {
                if f != function {
                    f.clear();
                    f.push_str(function);
                }
                match (t.as_mut(), tag) {
                    (Some(t), Some(tag)) => {
                        if t != tag {
                            t.clear();
                            t.push_str(tag);
                        }
                    }
                    (_, tag) => *t = tag.map(str::to_string),
                }
            }
            None => self.running = Some((function.to_string(), tag.map(str::to_string))),
        }
    }

    fn case_index(&mut self, function: &str, tag: Option<&str>) -> usize {
        if let Some(i) = self.find_case(function, tag) {
            return i;
        }
        let suite = self.suite_mut();
        suite
            .cases
            .push(Case::new(function, tag.map(str::to_string)));
        let i = suite.cases.len() - 1;
        // Messages logged before the case existed belong to it.
        if let Some((pkey, log)) = self.pending.take() {
            if pkey.0 == function {
                if let Some(log) = log {
                    let case = &mut self.suite_mut().cases[i];
                    append_capped(&mut case.log, &log, &mut case.flags);
                }
            } else {
                self.pending = Some((pkey, log));
            }
        }
        let fh = fn_hash(function);
        let cases = self.suite.as_ref().map_or(&[][..], |s| &s.cases[..]);
        let fc = &self.function_cases;
        match self.functions.find(fh, |j| cases[fc[j].1].name == function) {
            Some(j) => self.function_cases[j] = (self.function_cases[j].0 + 1, i),
            None => {
                self.functions.insert(fh, self.function_cases.len());
                self.function_cases.push((1, i));
            }
        }
        self.index.insert(case_hash(function, tag), i);
        self.last = Some(i);
        i
    }

    pub(crate) fn case_mut(&mut self, function: &str, tag: Option<&str>) -> &mut Case {
        let i = self.case_index(function, tag);
        &mut self.suite_mut().cases[i]
    }

    /// Records raw output for the crash log.
    pub(crate) fn raw_line(&mut self, line: &str) {
        let mut flags = Default::default();
        if self.tail.as_ref().is_some_and(|t| t.len() >= MAX_TEXT) {
            // Keep the end of the output, which is where a crash explains itself.
            let t = self.tail.take().unwrap_or_default();
            let cut = crate::util::floor_char_boundary(&t, t.len() / 2);
            let mut start = cut;
            while !t.is_char_boundary(start) {
                start += 1;
            }
            self.tail = Some(t[start..].to_string());
        }
        append_capped(&mut self.tail, line, &mut flags);
    }

    /// An incident (a result) for a function and data row.
    pub(crate) fn incident(
        &mut self,
        function: &str,
        tag: Option<&str>,
        incident: Incident,
        description: Option<&str>,
        file: Option<&str>,
        line: Option<u64>,
    ) {
        let i = self.case_index(function, tag);
        let case = &mut self.suite_mut().cases[i];
        let before = case.outcome;
        let first = case.message.is_none() && case.file.is_none();
        case.outcome = case.outcome.merge(incident.outcome);
        case.flags.blacklisted |= incident.blacklisted;
        let decisive = case.outcome != before || (first && incident.outcome != CaseOutcome::Pass);
        if let Some(d) = description.filter(|d| !d.is_empty()) {
            if decisive || case.message.is_none() {
                set_capped(&mut case.message, d, &mut case.flags);
            }
            let mut label = std::mem::take(&mut self.scratch);
            label.clear();
            push_incident_label(&mut label, incident);
            label.push_str(": ");
            label.push_str(d);
            let case = &mut self.suite_mut().cases[i];
            append_capped(&mut case.log, &label, &mut case.flags);
            self.scratch = label;
        }
        let case = &mut self.suite_mut().cases[i];
        if (decisive || case.file.is_none())
            && let Some(f) = file.filter(|f| !f.is_empty())
        {
            case.file = Some(f.to_string());
            case.line = line;
        }
        if incident.ends_function() {
            self.running = None;
            self.tail = None;
        } else {
            self.set_running_key(function, tag);
        }
    }

    /// A message (`qDebug`, `qWarning`, `QFATAL`, …) logged by a function.
    pub(crate) fn message(&mut self, function: &str, tag: Option<&str>, kind: &str, text: &str) {
        let mut line = std::mem::take(&mut self.scratch);
        line.clear();
        line.extend(kind.chars().map(|c| c.to_ascii_uppercase()));
        line.push_str(": ");
        line.push_str(text);
        if kind.eq_ignore_ascii_case("qfatal") {
            let case = self.case_mut(function, tag);
            case.outcome = case.outcome.merge(CaseOutcome::Crash);
            set_capped(&mut case.message, text, &mut case.flags);
            append_capped(&mut case.log, &line, &mut case.flags);
            self.set_running_key(function, tag);
        } else {
            if !function.is_empty() {
                self.set_running_key(function, tag);
            }
            if let Some(i) = self.find_case(function, tag) {
                let case = &mut self.suite_mut().cases[i];
                append_capped(&mut case.log, &line, &mut case.flags);
            } else {
                let mut flags = Default::default();
                match &mut self.pending {
                    Some((pkey, log)) if pkey.0 == function => {
                        append_capped(log, &line, &mut flags)
                    }
                    _ => {
                        let mut log = None;
                        append_capped(&mut log, &line, &mut flags);
                        let key = (function.to_string(), tag.map(str::to_string));
                        self.pending = Some((key, log));
                    }
                }
            }
        }
        self.scratch = line;
    }

    /// Whether some function is known to be running (the crash candidate).
    pub(crate) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Marks which function runs now (`None` between functions).
    pub(crate) fn set_running(&mut self, function: Option<(&str, Option<&str>)>) {
        self.running = function.map(|(f, t)| (f.to_string(), t.map(str::to_string)));
        if self.running.is_none() {
            self.tail = None;
        }
    }

    pub(crate) fn benchmark(&mut self, function: &str, tag: Option<&str>, metric: Metric) {
        self.case_mut(function, tag).metrics.push(metric);
    }

    /// `<Duration>` of a test function: set on its case when it has exactly one.
    pub(crate) fn function_duration(&mut self, function: &str, ms: Option<f64>) {
        let Some(suite) = &self.suite else { return };
        let cases = &suite.cases;
        let fc = &self.function_cases;
        if let Some(j) = self
            .functions
            .find(fn_hash(function), |j| cases[fc[j].1].name == function)
            && let (1, i) = self.function_cases[j]
        {
            self.suite_mut().cases[i].duration_ms = ms;
        }
    }

    /// Ends parsing. `complete` says whether the stream's natural end was seen; when not,
    /// the running function (if any) is marked crashed and the tail of the output kept.
    pub(crate) fn finish(mut self, complete: bool) -> Results {
        // A QFATAL is a crash even when the logger wrote its closing lines.
        let mut crashed_fn: Option<Key> = None;
        if let Some(suite) = &self.suite
            && let Some(c) = suite
                .cases
                .iter()
                .rev()
                .find(|c| c.outcome == CaseOutcome::Crash)
        {
            crashed_fn = Some((c.name.clone(), c.data_tag.clone()));
        }
        if !complete {
            self.results.complete = false;
            self.warn("output stops before the end of the test run (crashed or truncated)");
            if crashed_fn.is_none() {
                crashed_fn = self.running.clone();
            }
            if let Some((f, t)) = &crashed_fn {
                let case = self.case_mut(f, t.as_deref());
                case.outcome = case.outcome.merge(CaseOutcome::Crash);
            }
        }
        let suite_name = self.suite_name().unwrap_or("").to_string();
        if crashed_fn.is_some() || !complete {
            let mut log = self.tail.take();
            if let Some((f, t)) = &crashed_fn {
                let i = self.case_index(f, t.as_deref());
                let case_log = self.suite_mut().cases[i].log.clone();
                if log.is_none() {
                    log = case_log;
                }
            }
            if let Some((_, Some(p))) = &self.pending
                && log.is_none()
            {
                log = Some(p.clone());
            }
            let function = crashed_fn.map(|(f, t)| match t {
                Some(t) => format!("{f}({t})"),
                None => f,
            });
            if !suite_name.is_empty() || function.is_some() || log.is_some() {
                self.results.crashed.push(CrashedTest {
                    test_name: suite_name,
                    function,
                    log: log.unwrap_or_default(),
                });
            }
        }
        self.finish_suite();
        self.results
    }
}

fn push_incident_label(out: &mut String, i: Incident) {
    let base = match i.outcome {
        CaseOutcome::Pass => "PASS",
        CaseOutcome::Fail => "FAIL",
        CaseOutcome::Xfail => "XFAIL",
        CaseOutcome::Xpass => "XPASS",
        CaseOutcome::Skip => "SKIP",
        CaseOutcome::Error => "ERROR",
        CaseOutcome::Crash => "CRASH",
    };
    if i.blacklisted {
        out.push('B');
    }
    out.push_str(base);
}

/// Turns a JUnit parse of QtTest's `junitxml` logger into QtTest terms: `events(100)`
/// becomes function `events` with data tag `100`; the classname (the test object) is
/// dropped since it repeats the suite name; repeated entries of one case are merged.
pub(crate) fn from_junit(results: &mut Results) {
    for suite in &mut results.suites {
        let cases = std::mem::take(&mut suite.cases);
        suite.cases = merge_repeated(cases.into_iter().map(|mut c| {
            let (name, tag) = split_qt_name(&c.name);
            c.name = name;
            c.data_tag = tag;
            if c.classname.as_deref() == Some(suite.name.as_str()) {
                c.classname = None;
            }
            c
        }));
    }
}

/// Turns a TAP parse of QtTest's `tap` logger into QtTest terms: the `# tst_Name`
/// comment names the suite, `name(tag)` is split, and repeated points are merged.
pub(crate) fn from_tap(results: &mut Results) {
    for suite in &mut results.suites {
        if let Some(name) = suite
            .properties
            .iter()
            .find(|p| p.name == "first_comment")
            .map(|p| p.value.clone())
        {
            suite.name = name;
        }
        suite.properties.retain(|p| p.name != "first_comment");
        let cases = std::mem::take(&mut suite.cases);
        suite.cases = merge_repeated(cases.into_iter().map(|mut c| {
            let (name, tag) = split_qt_name(&c.name);
            c.name = name;
            c.data_tag = tag;
            // QtTest writes blacklisted passes as `ok # TODO`: not an unexpected pass.
            if c.outcome == CaseOutcome::Xpass && c.flags.todo {
                c.outcome = CaseOutcome::Pass;
                c.flags.todo = false;
                c.flags.blacklisted = true;
            }
            // `not ok # TODO` is QtTest's XFAIL (or BFAIL): an expected failure.
            if c.outcome == CaseOutcome::Xfail {
                c.flags.todo = false;
            }
            c
        }));
    }
}

/// Merges consecutive entries for the same function and data tag (QtTest loggers repeat
/// a case once per incident, e.g. a skip reported ten times).
fn merge_repeated(cases: impl Iterator<Item = Case>) -> Vec<Case> {
    let mut out: Vec<Case> = Vec::new();
    for c in cases {
        if let Some(last) = out.last_mut()
            && last.name == c.name
            && last.data_tag == c.data_tag
        {
            let before = last.outcome;
            last.outcome = last.outcome.merge(c.outcome);
            last.flags.blacklisted |= c.flags.blacklisted;
            if last.outcome != before && c.message.is_some() {
                last.message = c.message.clone();
            }
            if let Some(log) = &c.log {
                append_capped(&mut last.log, log, &mut last.flags);
            }
            last.metrics.extend(c.metrics);
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_types() {
        let i = Incident::from_type("bxfail").expect("bxfail");
        assert_eq!(i.outcome, CaseOutcome::Xfail);
        assert!(i.blacklisted);
        assert_eq!(
            Incident::from_type("FAIL!").map(|i| i.outcome),
            Some(CaseOutcome::Fail)
        );
        assert!(Incident::from_type("qdebug").is_none());
    }

    #[test]
    fn units_round_trip() {
        assert_eq!(unit_for_metric("InstructionReads"), "instruction reads");
        assert_eq!(metric_for_unit("CPU ticks"), "CPUTicks");
        assert_eq!(metric_for_unit("widgets"), "widgets");
    }
}
