//! The integration tests, one test binary: `cargo test` runs them all, `cargo nextest run` runs
//! each in a process of its own, and a module path selects a part (`cargo nextest run --test it
//! behaviour::`, `cargo test --test it -- outage::`).
//!
//! One binary, not one per file, so that the harness (`harness/`) is compiled and linked once
//! and every item in it is used by some test (no `allow(dead_code)`). Tests of one process must
//! not depend on process-wide state: each starts its own Redis on a free port, and the one test
//! that captures logs captures only the threads it runs on (see `security`).

mod harness;

mod acl;
mod behaviour;
mod browser;
mod browser_account;
mod by_hand;
mod cache;
mod carriers;
mod clocks;
mod cluster;
mod concurrency;
mod devices;
mod example_account;
mod example_cache;
mod example_hyper;
mod example_metrics;
mod example_put_get;
mod example_tonic;
mod faults;
mod fuzz;
mod layers;
mod limits;
mod observability;
mod outage;
mod owners;
mod pressure;
mod races;
mod redis_store;
mod security;
mod sentinel;
mod settings;
mod signing;
mod startup;
mod tls;
