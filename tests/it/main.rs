//! The one integration-test binary: real servers, started in-process on port 0 (or as
//! the real `mxisd` binary), spoken to over real HTTP on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod accounts;
mod architecture;
mod bindings;
mod cli;
mod conns;
mod credentials;
mod directory;
mod diskfull;
mod door;
mod http;
mod invites;
mod lookup;
mod ma1sd;
mod ops;
mod policy;
mod proxy;
mod recursion;
mod reload;
mod sessions;
mod stores;
mod sync;
mod terms;
mod tls;
mod unified;
