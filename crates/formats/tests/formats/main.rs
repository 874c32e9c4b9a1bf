//! Integration tests of the formats crate: fixture snapshots, cross-format consistency,
//! robustness on truncated and arbitrary input, samples of other producers, and a real
//! QtTest benchmark built at test time.

mod common;
mod consistency;
mod fixtures;
mod qtbench;
mod robustness;
mod samples;
mod streaming;
mod writers;
