//! The one paging policy of every List RPC.
//!
//! `page_size` 0 means [`DEFAULT_PAGE_SIZE`]; larger than [`MAX_PAGE_SIZE`]
//! is read as the maximum (as Google's AIP-158 asks: a client that wants
//! "as many as possible" is not an error). Page tokens are opaque to
//! clients: the hex of a cursor the engine chooses (the last key, name or
//! position of the page), so a token needs no server state and outlives a
//! restart.

/// Items per page when a request asks for none.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most items per page.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The page size for a request's `page_size`.
pub fn page_size(requested: usize) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// Token of the next page; empty on the last.
    pub next_page_token: String,
}

impl<T> Page<T> {
    /// The page from rows read in list order with one more than `limit`
    /// asked for: the first `limit` rows are the page, and an extra row
    /// means a next page exists, starting after the cursor of the page's
    /// last item.
    pub fn from_rows(mut rows: Vec<T>, limit: usize, cursor: impl Fn(&T) -> String) -> Self {
        let next_page_token = if rows.len() > limit {
            rows.truncate(limit);
            rows.last()
                .map(|last| encode_token(&cursor(last)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Page {
            items: rows,
            next_page_token,
        }
    }

    /// The same page with each item converted.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_page_token: self.next_page_token,
        }
    }
}

/// A cursor as a page token.
pub fn encode_token(cursor: &str) -> String {
    cursor.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The cursor of a List request's `page_token`: empty for the first page,
/// INVALID_ARGUMENT naming `page_token` for one this server did not return.
pub fn cursor(page_token: &str) -> crate::error::Result<String> {
    if page_token.is_empty() {
        return Ok(String::new());
    }
    decode_token(page_token).ok_or_else(|| {
        crate::error::Error::invalid(
            "page_token",
            "is not a next_page_token this server returned",
        )
    })
}

/// The cursor of a page token, if it is one.
pub fn decode_token(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for key in ["", "a", "k/é/東京"] {
            assert_eq!(decode_token(&encode_token(key)).as_deref(), Some(key));
        }
        assert_eq!(decode_token("0"), None);
        assert_eq!(decode_token("ff"), None, "not UTF-8");
    }

    #[test]
    fn page_sizes_default_and_clamp() {
        assert_eq!(
            (page_size(0), page_size(7), page_size(5000)),
            (100, 7, 1000)
        );
    }

    #[test]
    fn an_extra_row_makes_a_next_page_token() {
        let page = Page::from_rows(vec!["a", "b", "c"], 2, |s| s.to_string());
        assert_eq!(page.items, ["a", "b"]);
        assert_eq!(decode_token(&page.next_page_token).as_deref(), Some("b"));
        let last = Page::from_rows(vec!["a", "b"], 2, |s| s.to_string());
        assert_eq!(last.next_page_token, "");
    }
}
