//! The process's own figures, read from /proc at each scrape.

use super::catalog;

/// Sets the RSS gauge (Linux; elsewhere nothing).
pub fn collect() {
    if let Some(bytes) = resident_bytes() {
        metrics::gauge!(catalog::PROCESS_RSS).set(bytes as f64);
    }
}

/// Resident memory: `VmRSS` of `/proc/self/status`, in kB there.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_resident_size_is_read() {
        let bytes = super::resident_bytes().unwrap();
        assert!(bytes > 1 << 20 && bytes < 1 << 40, "{bytes}");
    }
}
