//! QtTest CSV benchmark logger (`-o file,csv`): one line per benchmark result,
//! `"function","[global:]tag","Metric",value_per_iteration,total,iterations`; newer Qt
//! inserts the variance before the iteration count.
//!
//! QtTest does not escape quotes inside data tags, so fields are located from both ends
//! instead of with a general CSV reader. The CSV logger prints only benchmarks: no
//! incidents, no test object name, no framing, so a repeated result starts a new suite
//! (several test objects concatenated) and completeness is only "last line ended".

use std::collections::HashSet;
use std::io::BufRead;

use testfleet_wire::results::{Metric, Results};

use super::{QtBuilder, unit_for_metric};
use crate::Format;
use crate::util::{parse_count, parse_number};

/// Naive comma split, for detection only.
pub(crate) fn split_csv(line: &str) -> Vec<&str> {
    line.trim_end_matches(['\r', '\n']).split(',').collect()
}

pub(crate) fn parse<R: BufRead>(mut input: R) -> Results {
    let mut b = QtBuilder::new(Format::QtCsv.name());
    let mut seen: HashSet<(String, String, String)> = HashSet::new();
    let mut line = Vec::new();
    let mut complete = true;
    let mut rows = 0usize;
    let mut bad = 0usize;
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                b.warn(format!("read error: {e}"));
                complete = false;
                break;
            }
        }
        let ended = line.last() == Some(&b'\n');
        let text = String::from_utf8_lossy(&line);
        let l = text.trim_end_matches(['\n', '\r']);
        if l.trim().is_empty() {
            continue;
        }
        let Some((function, tag, metric)) = parse_row(l) else {
            if !ended {
                // A cut-off last line is truncation, not garbage.
                complete = false;
            } else {
                bad += 1;
                if bad <= 5 {
                    b.warn(format!(
                        "skipped a line that is not a QtTest CSV row: {l:.80}"
                    ));
                }
            }
            continue;
        };
        if !ended {
            complete = false;
        }
        let key = (
            function.clone(),
            tag.clone().unwrap_or_default(),
            metric.name.clone(),
        );
        if !seen.insert(key.clone()) || !b.has_suite() {
            b.start_suite("");
            seen.clear();
            seen.insert(key);
        }
        rows += 1;
        b.benchmark(&function, tag.as_deref(), metric);
    }
    if rows == 0 {
        complete = false;
        b.warn("no benchmark rows found");
    }
    let mut results = b.finish(true);
    // finish(true) avoids inventing a crash; CSV cannot tell which function was running.
    if !complete {
        results.complete = false;
        results
            .warnings
            .push("output stops in the middle of a row (truncated)".into());
    }
    results
}

fn parse_row(l: &str) -> Option<(String, Option<String>, Metric)> {
    let fields: Vec<&str> = l.rsplitn(5, ',').collect();
    // rsplitn gives the numbers last-first, then the quoted head.
    let (numbers, head): (Vec<&str>, &str) =
        if fields.len() == 5 && fields[..4].iter().all(|f| parse_number(f).is_some()) {
            // value, total, variance, iterations (newer Qt)...
            let head = fields[4];
            if head.ends_with('"') {
                (fields[..4].iter().rev().copied().collect(), head)
            } else {
                // ...unless the fourth-from-last belongs to the head: 6-column form.
                let six: Vec<&str> = l.rsplitn(4, ',').collect();
                (six[..3].iter().rev().copied().collect(), *six.get(3)?)
            }
        } else {
            let six: Vec<&str> = l.rsplitn(4, ',').collect();
            if six.len() != 4 {
                return None;
            }
            (six[..3].iter().rev().copied().collect(), six[3])
        };
    let head = head.strip_prefix('"')?.strip_suffix('"')?;
    let first = head.find("\",\"")?;
    let last = head.rfind("\",\"")?;
    if first == last {
        return None;
    }
    let function = head[..first].to_string();
    let tag = &head[first + 3..last];
    let name = head[last + 3..].to_string();
    let value = parse_number(numbers[0])?;
    let total = parse_number(numbers[1]);
    let (variance, iterations) = if numbers.len() == 4 {
        (parse_number(numbers[2]), parse_count(numbers[3]))
    } else {
        (None, parse_count(numbers[2]))
    };
    Some((
        function,
        (!tag.is_empty()).then(|| tag.to_string()),
        Metric {
            unit: unit_for_metric(&name),
            name,
            value,
            total,
            iterations,
            variance,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_and_seven_columns() {
        let (f, t, m) = parse_row("\"threeEvents\",\"\",\"Events\",3,45,15").expect("row");
        assert_eq!(
            (f.as_str(), t, m.value, m.total, m.iterations, m.variance),
            ("threeEvents", None, 3.0, Some(45.0), Some(15), None)
        );
        let (_, t, m) =
            parse_row("\"w\",\"a:b\",\"WalltimeMilliseconds\",1000.2,1000.2,0.5,1").expect("row");
        assert_eq!(t.as_deref(), Some("a:b"));
        assert_eq!(
            (m.value, m.total, m.variance, m.iterations),
            (1000.2, Some(1000.2), Some(0.5), Some(1))
        );
        let (_, t, _) = parse_row("\"f\",\"tag \"with\", quotes\",\"Events\",1,1,1").expect("row");
        assert_eq!(t.as_deref(), Some("tag \"with\", quotes"));
    }
}
