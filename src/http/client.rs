//! Endpoints for Matrix clients beyond the identity API: the user directory search.

pub mod directory;
