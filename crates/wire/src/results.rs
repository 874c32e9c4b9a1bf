//! The normalized results model (see docs/results-model.md).
