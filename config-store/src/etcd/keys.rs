//! Key and revision helpers of the etcd store.

/// Whether `prefix` is a usable key prefix: non-empty `/`-separated
/// segments of letters, digits, `.`, `_` and `-`.
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// The first key after every key that starts with `prefix` (etcd's range
/// end for a prefix).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub(super) fn revision_u64(revision: i64) -> u64 {
    u64::try_from(revision).unwrap_or(0)
}

pub(super) fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(valid_prefix("shardgate"));
        assert!(valid_prefix("prod/eu-1"));
        for bad in ["", "/", "a//b", "a/", "/a", "a b", "..", "a/../b", "a?x"] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
