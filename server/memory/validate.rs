//! Checks shared by the memory engine's requests.

use crate::error::Violations;

/// Longest namespace or collection name.
pub const MAX_NAME_BYTES: usize = 64;

/// Names of namespaces and collections match `[A-Za-z0-9_.-]{1,64}`: safe in
/// file names, URLs and logs.
pub fn check_name(field: &str, name: &str, v: &mut Violations) {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if !ok {
        v.add(
            field,
            format!("must match [A-Za-z0-9_.-]{{1,{MAX_NAME_BYTES}}}, got {name:?}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let mut v = Violations::new();
        check_name("name", "ok-name_1.2", &mut v);
        assert!(v.is_empty());
        check_name("name", "", &mut v);
        check_name("name", "has space", &mut v);
        check_name("name", &"x".repeat(65), &mut v);
        let Err(crate::error::Error::InvalidArgument(found)) = v.finish() else {
            panic!("three bad names")
        };
        assert_eq!(found.len(), 3);
    }
}
