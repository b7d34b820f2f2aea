//! Key-value memory storage: the [`KvStore`] trait and its row types.

use std::collections::BTreeMap;

use crate::error::Result;

/// One key-value entry as stored. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
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

/// A write of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvWrite {
    /// Namespace.
    pub namespace: String,
    /// Key.
    pub key: String,
    /// Value.
    pub value: Vec<u8>,
    /// MIME type.
    pub content_type: String,
    /// Metadata, replacing the previous.
    pub metadata: BTreeMap<String, String>,
    /// Expiry time, Unix milliseconds.
    pub expires_at: Option<i64>,
}

/// Key-value memory storage. An entry whose `expires_at` is not after `now`
/// does not exist for any of these calls.
pub trait KvStore: Send + Sync + std::fmt::Debug + 'static {
    /// Writes `write`. With `if_version`, only if the live version equals it
    /// (0: only if the key does not exist); otherwise `VersionConflict`.
    fn kv_put(&self, write: KvWrite, if_version: Option<u64>, now: i64) -> Result<KvEntry>;

    /// The live entry, with its value.
    fn kv_get(&self, namespace: &str, key: &str, now: i64) -> Result<Option<KvEntry>>;

    /// Deletes the live entry; false if there was none. With `if_version`,
    /// only if the live version equals it.
    fn kv_delete(
        &self,
        namespace: &str,
        key: &str,
        if_version: Option<u64>,
        now: i64,
    ) -> Result<bool>;

    /// Live entries of `namespace` whose key starts with `prefix` and sorts
    /// after `after`, in key order (bytewise), at most `limit`.
    fn kv_list(&self, query: &KvListQuery<'_>, now: i64) -> Result<Vec<KvEntry>>;

    /// Deletes expired entries; returns how many.
    fn kv_purge_expired(&self, now: i64) -> Result<u64>;
}

/// What `kv_list` returns.
#[derive(Debug, Clone, Copy)]
pub struct KvListQuery<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Key prefix; empty for all.
    pub prefix: &'a str,
    /// Only keys after this one (exclusive).
    pub after: Option<&'a str>,
    /// Most entries.
    pub limit: usize,
    /// Include values.
    pub with_values: bool,
}
