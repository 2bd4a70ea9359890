//! The server's black-box tests, as one test binary (one link of the dependency tree instead of
//! one per file): each module drives a real `hendelse` process, or the library in process,
//! through HTTP and the CLI. Shared fixtures are in `common`.

mod backpressure;
mod change;
mod cli;
mod clock;
mod common;
mod config;
mod conformance;
mod crash;
mod db_faults;
mod dialogs;
mod disk_full;
mod durability;
mod failover;
mod health;
mod history;
mod hostile;
mod isolation;
mod issuers;
mod network;
mod openapi;
mod otel;
mod pdp;
mod postgres_nodes;
mod push;
mod queries;
mod race;
mod rate_limit;
mod registry_reload;
mod reliability;
mod replay;
mod roundtrip;
mod secrets;
mod security;
mod shutdown;
mod stream_metrics;
mod system_users;
mod trace;
mod walkthrough;
