//! Wall-clock time in the one unit agentd stores and reports: Unix
//! milliseconds (`i64`), as the store's rows and the query events keep it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Current time in Unix milliseconds; 0 if the clock reads before 1970.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_this_code_was_written() {
        // 2026-01-01T00:00:00Z
        assert!(now_ms() > 1_767_225_600_000);
    }
}
