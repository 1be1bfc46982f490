//! Domain logic. Services take and return plain Rust types; no warp or sled type crosses
//! this line, so they are tested without HTTP and reused by the CLI.

pub mod account;
pub mod auth;
pub mod backup;
pub mod bind;
pub mod bindings;
pub mod directory;
pub mod hashing;
pub mod health;
pub mod invite;
pub mod keys;
pub mod lookup;
pub mod params;
pub mod ratelimit;
pub mod session;
pub mod terms;
