//! Key-value memory: facts an agent keeps by namespace and key.
//!
//! Validates every request against documented limits before it reaches the
//! store, turns TTLs into expiry times, pages listings with opaque tokens, and
//! purges expired entries in the background. Every write returns only after
//! the store committed it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::validate::check_name;
use crate::common::blocking::with_store;
use crate::common::clock::now_ms;
use crate::common::page::{Page, decode_token, page_size};
use crate::error::{Error, Result, Violations};
use crate::store::{KvEntry, KvListQuery, KvStore, KvWrite};

/// Longest key.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value.
pub const MAX_VALUE_BYTES: usize = 4 * 1024 * 1024;
/// Longest content type.
pub const MAX_CONTENT_TYPE_BYTES: usize = 128;
/// Most metadata entries.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key or value.
pub const MAX_METADATA_BYTES: usize = 256;
/// Shortest TTL.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest TTL (100 years: beyond that, leave it unset).
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A Put, in domain terms.
#[derive(Debug, Clone)]
pub struct PutParams {
    /// Namespace.
    pub namespace: String,
    /// Key.
    pub key: String,
    /// Value.
    pub value: Vec<u8>,
    /// MIME type.
    pub content_type: String,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Time to live; None or zero for ever.
    pub ttl: Option<Duration>,
    /// Compare-and-set version (0: must not exist).
    pub if_version: Option<u64>,
}

/// A List, in domain terms.
#[derive(Debug, Clone)]
pub struct ListParams {
    /// Namespace.
    pub namespace: String,
    /// Key prefix.
    pub prefix: String,
    /// Page size; 0 means the default.
    pub page_size: usize,
    /// Token from the previous page.
    pub page_token: String,
    /// Include values.
    pub include_values: bool,
}

/// One entry as the engine returns it. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Namespace.
    pub namespace: String,
    /// Key within the namespace.
    pub key: String,
    /// The value (empty when listed without values).
    pub value: Vec<u8>,
    /// MIME type given at write.
    pub content_type: String,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// 1 for a new key, +1 per write.
    pub version: u64,
    /// First write of the key (since it last did not exist).
    pub created_at: i64,
    /// Latest write.
    pub updated_at: i64,
    /// When it expires, if ever.
    pub expires_at: Option<i64>,
}

impl From<KvEntry> for Entry {
    fn from(e: KvEntry) -> Self {
        let KvEntry {
            namespace,
            key,
            value,
            content_type,
            metadata,
            version,
            created_at,
            updated_at,
            expires_at,
        } = e;
        Entry {
            namespace,
            key,
            value,
            content_type,
            metadata,
            version,
            created_at,
            updated_at,
            expires_at,
        }
    }
}

/// The key-value memory engine.
#[derive(Debug, Clone)]
pub struct KvMemory {
    store: Arc<dyn KvStore>,
}

/// Where a List page ends, bound to the namespace and prefix it lists: a
/// token from another List is refused instead of silently skipping keys.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Cursor {
    namespace: String,
    prefix: String,
    /// The last key of the page.
    after: String,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

/// The cursor of a page token, if it is one.
fn decode_cursor(token: &str) -> Option<Cursor> {
    serde_json::from_str(&decode_token(token)?).ok()
}

fn check_namespace(namespace: &str, v: &mut Violations) {
    check_name("namespace", namespace, v);
}

fn check_key(key: &str, v: &mut Violations) {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        v.add(
            "key",
            format!("must be 1 to {MAX_KEY_BYTES} bytes, got {}", key.len()),
        );
    }
}

impl KvMemory {
    /// Key-value memory on `store`.
    pub fn new(store: Arc<dyn KvStore>) -> Self {
        Self { store }
    }

