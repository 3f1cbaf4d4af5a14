//! The Tollgate sandbox: replay intents, or a whole ledger, against policy
//! versions and diff the verdicts.
//!
//! It will run the same pipeline as the gateway with a simulated target and a
//! fixed key, so that a replayed receipt body is byte-identical on every run.
//!
//! It is empty until the pipeline and gateway work lands.
