//! The Tollgate decision pipeline: shape, policy load, boundary, scoring.
//!
//! Every stage will be a pure function `(input, snapshot) -> result`: no I/O,
//! no clock, no randomness, no floating point and no hash-map iteration order
//! in anything a decision depends on (PROTOCOL §4, "Determinism").
//!
//! It is empty until the pipeline work lands; nothing depends on it yet.
