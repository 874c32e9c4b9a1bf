//! Change points in the metrics of one test, grouped together.
