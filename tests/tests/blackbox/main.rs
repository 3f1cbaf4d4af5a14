//! The black-box tests: real `tollgate` processes, real HTTP, real
//! SQLite and PostgreSQL, a real browser. One test binary, one module a
//! topic, so the whole tree is linked once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod admin_cli;
mod agent_cli;
mod approvals;
mod approvals_quorum;
mod bench;
mod budgets;
mod checkpoints;
mod console;
mod crash;
mod docs;
mod doctored;
mod domains;
mod entities;
mod http2;
mod http_targets;
mod idempotency;
mod intents;
mod kms;
mod leases;
mod ledger_conformance;
mod lifecycle;
mod listener;
mod outcomes;
mod policy_cli;
mod postgres_gateway;
mod postgres_instances;
mod postgres_ledger;
mod python_sdk;
mod redecide;
mod resource_lookup;
mod rules;
mod sandbox;
mod storms;
mod tightened;
mod tls;
mod verifier;
mod webhooks;