    /// Writes an entry; returns it as stored.
    pub async fn put(&self, p: PutParams) -> Result<Entry> {
        let mut v = Violations::new();
        check_namespace(&p.namespace, &mut v);
        check_key(&p.key, &mut v);
        if p.value.len() > MAX_VALUE_BYTES {
            v.add(
                "value",
                format!(
                    "is {} bytes, more than the limit of {MAX_VALUE_BYTES}",
                    p.value.len()
                ),
            );
        }
        if p.content_type.len() > MAX_CONTENT_TYPE_BYTES {
            v.add(
                "content_type",
                format!("must be at most {MAX_CONTENT_TYPE_BYTES} bytes"),
            );
        }
        if p.metadata.len() > MAX_METADATA_ENTRIES {
            v.add(
                "metadata",
                format!(
                    "has {} entries, more than {MAX_METADATA_ENTRIES}",
                    p.metadata.len()
                ),
            );
        }
        for (k, val) in &p.metadata {
            if k.is_empty() || k.len() > MAX_METADATA_BYTES || val.len() > MAX_METADATA_BYTES {
                v.add(
                    format!("metadata[{k:?}]"),
                    format!("keys must be 1 to {MAX_METADATA_BYTES} bytes and values at most {MAX_METADATA_BYTES}"),
                );
            }
        }
        let ttl = p.ttl.filter(|t| !t.is_zero());
        if let Some(t) = ttl
            && (t < MIN_TTL || t > MAX_TTL)
        {
            v.add(
                "ttl",
                format!("must be at least 1s and at most 100 years, got {t:?}"),
            );
        }
        v.finish()?;
        let now = now_ms();
        let expires_at =
            ttl.map(|t| now.saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX)));
        let write = KvWrite {
            namespace: p.namespace,
            key: p.key,
            value: p.value,
            content_type: p.content_type,
            metadata: p.metadata,
            expires_at,
        };
        let if_version = p.if_version;
        let stored = with_store(&self.store, move |s| s.kv_put(write, if_version, now)).await?;
        Ok(stored.into())
    }

    /// Reads an entry; NotFound when absent or expired.
    pub async fn get(&self, namespace: String, key: String) -> Result<Entry> {
        let mut v = Violations::new();
        check_namespace(&namespace, &mut v);
        check_key(&key, &mut v);
        v.finish()?;
        let name = format!("{namespace}/{key}");
        with_store(&self.store, move |s| s.kv_get(&namespace, &key, now_ms()))
            .await?
            .map(Entry::from)
            .ok_or(Error::NotFound { kind: "key", name })
    }

    /// Deletes an entry; false when there was none.
    pub async fn delete(
        &self,
        namespace: String,
        key: String,
        if_version: Option<u64>,
    ) -> Result<bool> {
        let mut v = Violations::new();
        check_namespace(&namespace, &mut v);
        check_key(&key, &mut v);
        v.finish()?;
        with_store(&self.store, move |s| {
            s.kv_delete(&namespace, &key, if_version, now_ms())
        })
        .await
    }

    /// One page of a namespace's entries in key order.
    pub async fn list(&self, p: ListParams) -> Result<Page<Entry>> {
        let mut v = Violations::new();
        check_namespace(&p.namespace, &mut v);
        if p.prefix.len() > MAX_KEY_BYTES {
            v.add("prefix", format!("must be at most {MAX_KEY_BYTES} bytes"));
        }
        let after = if p.page_token.is_empty() {
            None
        } else {
            match decode_cursor(&p.page_token) {
                Some(c) if c.namespace == p.namespace && c.prefix == p.prefix => Some(c.after),
                _ => {
                    v.add(
                        "page_token",
                        "is not a token from a previous List of this namespace and prefix",
                    );
                    None
                }
            }
        };
        v.finish()?;
        let limit = page_size(p.page_size);
        let (namespace, prefix) = (p.namespace.clone(), p.prefix.clone());
        let entries = with_store(&self.store, move |s| {
            s.kv_list(
                &KvListQuery {
                    namespace: &namespace,
                    prefix: &prefix,
                    after: after.as_deref(),
                    // One more than asked tells whether a next page exists.
                    limit: limit + 1,
                    with_values: p.include_values,
                },
                now_ms(),
            )
        })
        .await?;
        let cursor = |e: &KvEntry| Cursor {
            namespace: p.namespace.clone(),
            prefix: p.prefix.clone(),
            after: e.key.clone(),
        };
        Ok(Page::from_rows(entries, limit, |e| cursor(e).to_string()).map(Entry::from))
    }

    /// Deletes expired entries every `interval` until the returned task is
    /// aborted (or the runtime stops).
    pub fn spawn_purger(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let memory = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match with_store(&memory.store, |s| s.kv_purge_expired(now_ms())).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(purged = n, "expired memory entries deleted"),
                    Err(e) => tracing::warn!("purging expired memory entries: {e}"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn memory() -> KvMemory {
        KvMemory::new(Arc::new(SqliteStore::in_memory().unwrap()))
    }

    fn put(ns: &str, key: &str) -> PutParams {
        PutParams {
            namespace: ns.into(),
            key: key.into(),
            value: b"v".to_vec(),
            content_type: String::new(),
            metadata: BTreeMap::new(),
            ttl: None,
            if_version: None,
        }
    }

    #[tokio::test]
    async fn invalid_requests_name_every_bad_field() {
        let m = memory();
        let mut p = put("bad ns!", "");
        p.value = vec![0; MAX_VALUE_BYTES + 1];
        p.ttl = Some(Duration::from_millis(10));
        let Err(Error::InvalidArgument(v)) = m.put(p).await else {
            panic!("expected InvalidArgument")
        };
        let fields: Vec<&str> = v.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["namespace", "key", "value", "ttl"]);
    }

    #[tokio::test]
    async fn pages_chain_with_tokens_and_bad_tokens_are_refused() {
        let m = memory();
        for i in 0..25 {
            m.put(put("n", &format!("k{i:02}"))).await.unwrap();
        }
        let mut token = String::new();
        let mut seen = Vec::new();
        loop {
            let page = m
                .list(ListParams {
                    namespace: "n".into(),
                    prefix: "k".into(),
                    page_size: 10,
                    page_token: token.clone(),
                    include_values: false,
                })
                .await
                .unwrap();
            seen.extend(page.items.into_iter().map(|e| e.key));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen.len(), 25);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        let err = m
            .list(ListParams {
                namespace: "n".into(),
                prefix: "k".into(),
                page_size: 10,
                page_token: "zz".into(),
                include_values: false,
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("page_token"), "{err}");
        // A token is bound to the namespace and prefix it was made for.
        m.put(put("other", "k00")).await.unwrap();
        let first = m
            .list(ListParams {
                namespace: "n".into(),
                prefix: "k".into(),
                page_size: 10,
                page_token: String::new(),
                include_values: false,
            })
            .await
            .unwrap();
        for (namespace, prefix) in [("other", "k"), ("n", "k1")] {
            let err = m
                .list(ListParams {
                    namespace: namespace.into(),
                    prefix: prefix.into(),
                    page_size: 10,
                    page_token: first.next_page_token.clone(),
                    include_values: false,
                })
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("page_token"),
                "{namespace}/{prefix}: {err}"
            );
        }
    }
}
