//! The Matrix Identity Service API (v2, and the v1 endpoints homeservers and older
//! clients still call), one file per area.

pub mod account;
pub mod discovery;
pub mod invite;
pub mod keys;
pub mod lookup;
pub mod session;
pub mod terms;
