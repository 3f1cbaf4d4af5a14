//! Tollgate policy bundles, delegation tokens and their registries.
//!
//! This crate will hold the policy bundle format (manifest, action contracts,
//! Cedar boundary rules, scoring tables), its loader and validator, the
//! content-addressed version string `name@semver+<hash>` (PROTOCOL §4),
//! delegation tokens with their bound checks, and the in-memory registries
//! keyed by content hash. It does no network I/O.
//!
//! It is empty until the pipeline work lands; nothing depends on it yet.
