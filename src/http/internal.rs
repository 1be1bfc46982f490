//! The homeserver-facing listener (`server.internal`): the endpoints a homeserver's
//! modules call, never clients. Off the public internet by default.

pub mod credentials;
pub mod profile;
