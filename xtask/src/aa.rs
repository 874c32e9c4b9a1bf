//! `cargo xtask aa`: A/A and A/B comparisons of a real QtTest benchmark, the
//! project's own `crates/formats/tests/qtbench` built against the system Qt 6.
//!
//! The benchmark runs many times in one go. Runs come in blocks, one block per
//! comparison: `--n` runs of each of three sides, A1 and A2 (the same binary,
//! unchanged) and B (`TF_BENCH_SLOWDOWN`, 1.3 by default: every benchmarked
//! body does 30 % more of the same work), interleaved and in rotating order so
//! that a change in the machine's load touches every side alike. Each block
//! gives, for every benchmark row, one A/A comparison (A1 against A2) and one
//! A/B comparison (A1 against B), made by `testfleet_core::analysis::compare`
//! with its default options and no noise model. The groups are disjoint: no
//! run serves two A/A comparisons, nor two A/B ones (A1's runs serve one of
//! each). The target is no DIFFERENT verdict in the A/A comparisons, and
//! SLOWER in (nearly) every A/B one.
//!
//! QtTest runs with `-tickcounter -iterations 1000 -median 5` by default: CPU
//! ticks resolve a few nanoseconds where the walltime measurer counts whole
//! milliseconds, a fixed iteration count skips QtTest's search for one (which
//! would double a run's time), and the median of five measurements drops the
//! preemptions that land on some of them. The default rows are `join` (three
//! data rows), `sortNumbers:small` and `hashLookup`; `sortNumbers:large` is
//! left out (`--functions` takes it): it doubles a run's time and varies by
//! ~24 % from run to run on a loaded machine. Runs set `QT_HASH_SEED=0`
//! (`--random-hash-seed` does not): with QHash's per-process random seed,
//! `hashLookup` takes either ~28 or ~38 ticks depending on the run, and the
//! fast mode of the slowed side overlaps the slow mode of the other. The
//! default 100 comparisons of 5 runs per side (1,500 runs of ~0.04 s) take
//! about a minute on a loaded 2-core machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use testfleet_core::analysis::compare::{CompareOptions, compare};
use testfleet_core::analysis::{Better, Verdict};
use testfleet_formats::{Format, parse_file};

use super::{root, run};

const USAGE: &str = "usage: cargo xtask aa [--comparisons N] [--n N] [--iterations N] [--median N]
                       [--slowdown FACTOR] [--functions \"F1 F2:tag …\"] [--random-hash-seed] [--json]

Builds crates/formats/tests/qtbench (Qt 6, CMake, g++), runs it in blocks of
3 × N runs (A1, A2: the same binary; B: TF_BENCH_SLOWDOWN=FACTOR) and prints,
per benchmark row, the verdicts of the A/A (A1 vs A2) and A/B (A1 vs B)
comparisons. Defaults: 100 comparisons, N = 5, -iterations 1000, -median 5,
slowdown 1.3, functions \"join sortNumbers:small hashLookup\" (five rows),
QT_HASH_SEED=0 unless --random-hash-seed.";

/// What to run, from the command line.
#[derive(Debug, Clone, Serialize)]
struct Options {
    comparisons: usize,
    n: usize,
    iterations: u32,
    median: u32,
    slowdown: f64,
    functions: Vec<String>,
    random_hash_seed: bool,
    #[serde(skip)]
    json: bool,
}

fn options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        comparisons: 100,
        n: 5,
        iterations: 1000,
        median: 5,
        slowdown: 1.3,
        functions: ["join", "sortNumbers:small", "hashLookup"]
            .map(str::to_owned)
            .to_vec(),
        random_hash_seed: false,
        json: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<&String> {
            it.next().with_context(|| format!("{name} needs a value"))
        };
        let count = |name: &str, text: &str| -> Result<usize> {
            let n: usize = text
                .parse()
                .with_context(|| format!("{name} needs a whole number, not {text:?}"))?;
            if n == 0 {
                bail!("{name} must be at least 1");
            }
            Ok(n)
        };
        match arg.as_str() {
            "--comparisons" => o.comparisons = count(arg, value(arg)?)?,
            "--n" => o.n = count(arg, value(arg)?)?,
            "--iterations" => o.iterations = u32::try_from(count(arg, value(arg)?)?)?,
            "--median" => o.median = u32::try_from(count(arg, value(arg)?)?)?,
            "--slowdown" => {
                let text = value(arg)?;
                o.slowdown = text
                    .parse()
                    .with_context(|| format!("--slowdown needs a number, not {text:?}"))?;
                if !(o.slowdown > 1.0 && o.slowdown <= 100.0) {
                    bail!("--slowdown must be above 1 and at most 100, such as 1.3");
                }
            }
            "--functions" => {
                o.functions = value(arg)?.split_whitespace().map(str::to_owned).collect();
                if o.functions.is_empty() {
                    bail!("--functions needs at least one QtTest function");
                }
            }
            "--json" => o.json = true,
            "--random-hash-seed" => o.random_hash_seed = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(o)
}

/// One benchmark row: function, data tag and metric.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RowKey {
    function: String,
    data_tag: Option<String>,
    metric: String,
    unit: String,
}

