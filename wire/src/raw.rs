//! A minimal, allocation-free walk over the elements of raw BSON bytes.
//!
//! The hot paths (routing fields of a command, shard-key values of a
//! document, the `$sortKey` of a merged document) read a handful of
//! top-level fields; [`Elements`] yields each element's type byte, name and
//! value bytes with only bounds checks, so those reads cost a few
//! nanoseconds per element. Anything it finds malformed is reported as
//! [`Malformed`]; callers fall back to the `bson` crate's full parser,
//! which then gives the precise error. The walk is `#[inline]` so that it
//! compiles into the callers' loops in the other crates.

/// The bytes are not well-formed BSON (as far as the walk can tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// One element of a document: its BSON type byte, name and value bytes,
/// and where it sits in the document's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    /// The BSON element type (0x01 double … 0x13 decimal, 0x7F, 0xFF).
    pub kind: u8,
    /// The field name, without its NUL terminator (valid UTF-8).
    pub key: &'a [u8],
    /// The value bytes, exactly as BSON lays them out.
    pub value: &'a [u8],
    /// Offset of the element's type byte in the document.
    pub start: usize,
    /// Offset just past the element's value.
    pub end: usize,
}

/// The elements of one document (or array), in order.
pub struct Elements<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Elements<'a> {
    /// Walks `doc`, whose length prefix must match its size and whose last
    /// byte must be the terminating NUL.
    #[inline]
    pub fn new(doc: &'a [u8]) -> Result<Self, Malformed> {
        let len = read_len(doc, 0)?;
        if len != doc.len() || len < 5 || doc[len - 1] != 0 {
            return Err(Malformed);
        }
        Ok(Elements {
            bytes: doc,
            pos: 4,
            end: len - 1,
        })
    }

    /// The first element named `key`, `Ok(None)` when there is none. The
    /// elements before it are checked for their structure (type, sizes)
    /// but, unlike the iterator, not for their names' UTF-8: a name that
    /// equals `key` is valid, and the others are only stepped over.
    #[inline]
    pub fn find(mut self, key: &[u8]) -> Result<Option<Element<'a>>, Malformed> {
        while self.pos < self.end {
            let span = self.span()?;
            self.pos = span.value_end;
            if span.name(self.bytes) == key {
                return Ok(Some(span.element(self.bytes)));
            }
        }
        Ok(None)
    }

    /// The next element, `Ok(None)` at the end; its name is not checked for
    /// UTF-8 (for callers that only compare names with known ones).
    #[inline]
    pub fn step(&mut self) -> Result<Option<Element<'a>>, Malformed> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let span = self.span().inspect_err(|_| self.pos = self.end)?;
        self.pos = span.value_end;
        Ok(Some(span.element(self.bytes)))
    }

    /// The next element's type byte and value bytes (an array's items need
    /// no names), `Ok(None)` at the end; its name is not checked for UTF-8.
    #[inline]
    pub fn next_value(&mut self) -> Result<Option<(u8, &'a [u8])>, Malformed> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let span = self.span().inspect_err(|_| self.pos = self.end)?;
        self.pos = span.value_end;
        Ok(Some((
            span.kind,
            &self.bytes[span.value_start..span.value_end],
        )))
    }

    #[inline]
    fn next_element(&mut self) -> Result<Element<'a>, Malformed> {
        let span = self.span()?;
        let key = span.name(self.bytes);
        if !key.is_ascii() && std::str::from_utf8(key).is_err() {
            return Err(Malformed);
        }
        self.pos = span.value_end;
        Ok(span.element(self.bytes))
    }

    /// Where the element at the walk's position lies, its bounds checked
    /// against the end of the document.
    #[inline(always)]
    fn span(&self) -> Result<Span, Malformed> {
        let (bytes, start, end) = (self.bytes, self.pos, self.end);
        let kind = *bytes.get(start).ok_or(Malformed)?;
        let rest = bytes.get(start + 1..end).ok_or(Malformed)?;
        let nul = nul_position(rest).ok_or(Malformed)?;
        let value_start = start + 1 + nul + 1;
        let size = value_size(kind, bytes, value_start, end)?;
        let value_end = value_start.checked_add(size).ok_or(Malformed)?;
        if value_end > end {
            return Err(Malformed);
        }
        Ok(Span {
            kind,
            start,
            value_start,
            value_end,
        })
    }
}

