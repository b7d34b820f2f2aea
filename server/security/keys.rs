//! The keys file: one entry per API key, holding its SHA-256, never the
//! key. TOML (`[[keys]]` tables) or JSON (`{"keys": [...]}`), told apart by
//! the file's extension (`.json` is JSON, anything else TOML).
//!
//! A key is `agentd_` and 64 hex digits (32 random bytes from the
//! operating system). Its id (`key_` and 12 hex digits, random too) is
//! what logs and audit lines show; it says nothing about the key.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};

/// What a key may do. Each scope includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reads: Get, List, Search, Embed, Attach, Watch, GetQuery, ...
    Read,
    /// Reads and writes: Put, Upsert, Delete, Session, Spawn, SubmitTask,
    /// Work, ...
    Write,
    /// Everything: collections, specs, stats besides the above.
    Admin,
}

impl Scope {
    /// Its name in the keys file and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// The limits one key is held to; `None` is unlimited. (The keys file
/// holds them as fields of the key's entry.)
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KeyLimitSettings {
    /// Calls per second, on average.
    pub requests_per_second: Option<f64>,
    /// Calls that may come at once above the average [default: one
    /// second's worth, at least 1].
    pub burst: Option<u32>,
    /// Streaming calls open at once.
    pub max_streams: Option<u32>,
    /// Model tokens (prompt and completion) per minute over QueryControl.
    pub tokens_per_minute: Option<u64>,
}

/// One key as the keys file holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Public id, shown in logs and audit lines.
    pub id: String,
    /// A label for people (who or what uses the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// SHA-256 of the key, 64 lowercase hex digits.
    pub sha256: String,
    /// What the key may do.
    pub scope: Scope,
    /// Prefixes of the key-value namespaces and collection names the key
    /// may touch; empty: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Calls per second, on average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// Calls that may come at once above the average [default: one
    /// second's worth, at least 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Streaming calls open at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u32>,
    /// Model tokens (prompt and completion) per minute over QueryControl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// When it was made (RFC 3339), for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

/// A key just made: the key itself (shown once, stored nowhere) and its
/// entry.
#[derive(Debug)]
pub struct NewKey {
    /// The key to hand to the client.
    pub secret: String,
    /// What the keys file gets.
    pub entry: KeyEntry,
}

/// SHA-256 of a key.
pub fn hash_key(secret: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the operating system gave no random bytes"))?;
    Ok(bytes)
}

impl NewKey {
    /// Makes a key with these rights and limits.
    pub fn generate(
        scope: Scope,
        namespaces: Vec<String>,
        name: Option<String>,
        limits: KeyLimitSettings,
    ) -> anyhow::Result<NewKey> {
        let secret = format!("agentd_{}", hex(&random_bytes::<32>()?));
        let entry = KeyEntry {
            id: format!("key_{}", hex(&random_bytes::<6>()?)),
            name,
            sha256: hex(&hash_key(&secret)),
            scope,
            namespaces,
            requests_per_second: limits.requests_per_second,
            burst: limits.burst,
            max_streams: limits.max_streams,
            tokens_per_minute: limits.tokens_per_minute,
            created: Some(
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            ),
        };
        validate(std::slice::from_ref(&entry))?;
        Ok(NewKey { secret, entry })
    }
}

impl KeyEntry {
    /// The stored hash as bytes (validated when the file was read).
    pub fn hash(&self) -> [u8; 32] {
        unhex(&self.sha256).unwrap_or([0; 32])
    }