impl std::fmt::Display for RowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.data_tag {
            Some(tag) => write!(f, "{}({}) {}", self.function, tag, self.metric),
            None => write!(f, "{} {}", self.function, self.metric),
        }
    }
}

/// The three sides of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A1,
    A2,
    B,
}

const SIDES: [Side; 3] = [Side::A1, Side::A2, Side::B];

/// One row's values: `[side][block]` → one value per run.
type Values = [Vec<Vec<f64>>; 3];

/// Verdict counts of one kind of comparison.
#[derive(Debug, Clone, Default, Serialize)]
struct Counts {
    faster: usize,
    slower: usize,
    same: usize,
    unknown: usize,
}

impl Counts {
    fn add(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Faster => self.faster += 1,
            Verdict::Slower => self.slower += 1,
            Verdict::Same => self.same += 1,
            Verdict::Unknown => self.unknown += 1,
        }
    }

    fn different(&self) -> usize {
        self.faster + self.slower
    }

    fn sum(&mut self, other: &Counts) {
        self.faster += other.faster;
        self.slower += other.slower;
        self.same += other.same;
        self.unknown += other.unknown;
    }
}

/// The figures of one benchmark row.
#[derive(Debug, Clone, Serialize)]
struct RowReport {
    row: String,
    unit: String,
    better: Better,
    /// Median of every A run's value.
    median: f64,
    /// Robust cv of the A runs (1.4826 × MAD / median).
    cv: f64,
    aa: Counts,
    aa_different: usize,
    ab: Counts,
    /// Median relative change of B against A1 over the A/B comparisons.
    ab_median_change: f64,
}

/// Everything `--json` prints.
#[derive(Debug, Clone, Serialize)]
struct Report {
    options: Options,
    qtest_args: Vec<String>,
    runs: usize,
    seconds: f64,
    rows: Vec<RowReport>,
    aa: Counts,
    aa_comparisons: usize,
    aa_different: usize,
    ab: Counts,
    ab_comparisons: usize,
}

