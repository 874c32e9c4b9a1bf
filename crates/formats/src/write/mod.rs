//! Writers: the normalized model back out as merged JUnit XML, Taskotron-style TAP 13
//! and InfluxDB line protocol.

pub mod influx;
pub mod junit;
pub mod tap;
