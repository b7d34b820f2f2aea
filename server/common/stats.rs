//! Counter arithmetic the engines report in their stats RPCs.

/// Hits over lookups; 0 before any lookup.
pub fn hit_rate(hits: u64, misses: u64) -> f64 {
    let lookups = hits + misses;
    if lookups == 0 {
        0.0
    } else {
        hits as f64 / lookups as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_hits_over_lookups() {
        assert_eq!(hit_rate(0, 0), 0.0);
        assert_eq!(hit_rate(1, 3), 0.25);
        assert_eq!(hit_rate(5, 0), 1.0);
    }
}