/// An element's offsets in its document: `value_end` is at most the
/// document's end, the name runs from `start + 1` to the NUL before
/// `value_start`.
#[derive(Clone, Copy)]
struct Span {
    kind: u8,
    start: usize,
    value_start: usize,
    value_end: usize,
}

impl Span {
    #[inline(always)]
    fn name(self, bytes: &[u8]) -> &[u8] {
        &bytes[self.start + 1..self.value_start - 1]
    }

    #[inline(always)]
    fn element(self, bytes: &[u8]) -> Element<'_> {
        Element {
            kind: self.kind,
            key: self.name(bytes),
            value: &bytes[self.value_start..self.value_end],
            start: self.start,
            end: self.value_end,
        }
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<Element<'a>, Malformed>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let element = self.next_element();
        if element.is_err() {
            self.pos = self.end;
        }
        Some(element)
    }
}

/// The position of the first NUL in `bytes`, eight bytes at a time: a
/// field name is usually shorter than that, so one step finds its end with
/// no branch on each byte. In `word - 0x01…01 & !word & 0x80…80` the
/// lowest set bit marks the first zero byte (a borrow only marks bytes
/// above a zero one).
#[inline]
fn nul_position(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let zeros = word.wrapping_sub(ONES) & !word & HIGHS;
        if zeros != 0 {
            return Some(at + (zeros.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = bytes.get(at..)?;
    tail.iter().position(|&b| b == 0).map(|p| at + p)
}

/// `bytes` as text when they are UTF-8. Names and short strings are
/// nearly always ASCII: those are checked with one OR over the bytes
/// instead of the general validator's setup, which costs more than the
/// check itself on a few bytes.
#[inline]
pub fn text(bytes: &[u8]) -> Option<&str> {
    if bytes.len() <= 64 && bytes.iter().fold(0u8, |acc, b| acc | b) < 0x80 {
        // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).ok()
}

/// A little-endian `i32` length at `at`, as a non-negative `usize`.
#[inline]
fn read_len(bytes: &[u8], at: usize) -> Result<usize, Malformed> {
    let raw = bytes.get(at..at + 4).ok_or(Malformed)?;
    let len = i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    usize::try_from(len).map_err(|_| Malformed)
}

/// The size of the value of type `kind` starting at `at` (before `end`).
#[inline(always)]
fn value_size(kind: u8, bytes: &[u8], at: usize, end: usize) -> Result<usize, Malformed> {
    let cstring = |from: usize| -> Result<usize, Malformed> {
        let rest = bytes.get(from..end).ok_or(Malformed)?;
        Ok(rest.iter().position(|&b| b == 0).ok_or(Malformed)? + 1)
    };
    let size = match kind {
        0x06 | 0x0A | 0x7F | 0xFF => 0,
        0x08 => 1,
        0x10 => 4,
        0x01 | 0x09 | 0x11 | 0x12 => 8,
        0x07 => 12,
        0x13 => 16,
        0x02 | 0x0D | 0x0E => {
            let n = read_len(bytes, at)?;
            if n < 1 || bytes.get(at + 4 + n - 1) != Some(&0) {
                return Err(Malformed);
            }
            4 + n
        }
        0x03 | 0x04 | 0x0F => {
            let n = read_len(bytes, at)?;
            if n < 5 {
                return Err(Malformed);
            }
            n
        }
        0x05 => 5 + read_len(bytes, at)?,
        0x0B => {
            let pattern = cstring(at)?;
            pattern + cstring(at + pattern)?
        }
        0x0C => 4 + read_len(bytes, at)? + 12,
        _ => return Err(Malformed),
    };
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn walks_every_type_like_the_bson_crate() {
        let doc = bson::RawDocumentBuf::try_from(&bson::doc! {
            "d": 1.5, "s": "x", "o": {"a": 1}, "a": [1, 2], "n": null,
            "i": 7, "l": 9i64, "b": true, "u": bson::Bson::Undefined,
            "bin": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1, 2] },
            "ts": bson::Timestamp { time: 1, increment: 2 }, "min": bson::Bson::MinKey,
        })
        .unwrap();
        let ours: Vec<(Vec<u8>, Vec<u8>)> = Elements::new(doc.as_bytes())
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.key.to_vec(), doc.as_bytes()[e.start..e.end].to_vec()))
            .collect();
        assert_eq!(ours.len(), 12);
        let keys: Vec<&str> = doc.iter().map(|e| e.unwrap().0.as_str()).collect();
        for ((key, bytes), theirs) in ours.iter().zip(keys) {
            assert_eq!(key.as_slice(), theirs.as_bytes());
            assert_eq!(bytes[1..1 + key.len()], *key);
        }
        let s = Elements::new(doc.as_bytes())
            .unwrap()
            .find(b"s")
            .unwrap()
            .unwrap();
        assert_eq!((s.kind, s.value), (0x02, &[2, 0, 0, 0, b'x', 0][..]));
    }

    #[test]
    fn finds_the_first_nul_in_words_and_tails() {
        for len in 0..20 {
            for nul in 0..=len {
                let mut bytes: Vec<u8> = (0..len).map(|i| 0x80 | (i as u8 % 3)).collect();
                if nul < len {
                    bytes[nul] = 0;
                    // A later NUL, and a 0x01 right after the first one.
                    bytes[len - 1] = 0;
                    if nul + 1 < len - 1 {
                        bytes[nul + 1] = 1;
                    }
                }
                let expected = bytes.iter().position(|&b| b == 0);
                assert_eq!(nul_position(&bytes), expected, "{bytes:?}");
            }
        }
    }

    #[test]
    fn text_is_utf8_whatever_its_length() {
        let long_ascii = "a".repeat(100);
        let long_utf8 = "é".repeat(50);
        for ok in ["", "find", "$db", "é", "日本", &long_ascii, &long_utf8] {
            assert_eq!(text(ok.as_bytes()), Some(ok));
        }
        let mut long_bad = long_ascii.clone().into_bytes();
        long_bad[90] = 0xff;
        for bad in [&b"\xff"[..], b"a\xc3", b"\xed\xa0\x80", &long_bad] {
            assert_eq!(text(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn next_value_steps_over_names() {
        let doc = rawdoc! {"0": 1.5, "1": "x", "2": [1]};
        let mut items = Elements::new(doc.as_bytes()).unwrap();
        let mut kinds = Vec::new();
        while let Some((kind, value)) = items.next_value().unwrap() {
            kinds.push((kind, value.len()));
        }
        assert_eq!(kinds, vec![(0x01, 8), (0x02, 6), (0x04, 12)]);
        let mut bad = doc.as_bytes().to_vec();
        bad[18] = 200; // the string's length
        let mut items = Elements::new(&bad).unwrap();
        assert!(items.next_value().unwrap().is_some());
        assert_eq!(items.next_value(), Err(Malformed));
        assert_eq!(items.next_value(), Ok(None), "the walk stops at an error");
    }

    #[test]
    fn refuses_truncated_or_lying_lengths() {
        let doc = rawdoc! {"s": "abc", "i": 1};
        let bytes = doc.as_bytes();
        assert!(Elements::new(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.to_vec();
        bad[7] = 200; // the string's length
        let walked: Vec<_> = Elements::new(&bad).unwrap().collect();
        assert_eq!(walked, vec![Err(Malformed)]);
    }
}
