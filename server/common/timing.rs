//! Where the time of one request went inside an engine. The API adds the
//! total it measured around the whole call.

use std::time::Duration;

/// Time a request spent waiting, then working.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// Waiting before any work started on it: for a thread, a batch, a
    /// collection's lock.
    pub queue: Duration,
    /// Working: forward passes, index searches, the store reads they need.
    pub compute: Duration,
}