pub fn aa(args: &[String]) -> Result<()> {
    let o = options(args)?;
    let root = root();
    let work = root.join("target/xtask-aa");
    let exe = build(&root, &work.join("build"))?;
    let qtest_args = qtest_args(&o);
    let out = work.join("run.xml");
    let started = Instant::now();
    let mut values: BTreeMap<RowKey, Values> = BTreeMap::new();
    let mut runs = 0;
    for block in 0..o.comparisons {
        for row in values.values_mut() {
            for side in row.iter_mut() {
                side.push(Vec::new());
            }
        }
        for rep in 0..o.n {
            for turn in 0..SIDES.len() {
                // Rotate the order, so no side always runs first.
                let side = SIDES[(turn + rep + block) % SIDES.len()];
                let measured = run_once(&exe, &qtest_args, side, &o, &out)?;
                runs += 1;
                for (key, value) in measured {
                    let row = values
                        .entry(key)
                        .or_insert_with(|| std::array::from_fn(|_| vec![Vec::new(); block + 1]));
                    row[side as usize][block].push(value);
                }
            }
        }
        if (block + 1) % 10 == 0 {
            eprintln!(
                "xtask: {} of {} blocks ({runs} runs, {:.0} s)",
                block + 1,
                o.comparisons,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let report = report(
        &o,
        qtest_args,
        runs,
        started.elapsed().as_secs_f64(),
        &values,
    )?;
    if o.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Builds `tst_bench` (Release) under `build_dir`; returns its path.
fn build(root: &Path, build_dir: &Path) -> Result<PathBuf> {
    let src = root.join("crates/formats/tests/qtbench");
    let hint = "the benchmark needs Qt 6, CMake and g++ (Debian: qt6-base-dev cmake g++; `cargo xtask setup` installs them)";
    // The build's output goes to stderr: `--json` owns stdout.
    run(Command::new("cmake")
        .stdout(std::io::stderr())
        .arg("-S")
        .arg(&src)
        .arg("-B")
        .arg(build_dir)
        .arg("-DCMAKE_BUILD_TYPE=Release"))
    .context(hint)?;
    run(Command::new("cmake")
        .stdout(std::io::stderr())
        .arg("--build")
        .arg(build_dir)
        .arg("-j2"))
    .context(hint)?;
    Ok(build_dir.join("tst_bench"))
}

fn qtest_args(o: &Options) -> Vec<String> {
    let mut args = vec![
        "-tickcounter".to_owned(),
        "-iterations".to_owned(),
        o.iterations.to_string(),
        "-median".to_owned(),
        o.median.to_string(),
    ];
    args.extend(o.functions.iter().cloned());
    args
}

/// Runs the benchmark once and returns each row's value.
fn run_once(
    exe: &Path,
    args: &[String],
    side: Side,
    o: &Options,
    out: &Path,
) -> Result<Vec<(RowKey, f64)>> {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .arg("-o")
        .arg(format!("{},xml", out.display()))
        .env("QT_QPA_PLATFORM", "offscreen")
        .stdout(std::process::Stdio::null());
    match side {
        Side::B => cmd.env("TF_BENCH_SLOWDOWN", o.slowdown.to_string()),
        Side::A1 | Side::A2 => cmd.env_remove("TF_BENCH_SLOWDOWN"),
    };
    if o.random_hash_seed {
        cmd.env_remove("QT_HASH_SEED");
    } else {
        cmd.env("QT_HASH_SEED", "0");
    }
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {}", exe.display()))?;
    if !status.success() {
        bail!("{} {} failed with {status}", exe.display(), args.join(" "));
    }
    let results = parse_file(out, Some(Format::QtXml))
        .with_context(|| format!("failed to parse {}", out.display()))?;
    if !results.complete {
        bail!("{} is incomplete: {:?}", out.display(), results.warnings);
    }
    let measured: Vec<(RowKey, f64)> = results
        .cases()
        .flat_map(|case| {
            case.metrics.iter().map(|m| {
                let key = RowKey {
                    function: case.name.clone(),
                    data_tag: case.data_tag.clone(),
                    metric: m.name.clone(),
                    unit: m.unit.clone(),
                };
                (key, m.value)
            })
        })
        .collect();
    if measured.is_empty() {
        bail!("no benchmark results in {}", out.display());
    }
    Ok(measured)
}

fn report(
    o: &Options,
    qtest_args: Vec<String>,
    runs: usize,
    seconds: f64,
    values: &BTreeMap<RowKey, Values>,
) -> Result<Report> {
    let options = CompareOptions::default();
    let mut rows = Vec::new();
    let (mut aa_all, mut ab_all) = (Counts::default(), Counts::default());
    for (key, row) in values {
        let better = Better::of_metric(&key.metric, &key.unit);
        let (mut aa, mut ab) = (Counts::default(), Counts::default());
        let mut changes = Vec::new();
        let [a1, a2, b] = row;
        for block in 0..a1.len() {
            let (x, y, z) = (&a1[block], &a2[block], &b[block]);
            if x.len() != o.n || y.len() != o.n || z.len() != o.n {
                bail!("{key}: block {block} lacks values (a run did not report this row)");
            }
            aa.add(compare(x, y, better, None, &options)?.verdict);
            let c = compare(x, z, better, None, &options)?;
            ab.add(c.verdict);
            changes.push(c.change);
        }
        let every_a: Vec<f64> = a1.iter().chain(a2).flatten().copied().collect();
        let median = median(every_a.clone());
        let mad = self::median(every_a.iter().map(|v| (v - median).abs()).collect());
        aa_all.sum(&aa);
        ab_all.sum(&ab);
        rows.push(RowReport {
            row: key.to_string(),
            unit: key.unit.clone(),
            better,
            median,
            cv: if median != 0.0 {
                1.4826 * mad / median
            } else {
                0.0
            },
            aa_different: aa.different(),
            aa,
            ab,
            ab_median_change: self::median(changes),
        });
    }
    let comparisons = rows.len() * o.comparisons;
    Ok(Report {
        options: o.clone(),
        qtest_args,
        runs,
        seconds,
        rows,
        aa_different: aa_all.different(),
        aa: aa_all,
        aa_comparisons: comparisons,
        ab: ab_all,
        ab_comparisons: comparisons,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn print_table(r: &Report) {
    let o = &r.options;
    println!(
        "tst_bench {} — {} comparisons per row, n = {} runs per side, disjoint groups; {} runs in {:.0} s",
        r.qtest_args.join(" "),
        o.comparisons,
        o.n,
        r.runs,
        r.seconds
    );
    println!(
        "{:<42} {:>12} {:>6} | {:>9} {:>5} {:>7} | {:>6} {:>6} {:>5} {:>7} {:>7}",
        "row",
        "median",
        "cv",
        "A/A diff",
        "same",
        "unknown",
        "slower",
        "faster",
        "same",
        "unknown",
        "change"
    );
    for row in &r.rows {
        println!(
            "{:<42} {:>12.2} {:>5.1}% | {:>9} {:>5} {:>7} | {:>6} {:>6} {:>5} {:>7} {:>+6.1}%",
            row.row,
            row.median,
            row.cv * 100.0,
            row.aa_different,
            row.aa.same,
            row.aa.unknown,
            row.ab.slower,
            row.ab.faster,
            row.ab.same,
            row.ab.unknown,
            row.ab_median_change * 100.0
        );
    }
    println!(
        "A/A: {} DIFFERENT, {} SAME, {} UNKNOWN of {} comparisons (target: 0 DIFFERENT)",
        r.aa_different, r.aa.same, r.aa.unknown, r.aa_comparisons
    );
    println!(
        "A/B (TF_BENCH_SLOWDOWN={}): {} SLOWER, {} FASTER, {} SAME, {} UNKNOWN of {} comparisons",
        o.slowdown, r.ab.slower, r.ab.faster, r.ab.same, r.ab.unknown, r.ab_comparisons
    );
}
