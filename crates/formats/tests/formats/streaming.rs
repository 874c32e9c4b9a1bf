//! Memory stays bounded while streaming huge input: readers that generate data on the
//! fly feed the parsers far more output than any case may keep, and the kept texts must
//! stay capped.

use std::io::{BufReader, Read};
use std::path::Path;

use testfleet_formats::{Format, parse_reader};

/// Hands out `head`, then `count` copies of `repeat`, then `tail`, without ever holding
/// more than one copy in memory.
struct Generated {
    parts: Vec<(Vec<u8>, u64)>,
    part: usize,
    offset: usize,
}

impl Generated {
    fn new(parts: Vec<(Vec<u8>, u64)>) -> Generated {
        Generated {
            parts,
            part: 0,
            offset: 0,
        }
    }
}

impl Read for Generated {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            let Some((bytes, count)) = self.parts.get_mut(self.part) else {
                break;
            };
            if *count == 0 || bytes.is_empty() {
                self.part += 1;
                self.offset = 0;
                continue;
            }
            let take = (bytes.len() - self.offset).min(out.len() - n);
            out[n..n + take].copy_from_slice(&bytes[self.offset..self.offset + take]);
            n += take;
            self.offset += take;
            if self.offset == bytes.len() {
                self.offset = 0;
                *count -= 1;
            }
        }
        Ok(n)
    }
}

const MIB: u64 = 1024 * 1024;

#[test]
fn huge_tap_output_keeps_bounded_texts() {
    // 48 MiB of YAML diagnostics under one point, then a 48 MiB description written
    // without a newline, then a normal end.
    let yaml_line = format!("  stack: {}\n", "x".repeat(1014)).into_bytes();
    let input = Generated::new(vec![
        (b"TAP version 14\nnot ok 1 - big\n  ---\n".to_vec(), 1),
        (yaml_line, 48 * 1024),
        (b"  ...\nok 2 - ".to_vec(), 1),
        (vec![b'y'; 1024 * 1024], 48),
        (b"\n1..2\n".to_vec(), 1),
    ]);
    let r = parse_reader(
        BufReader::with_capacity(64 * 1024, input),
        Format::Tap,
        Path::new("<generated>"),
    )
    .expect("parse");
    assert!(r.complete, "{:?}", r.warnings);
    let cases = &r.suites[0].cases;
    assert_eq!(cases.len(), 2);
    assert!(cases[0].flags.truncated);
    let kept = serde_json::to_string(&r).expect("serialize").len() as u64;
    // The YAML text is capped at 64 KiB and the long line at 1 MiB.
    assert!(kept < 2 * MIB, "kept {kept} bytes");
    assert!(cases[1].name.len() <= MIB as usize);
    assert!(
        r.warnings.iter().any(|w| w.contains("was cut")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn huge_qtest_xml_output_keeps_bounded_logs() {
    // 300k debug messages (~50 MB) from one test function.
    let message = b"<Message type=\"qdebug\" file=\"\" line=\"0\">\n<Description><![CDATA[some debug output of the running function, over and over again, padded to about 170 bytes]]></Description>\n</Message>\n".to_vec();
    let input = Generated::new(vec![
        (
            b"<?xml version=\"1.0\"?>\n<TestCase name=\"tst_Big\">\n<TestFunction name=\"chatty\">\n"
                .to_vec(),
            1,
        ),
        (message, 300_000),
        (
            b"<Incident type=\"pass\" file=\"\" line=\"0\" />\n<Duration msecs=\"1\"/>\n</TestFunction>\n<Duration msecs=\"1\"/>\n</TestCase>\n"
                .to_vec(),
            1,
        ),
    ]);
    let r = parse_reader(
        BufReader::with_capacity(64 * 1024, input),
        Format::QtXml,
        Path::new("<generated>"),
    )
    .expect("parse");
    assert!(r.complete, "{:?}", r.warnings);
    let case = &r.suites[0].cases[0];
    assert!(case.flags.truncated);
    assert!(case.log.as_deref().map_or(0, str::len) <= 65 * 1024);
}
