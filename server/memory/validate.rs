//! Checks shared by the memory engine's requests.

use crate::error::{Error, FieldViolation, Result};

/// Longest namespace or collection name.
pub const MAX_NAME_BYTES: usize = 64;

/// Names of namespaces and collections match `[A-Za-z0-9_.-]{1,64}`: safe in
/// file names, URLs and logs.
pub fn check_name(field: &str, name: &str, out: &mut Vec<FieldViolation>) {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if !ok {
        out.push(FieldViolation::new(
            field,
            format!("must match [A-Za-z0-9_.-]{{1,{MAX_NAME_BYTES}}}, got {name:?}"),
        ));
    }
}

/// `Ok` when nothing was found wrong, else every violation at once.
pub fn finish(violations: Vec<FieldViolation>) -> Result<()> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

/// Hex of a key: page tokens are opaque to clients but need no state here.
pub fn encode_token(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The key of a page token, if it is one.
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

/// Page size for a request's `page_size`: 0 means 100, at most 1000.
pub fn page_size(requested: usize) -> usize {
    match requested {
        0 => 100,
        n => n.min(1000),
    }
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
    fn names_are_checked() {
        let mut v = Vec::new();
        check_name("name", "ok-name_1.2", &mut v);
        assert!(v.is_empty());
        check_name("name", "", &mut v);
        check_name("name", "has space", &mut v);
        check_name("name", &"x".repeat(65), &mut v);
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn page_sizes_default_and_clamp() {
        assert_eq!(
            (page_size(0), page_size(7), page_size(5000)),
            (100, 7, 1000)
        );
    }
}
