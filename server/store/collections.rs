//! Vector collection definitions: the [`CollectionStore`] trait.

use crate::error::Result;

/// A stored collection definition: the engine's own JSON, opaque here, so
/// the schema of definitions can grow without migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCollection {
    /// Unique name.
    pub name: String,
    /// The definition, as the memory engine serialised it.
    pub definition: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Points stored in it (ignored on create).
    pub points: u64,
}

/// Collection definitions.
pub trait CollectionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new collection; `AlreadyExists` if the name is taken.
    fn create_collection(&self, collection: &StoredCollection) -> Result<()>;

    /// The collection of that name.
    fn get_collection(&self, name: &str) -> Result<Option<StoredCollection>>;

    /// Collections in name order after `after`, at most `limit`.
    fn list_collections(&self, after: Option<&str>, limit: usize) -> Result<Vec<StoredCollection>>;

    /// Deletes the collection; false if there was none.
    fn delete_collection(&self, name: &str) -> Result<bool>;
}
