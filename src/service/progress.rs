//! Operators: the long work running now (`GET /_mxisd/admin/v1/progress`), which
//! `mxisd` polls to draw its progress bar. The counting itself is `crate::progress`.

use crate::progress::Snapshot;
use crate::service::Services;
use serde::Serialize;

/// Every job running now, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Running {
    pub jobs: Vec<Snapshot>,
}

pub fn running(state: &Services) -> Running {
    Running {
        jobs: state.jobs.list(),
    }
}
