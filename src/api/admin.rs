//! The admin listener's API (loopback by default): what the CLI verbs of a running
//! server call. Detailed status now; sync, bindings and metrics join it later.

use super::respond;
use crate::service::health;
use crate::state::AppState;
use std::convert::Infallible;
use warp::reply::Response;

/// `GET /_mxisd/admin/v1/status`
pub async fn status(state: AppState) -> Result<Response, Infallible> {
    respond(Ok(health::admin_status(&state)))
}
