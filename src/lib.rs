//! mxisd: a federated Matrix identity server.
//!
//! The binary is a thin shell (`main.rs`, `cli`) around [`run`]: the caller loads the
//! config, binds the listeners and decides when to stop, so tests start real servers
//! in-process on port 0, many at once. The layers, top to bottom (imports only go
//! down; `tests/it/architecture.rs` checks it on every run):
//!
//! ```text
//! app, cli                  wiring and shutdown; the command line
//! http, migrate             warp routes and handlers; import-ma1sd
//! service                   domain logic, one file per area, and the sync driver
//! store index source notify federation
//! crypto metrics dns logging progress
//! config
//! model error
//! ```
//!
//! See README.md, "Architecture in brief".

#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod dns;
pub mod error;
pub mod federation;
pub mod http;
pub mod index;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod notify;
pub mod pace;
pub mod progress;
pub mod service;
pub mod source;
pub mod store;

pub use app::{run, run_reloadable, Listeners, StartError};
