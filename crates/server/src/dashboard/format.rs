//! What templates print: outcome counts in words, label sets, numbers.

use std::collections::BTreeMap;

use testfleet_wire::api::OutcomeCounts;

/// The non-zero outcome counts, as `3 passed, 1 failed`.
pub(crate) fn outcome_text(o: &OutcomeCounts) -> String {
    let parts: Vec<String> = [
        (o.passed, "passed"),
        (o.flaky, "flaky"),
        (o.failed, "failed"),
        (o.timed_out, "timed out"),
        (o.stalled, "stalled"),
        (o.crashed, "crashed"),
        (o.infra_error, "infra error"),
        (o.cancelled, "cancelled"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, name)| format!("{n} {name}"))
    .collect();
    parts.join(", ")
}

/// Labels as `key=value` words.
pub(crate) fn labels(map: &BTreeMap<String, String>) -> Vec<String> {
    map.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Whether `map` has every `key=value` (or bare `key`) of `filter`
/// (separated by commas or spaces).
pub(crate) fn labels_match(map: &BTreeMap<String, String>, filter: &str) -> bool {
    filter
        .split([',', ' '])
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .all(|word| match word.split_once('=') {
            Some((k, v)) => map.get(k.trim()).is_some_and(|have| have == v.trim()),
            None => map.contains_key(word),
        })
}

/// A number with at most `digits` decimals, trailing zeros dropped.
pub(crate) fn number(x: f64, digits: usize) -> String {
    let text = format!("{x:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_filters_need_every_word() {
        let map: BTreeMap<String, String> = [("os", "linux"), ("arch", "x86_64")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert!(labels_match(&map, "os=linux"));
        assert!(labels_match(&map, "os=linux, arch"));
        assert!(labels_match(&map, ""));
        assert!(!labels_match(&map, "os=windows"));
        assert!(!labels_match(&map, "os=linux gpu"));
    }

    #[test]
    fn numbers_lose_trailing_zeros() {
        assert_eq!(number(1.5, 3), "1.5");
        assert_eq!(number(2.0, 2), "2");
        assert_eq!(number(0.12345, 3), "0.123");
    }
}
