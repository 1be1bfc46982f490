//! Domain logic. Services take and return plain Rust types; no warp or sled type crosses
//! this line, so they are tested without HTTP and reused by the CLI.

pub mod health;
pub mod keys;
