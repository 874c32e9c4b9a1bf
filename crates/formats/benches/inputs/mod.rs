//! The generated inputs of the parse benchmark (`benches/parse.rs`), shared with the
//! CPU-time example (`examples/parse_cpu.rs`): about 50 MB each, built in memory.

use std::fmt::Write;

const TARGET: usize = 50 * 1024 * 1024;

pub fn qt_xml() -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<TestCase name=\"tst_Big\">\n<Environment>\n<QtVersion>6.8.0</QtVersion>\n</Environment>\n",
    );
    let mut i = 0u64;
    while s.len() < TARGET {
        let _ = write!(
            s,
            "<TestFunction name=\"bench{i}\">\n<Message type=\"qdebug\" file=\"\" line=\"0\">\n<DataTag><![CDATA[row {i}]]></DataTag>\n<Description><![CDATA[some debug output for row {i}]]></Description>\n</Message>\n<Incident type=\"pass\" file=\"\" line=\"0\">\n<DataTag><![CDATA[row {i}]]></DataTag>\n</Incident>\n<BenchmarkResult metric=\"WalltimeMilliseconds\" tag=\"row {i}\" value=\"0.{i}\" iterations=\"1024\" />\n<Duration msecs=\"1.5\"/>\n</TestFunction>\n"
        );
        i += 1;
    }
    s.push_str("<Duration msecs=\"1000\"/>\n</TestCase>\n");
    s
}

pub fn junit() -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\"?>\n<testsuites>\n<testsuite name=\"big\" time=\"1.0\">\n",
    );
    let mut i = 0u64;
    while s.len() < TARGET {
        if i.is_multiple_of(10) {
            let _ = write!(
                s,
                "<testcase name=\"test_{i}\" classname=\"pkg.Mod\" time=\"0.01\"><failure message=\"assert {i} == 0\" type=\"AssertionError\">Traceback line 1\nTraceback line 2 &amp; more</failure><system-out><![CDATA[stdout of {i}]]></system-out></testcase>\n"
            );
        } else {
            let _ = writeln!(
                s,
                "<testcase name=\"test_{i}\" classname=\"pkg.Mod\" time=\"0.01\"/>"
            );
        }
        i += 1;
    }
    s.push_str("</testsuite>\n</testsuites>\n");
    s
}

pub fn tap() -> String {
    let mut s = String::from("TAP version 14\n");
    let mut i = 1u64;
    while s.len() < TARGET {
        if i.is_multiple_of(10) {
            let _ = write!(
                s,
                "not ok {i} - check number {i}\n  ---\n  message: value {i} was wrong\n  severity: fail\n  ...\n"
            );
        } else if i.is_multiple_of(17) {
            let _ = writeln!(s, "ok {i} - check number {i} # SKIP not here");
        } else {
            let _ = writeln!(s, "ok {i} - check number {i} # time=1.5ms");
        }
        i += 1;
    }
    let _ = writeln!(s, "1..{}", i - 1);
    s
}
