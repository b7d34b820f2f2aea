//! The audit log: one JSON line per write, admin call and refused call,
//! saying who (the key's id, never the key), what (method, resource), from
//! where and how it ended.
//!
//! Lines go to a file of their own (appended, one `write` per line, so
//! lines from concurrent calls never interleave) or to the log under the
//! target `audit`.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;
use serde::Serialize;

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Nowhere.
    Off,
    /// The server's log, target `audit`, level INFO.
    Log,
    /// A file, appended to.
    File(PathBuf),
}

impl std::str::FromStr for AuditTarget {
    type Err = std::convert::Infallible;

    /// `off`, `log`, or a file path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "off" => AuditTarget::Off,
            "log" => AuditTarget::Log,
            path => AuditTarget::File(PathBuf::from(path)),
        })
    }
}

/// One audited call.
#[derive(Debug, Serialize)]
pub struct AuditEntry<'a> {
    /// The id of the key that made the call; `null` without one.
    pub key: Option<&'a str>,
    /// The gRPC method path, e.g. `/agentd.v1.MemoryService/Upsert`.
    pub method: &'a str,
    /// What it was about (`collection:docs`), when the handler got that far.
    pub resource: Option<&'a str>,
    /// The gRPC status code name it ended with (`OK`, `PERMISSION_DENIED`).
    pub code: &'a str,
    /// The client's address.
    pub peer: Option<String>,
    /// The request id, as in the server's log.
    pub request_id: &'a str,
    /// How long the call took.
    pub elapsed_ms: f64,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    entry: &'a AuditEntry<'a>,
}

#[derive(Debug)]
enum Sink {
    Off,
    Log,
    File { path: PathBuf, file: Mutex<File> },
}

/// Writes audit lines to their target.
#[derive(Debug)]
pub struct AuditLog {
    sink: Sink,
}

impl AuditLog {
    /// Opens `target` (a file is created if missing and appended to).
    pub fn open(target: &AuditTarget) -> anyhow::Result<AuditLog> {
        let sink = match target {
            AuditTarget::Off => Sink::Off,
            AuditTarget::Log => Sink::Log,
            AuditTarget::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening the audit log {}", path.display()))?;
                Sink::File {
                    path: path.clone(),
                    file: Mutex::new(file),
                }
            }
        };
        Ok(AuditLog { sink })
    }

    /// No audit lines at all.
    pub fn off() -> AuditLog {
        AuditLog { sink: Sink::Off }
    }

    /// Whether lines go anywhere.
    pub fn is_on(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    /// Writes one line.
    pub fn record(&self, entry: &AuditEntry<'_>) {
        match &self.sink {
            Sink::Off => {}
            Sink::Log => {
                let json = serde_json::to_string(entry).unwrap_or_default();
                tracing::info!(target: "audit", "{json}");
            }
            Sink::File { path, file } => {
                let line = Line {
                    time: humantime::format_rfc3339_millis(std::time::SystemTime::now())
                        .to_string(),
                    entry,
                };
                let mut text = serde_json::to_string(&line).unwrap_or_default();
                text.push('\n');
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = file.write_all(text.as_bytes()) {
                    tracing::error!(path = %path.display(), error = %e, "writing the audit log");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_as_json_with_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let log = AuditLog::open(&AuditTarget::File(path.clone())).unwrap();
        for code in ["OK", "PERMISSION_DENIED"] {
            log.record(&AuditEntry {
                key: Some("key_0123"),
                method: "/agentd.v1.MemoryService/Put",
                resource: Some("namespace:a"),
                code,
                peer: Some("127.0.0.1:5000".into()),
                request_id: "r1",
                elapsed_ms: 0.5,
            });
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["code"], "PERMISSION_DENIED");
        assert_eq!(lines[1]["key"], "key_0123");
        assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!("off".parse::<AuditTarget>().unwrap(), AuditTarget::Off);
        assert_eq!(
            "/var/log/a.jsonl".parse::<AuditTarget>().unwrap(),
            AuditTarget::File("/var/log/a.jsonl".into())
        );
    }
}
