//! The point id of every live label in an index, compactly.
//!
//! Searches that want neither payloads nor vectors answer from the index
//! alone, so it must map labels back to ids. A hash map of boxed strings
//! costs ~65 bytes a point at 100k points (entry, table slack, a heap block
//! per id); this table costs 16 bytes plus the id's bytes: the store hands
//! out labels in increasing order, so entries stay sorted by appending and
//! are found by binary search, and all ids share one byte arena. Removed
//! entries stay (marked) until the index is rebuilt, which compaction does
//! once tombstones pile up anyway.

use crate::error::{Error, Result};

/// Marks a removed entry.
const REMOVED: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Entry {
    label: i64,
    start: u32,
    len: u32,
}

/// Ids by label.
#[derive(Debug, Default)]
pub struct IdTable {
    /// Sorted by label.
    entries: Vec<Entry>,
    arena: Vec<u8>,
    live: usize,
}

impl IdTable {
    /// An empty table with room for `n` ids.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
            arena: Vec::with_capacity(n * 8),
            live: 0,
        }
    }

    /// Records `id` for a label not in the table.
    pub fn insert(&mut self, label: i64, id: &str) -> Result<()> {
        let start = u32::try_from(self.arena.len())
            .ok()
            .filter(|s| {
                s.checked_add(id.len() as u32)
                    .is_some_and(|end| end < REMOVED)
            })
            .ok_or_else(|| Error::Internal("index id table is full (4 GiB of ids)".into()))?;
        self.arena.extend_from_slice(id.as_bytes());
        let entry = Entry {
            label,
            start,
            len: id.len() as u32,
        };
        match self.entries.last() {
            Some(last) if last.label >= label => {
                // Not seen in practice (labels grow), but stay correct.
                let at = self.entries.partition_point(|e| e.label < label);
                self.entries.insert(at, entry);
            }
            _ => self.entries.push(entry),
        }
        self.live += 1;
        Ok(())
    }

    fn find(&self, label: i64) -> Option<usize> {
        self.entries
            .binary_search_by_key(&label, |e| e.label)
            .ok()
            .filter(|&i| self.entries[i].len != REMOVED)
    }

    /// Forgets a label's id; false if it had none.
    pub fn remove(&mut self, label: i64) -> bool {
        match self.find(label) {
            Some(i) => {
                self.entries[i].len = REMOVED;
                self.live -= 1;
                true
            }
            None => false,
        }
    }

    /// Whether the label has an id.
    pub fn contains(&self, label: i64) -> bool {
        self.find(label).is_some()
    }

    /// The label's id.
    pub fn get(&self, label: i64) -> Option<&str> {
        let e = self.entries[self.find(label)?];
        let bytes = &self.arena[e.start as usize..(e.start + e.len) as usize];
        // Only whole `&str`s go in, so slices of entries are valid UTF-8.
        std::str::from_utf8(bytes).ok()
    }

    /// Labels with an id.
    pub fn labels(&self) -> impl Iterator<Item = i64> + '_ {
        self.entries
            .iter()
            .filter(|e| e.len != REMOVED)
            .map(|e| e.label)
    }

    /// Labels with an id.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>() + self.arena.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_by_label_in_any_insertion_order() {
        let mut t = IdTable::with_capacity(4);
        t.insert(10, "ten").unwrap();
        t.insert(30, "thirty").unwrap();
        t.insert(20, "twenty").unwrap();
        t.insert(40, "").unwrap();
        assert_eq!(t.get(20), Some("twenty"));
        assert_eq!(t.get(40), Some(""));
        assert_eq!(t.get(25), None);
        assert!(t.remove(30));
        assert!(!t.remove(30));
        assert_eq!((t.get(30), t.contains(30), t.len()), (None, false, 3));
        assert_eq!(t.labels().collect::<Vec<_>>(), [10, 20, 40]);
        assert_eq!(t.get(10), Some("ten"));
    }
}
