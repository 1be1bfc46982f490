//! The HTTP servers: the public identity API and the admin listener. Builds the warp
//! routes, adds CORS to every public response, answers preflights, refuses bodies over
//! the limit, turns routing failures into Matrix errors, logs each request (method,
//! path, status, time; never the query string, which may hold an access token), and
//! serves them with graceful shutdown.

pub mod admin;
pub mod body;
pub mod client;
pub mod conns;
pub mod door;
pub mod extract;
pub mod fast;
pub mod identity;
pub mod internal;
pub mod listen;
pub mod middleware;
pub mod params;
pub mod reply;
pub mod routes;

pub use routes::{admin_routes, public_routes};
