//! `$regex` and BSON regex values in filters.

use bson::{doc, Bson, Document};

use super::{filter_error, matches, re};

fn check(table: Vec<(Document, Document, bool)>) {
    for (filter, doc, want) in table {
        assert_eq!(
            matches(filter.clone(), doc.clone()),
            want,
            "{filter} on {doc}"
        );
    }
}

#[test]
fn regex_matching() {
    check(vec![
        (
            doc! {"_id": re("^db\\.", "")},
            doc! {"_id": "db.coll"},
            true,
        ),
        (
            doc! {"_id": re("^db\\.", "")},
            doc! {"_id": "dbxcoll"},
            false,
        ),
        (
            doc! {"_id": re("^db\\.", "")},
            doc! {"_id": "other.db.c"},
            false,
        ),
        (
            doc! {"a": {"$regex": "^AB", "$options": "i"}},
            doc! {"a": "abc"},
            true,
        ),
        (doc! {"a": {"$regex": "^AB"}}, doc! {"a": "abc"}, false),
        (
            doc! {"a": {"$regex": re("^ab", "i")}},
            doc! {"a": "ABc"},
            true,
        ),
        (
            doc! {"a": {"$regex": re("^ab", "")}, "$comment": "x"},
            doc! {"a": "ab"},
            true,
        ),
        (doc! {"a": re("b", "")}, doc! {"a": ["x", "abc"]}, true),
        (doc! {"a": re("b", "")}, doc! {"a": 5}, false),
        (
            doc! {"a": re("b", "")},
            doc! {"a": Bson::Symbol("b".into())},
            true,
        ),
        (doc! {"a": re("b", "")}, doc! {"a": re("b", "")}, true),
        (doc! {"a": re("b", "")}, doc! {"a": re("b", "i")}, false),
        (doc! {"a": {"$eq": re("b", "")}}, doc! {"a": "b"}, false),
        (
            doc! {"a": {"$eq": re("b", "")}},
            doc! {"a": re("b", "")},
            true,
        ),
        (
            doc! {"a": {"$nin": [re("^x", "")]}},
            doc! {"a": "xy"},
            false,
        ),
    ]);
}

#[test]
fn pcre_semantics_are_kept() {
    check(vec![
        // `$` also matches before a final newline; with `m`, before any.
        (doc! {"a": re("c$", "")}, doc! {"a": "abc\n"}, true),
        (doc! {"a": re("c$", "")}, doc! {"a": "abc\nd"}, false),
        (doc! {"a": re("c$", "m")}, doc! {"a": "abc\nd"}, true),
        (doc! {"a": re("^d", "m")}, doc! {"a": "abc\nd"}, true),
        (doc! {"a": re("^d", "")}, doc! {"a": "abc\nd"}, false),
        (doc! {"a": re("c\\Z", "")}, doc! {"a": "abc\n"}, true),
        // \d, \w and \s are ASCII-only.
        (doc! {"a": re("^\\d$", "")}, doc! {"a": "٣"}, false),
        (doc! {"a": re("^\\d$", "")}, doc! {"a": "3"}, true),
        (doc! {"a": re("^\\w+$", "")}, doc! {"a": "héllo"}, false),
        (doc! {"a": re("^[\\w.]+$", "")}, doc! {"a": "a.b_c"}, true),
        (doc! {"a": re("^[^\\d]+$", "")}, doc! {"a": "ab"}, true),
        (doc! {"a": re("^\\S+$", "")}, doc! {"a": "a b"}, false),
        // `.` does not match a newline unless `s`.
        (doc! {"a": re("a.b", "")}, doc! {"a": "a\nb"}, false),
        (doc! {"a": re("a.b", "s")}, doc! {"a": "a\nb"}, true),
        (doc! {"a": re("^[]a]+$", "")}, doc! {"a": "]a]"}, true),
        (
            doc! {"a": re("^[[:alpha:]]+$", "")},
            doc! {"a": "abc"},
            true,
        ),
        (doc! {"a": re("a\\/b", "")}, doc! {"a": "a/b"}, true),
        (doc! {"a": re("^\\bab\\b", "")}, doc! {"a": "ab cd"}, true),
        (doc! {"a": re("^[a&&b]$", "")}, doc! {"a": "&"}, true),
        (doc! {"a": re("^ab", "x")}, doc! {"a": "abc"}, true),
    ]);
}

#[test]
fn constructs_pcre_has_but_regex_lacks_are_refused() {
    for pattern in [
        "(a)\\1", "a(?=b)", "(?<!a)b", "(?>a)", "a++", "\\v", "\\h", "(?m)a$", "\\Qa\\E",
    ] {
        assert_eq!(
            filter_error(doc! {"a": re(pattern, "")}),
            (1, "InternalError"),
            "{pattern}"
        );
    }
    assert_eq!(filter_error(doc! {"a": re("a b", "x")}).0, 1);
}