    /// Its limits.
    pub fn limits(&self) -> KeyLimitSettings {
        KeyLimitSettings {
            requests_per_second: self.requests_per_second,
            burst: self.burst,
            max_streams: self.max_streams,
            tokens_per_minute: self.tokens_per_minute,
        }
    }
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Parses a keys file's text (`path` tells the format) and checks every
/// entry.
pub fn parse_keys(path: &Path, text: &str) -> anyhow::Result<Vec<KeyEntry>> {
    let file: KeysFile = if is_json(path) {
        serde_json::from_str(text).with_context(|| format!("parsing {}", path.display()))?
    } else {
        toml::from_str(text).with_context(|| format!("parsing {}", path.display()))?
    };
    validate(&file.keys).with_context(|| format!("checking {}", path.display()))?;
    Ok(file.keys)
}

/// Reads and checks a keys file. A missing file is an error: a server told
/// to require keys must not start open because of a typo in the path.
pub fn read_keys(path: &Path) -> anyhow::Result<Vec<KeyEntry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the API keys file {}", path.display()))?;
    parse_keys(path, &text)
}

fn validate(keys: &[KeyEntry]) -> anyhow::Result<()> {
    let mut ids = HashSet::new();
    let mut hashes = HashSet::new();
    for key in keys {
        ensure!(
            !key.id.is_empty() && key.id.len() <= 64,
            "a key's id must be 1 to 64 characters, got {:?}",
            key.id
        );
        ensure!(ids.insert(&key.id), "key id {:?} appears twice", key.id);
        ensure!(
            unhex(&key.sha256).is_some(),
            "key {}: sha256 must be 64 hex digits",
            key.id
        );
        ensure!(
            hashes.insert(key.sha256.to_ascii_lowercase()),
            "key {}: the same sha256 appears twice",
            key.id
        );
        if key.namespaces.iter().any(String::is_empty) {
            bail!(
                "key {}: an empty namespace prefix would allow every namespace; leave `namespaces` out instead",
                key.id
            );
        }
        let l = key.limits();
        if let Some(rps) = l.requests_per_second {
            ensure!(
                rps.is_finite() && rps > 0.0,
                "key {}: requests_per_second must be above 0, got {rps}",
                key.id
            );
        }
        ensure!(
            l.burst != Some(0) && l.max_streams != Some(0) && l.tokens_per_minute != Some(0),
            "key {}: burst, max_streams and tokens_per_minute must be at least 1 when set",
            key.id
        );
        ensure!(
            l.burst.is_none() || l.requests_per_second.is_some(),
            "key {}: burst needs requests_per_second",
            key.id
        );
    }
    Ok(())
}

/// Writes `keys` to `path` in its format, through a temporary file renamed
/// over it: a server reloading meanwhile reads the old file or the new,
/// never half of one. Comments in a TOML file are not kept.
fn write_keys(path: &Path, keys: Vec<KeyEntry>) -> anyhow::Result<()> {
    let file = KeysFile { keys };
    let text = if is_json(path) {
        serde_json::to_string_pretty(&file)? + "\n"
    } else {
        let mut text = toml::to_string(&file)?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    };
    let tmp = path.with_extension("tmp-agentd-keys");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// Adds `entry` to the keys file at `path`, creating the file if needed.
pub fn add_key(path: &Path, entry: KeyEntry) -> anyhow::Result<()> {
    let mut keys = if path.exists() {
        read_keys(path)?
    } else {
        Vec::new()
    };
    keys.push(entry);
    validate(&keys)?;
    write_keys(path, keys)
}

/// Removes the key with id `id` from the keys file; false if there is none.
pub fn remove_key(path: &Path, id: &str) -> anyhow::Result<bool> {
    let mut keys = read_keys(path)?;
    let before = keys.len();
    keys.retain(|k| k.id != id);
    if keys.len() == before {
        return Ok(false);
    }
    write_keys(path, keys)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_hashes_to_its_entry_and_round_trips_through_both_formats() {
        let limits = KeyLimitSettings {
            requests_per_second: Some(5.0),
            burst: Some(10),
            max_streams: None,
            tokens_per_minute: Some(1000),
        };
        let made = NewKey::generate(
            Scope::Write,
            vec!["team-a/".into()],
            Some("ci".into()),
            limits,
        )
        .unwrap();
        assert!(made.secret.starts_with("agentd_") && made.secret.len() == 7 + 64);
        assert_eq!(made.entry.hash(), hash_key(&made.secret));
        assert!(!made.entry.sha256.contains(&made.secret[7..]));
        let other =
            NewKey::generate(Scope::Read, vec![], None, KeyLimitSettings::default()).unwrap();
        assert_ne!(made.secret, other.secret);
        assert_ne!(made.entry.id, other.entry.id);

        let dir = tempfile::tempdir().unwrap();
        for name in ["keys.toml", "keys.json"] {
            let path = dir.path().join(name);
            add_key(&path, made.entry.clone()).unwrap();
            add_key(&path, other.entry.clone()).unwrap();
            assert_eq!(
                read_keys(&path).unwrap(),
                vec![made.entry.clone(), other.entry.clone()]
            );
            let err = add_key(&path, made.entry.clone()).unwrap_err();
            assert!(format!("{err:#}").contains("appears twice"), "{err:#}");
            assert!(remove_key(&path, &made.entry.id).unwrap());
            assert!(!remove_key(&path, &made.entry.id).unwrap());
            assert_eq!(read_keys(&path).unwrap(), vec![other.entry.clone()]);
        }
    }

    #[test]
    fn bad_entries_are_refused_naming_the_key_and_the_rule() {
        let path = Path::new("keys.toml");
        let good = "[[keys]]\nid = \"k1\"\nsha256 = \"".to_owned()
            + &"ab".repeat(32)
            + "\"\nscope = \"read\"\n";
        assert_eq!(parse_keys(path, &good).unwrap().len(), 1);
        let cases = [
            (good.replace("ab", "zz"), "sha256 must be 64 hex digits"),
            (good.replace("\"read\"", "\"root\""), "unknown variant"),
            (
                good.clone() + "namespaces = [\"\"]\n",
                "empty namespace prefix",
            ),
            (
                good.clone() + "requests_per_second = 0\n",
                "requests_per_second must be above 0",
            ),
            (
                good.clone() + "burst = 3\n",
                "burst needs requests_per_second",
            ),
            (good.clone() + "max_streams = 0\n", "at least 1"),
            (good.clone() + "secret = \"x\"\n", "unknown field"),
            (
                good.clone() + &good.replace("k1", "k2"),
                "same sha256 appears twice",
            ),
        ];
        for (text, expected) in cases {
            let err = format!("{:#}", parse_keys(path, &text).unwrap_err());
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
    }

    #[test]
    fn scopes_include_the_ones_below() {
        assert!(Scope::Admin > Scope::Write && Scope::Write > Scope::Read);
        assert_eq!(Scope::Write.name(), "write");
    }
}
