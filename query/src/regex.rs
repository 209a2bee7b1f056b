//! `$regex` support: MongoDB regular expressions (PCRE) run on the `regex`
//! crate. Patterns are translated so that the constructs whose meaning
//! differs keep PCRE's meaning (`\d \w \s \b` are ASCII-only, `$` and `\Z`
//! also match before a final newline); constructs the crate cannot express
//! (backreferences, look-around, atomic groups, possessive quantifiers,
//! `\v \h \R \K \G \Q`…) are refused with `Unsupported`.

use super::QueryError;

/// A compiled MongoDB regular expression.
#[derive(Debug, Clone)]
pub(crate) struct MongoRegex {
    /// The pattern as given.
    pub(crate) pattern: String,
    /// The options as given (`imsxu`).
    pub(crate) options: String,
    compiled: regex::Regex,
}

impl MongoRegex {
    /// Compiles `pattern` with MongoDB `options`.
    pub(crate) fn new(pattern: &str, options: &str) -> Result<MongoRegex, QueryError> {
        if pattern.contains('\0') {
            return Err(location!(
                51091,
                "Regular expression cannot contain an embedded null byte"
            ));
        }
        let mut flags = String::new();
        let mut multiline = false;
        for c in options.chars() {
            match c {
                'i' | 's' => flags.push(c),
                'm' => {
                    multiline = true;
                    flags.push('m');
                }
                'x' => {
                    // PCRE and the regex crate disagree on whitespace inside
                    // classes; accept `x` only where it changes nothing.
                    if pattern.chars().any(|c| c.is_whitespace() || c == '#') {
                        return Err(QueryError::not_implemented(
                            "the regular expression option 'x' with whitespace or '#' in the pattern",
                        ));
                    }
                }
                'u' => {}
                other => {
                    return Err(location!(51108, "invalid flag in regex options: {other}"));
                }
            }
        }
        let body = translate(pattern, multiline)?;
        let full = if flags.is_empty() {
            body
        } else {
            format!("(?{flags}){body}")
        };
        let compiled = regex::RegexBuilder::new(&full)
            .size_limit(1 << 22)
            .build()
            .map_err(|e| {
                QueryError::Unsupported(format!(
                    "regular expression /{pattern}/ cannot be run by shardgate's query engine: {e}"
                ))
            })?;
        Ok(MongoRegex {
            pattern: pattern.to_owned(),
            options: options.to_owned(),
            compiled,
        })
    }

    /// Whether the expression matches somewhere in `text`.
    pub(crate) fn is_match(&self, text: &str) -> bool {
        self.compiled.is_match(text)
    }

    /// Whether a BSON regex value has the same pattern and options.
    pub(crate) fn same_as(&self, other: &bson::Regex) -> bool {
        other.pattern.as_str() == self.pattern && other.options.as_str() == self.options
    }
}

fn unsupported(what: &str) -> QueryError {
    QueryError::not_implemented(format!("the regular expression construct {what}"))
}

/// Rewrites a PCRE pattern into the regex crate's syntax.
fn translate(pattern: &str, multiline: bool) -> Result<String, QueryError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut in_class = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let Some(&next) = chars.get(i + 1) else {
                    return Err(location!(
                        51091,
                        "Regular expression is invalid: \\ at end of pattern"
                    ));
                };
                out.push_str(&translate_escape(next, in_class)?);
                i += 2;
                continue;
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                // A leading ']' (or '^]') is a literal in PCRE.
                if chars.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if chars.get(i + 1) == Some(&']') {
                    out.push_str("\\]");
                    i += 1;
                }
            }
            '[' => {
                if chars.get(i + 1) == Some(&':') {
                    // POSIX class such as [:alpha:]: copy through the ":]".
                    let end = find_posix_end(&chars, i + 2)
                        .ok_or_else(|| unsupported("'[:' without ':]'"))?;
                    out.extend(&chars[i..=end]);
                    i = end + 1;
                    continue;
                }
                out.push_str("\\[");
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '&' | '~' | '-' if in_class => {
                // The regex crate gives "&&", "~~" and "--" set meanings.
                if c == '-' && chars.get(i + 1) != Some(&'-') {
                    out.push('-');
                } else {
                    out.push('\\');
                    out.push(c);
                }
            }
            '$' if !in_class && !multiline => out.push_str("(?:\\n?\\z)"),
            '(' if !in_class => {
                check_group(&chars, i)?;
                out.push('(');
            }
            '+' if !in_class && i > 0 && is_quantifier_end(&chars, i - 1) => {
                return Err(unsupported("possessive quantifier"));
            }
            _ => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

fn find_posix_end(chars: &[char], from: usize) -> Option<usize> {
    (from..chars.len().saturating_sub(1))
        .find(|&j| chars[j] == ':' && chars[j + 1] == ']')
        .map(|j| j + 1)
}

/// Whether the character at `i` ends a quantifier (so a following `+` makes
/// it possessive).
fn is_quantifier_end(chars: &[char], i: usize) -> bool {
    let escaped = i > 0 && chars[i - 1] == '\\';
    !escaped
        && matches!(chars[i], '*' | '+' | '?' | '}')
        && !(chars[i] == '+' && i > 0 && is_quantifier_end(chars, i - 1))
}

fn check_group(chars: &[char], i: usize) -> Result<(), QueryError> {
    if chars.get(i + 1) != Some(&'?') {
        return Ok(());
    }
    let a = chars.get(i + 2).copied();
    let b = chars.get(i + 3).copied();
    match (a, b) {
        (Some('='), _) | (Some('!'), _) | (Some('<'), Some('=')) | (Some('<'), Some('!')) => {
            Err(unsupported("look-around"))
        }
        (Some('>'), _) => Err(unsupported("atomic group")),
        (Some('|'), _) => Err(unsupported("branch reset group")),
        (Some('#'), _) => Err(unsupported("comment group")),
        (Some(c), _) if c.is_ascii_digit() || c == 'R' || c == '&' || c == '+' || c == '(' => {
            Err(unsupported("recursion or condition"))
        }
        (Some('P'), Some('=')) | (Some('P'), Some('>')) => Err(unsupported("named backreference")),
        _ => check_inline_flags(&chars[i + 2..]),
    }
}

/// Inline `m` and `x` flags would change how the pattern was translated.
fn check_inline_flags(after: &[char]) -> Result<(), QueryError> {
    for &c in after {
        match c {
            'm' | 'x' => return Err(unsupported(&format!("inline flag '{c}'"))),
            ':' | ')' => return Ok(()),
            c if c.is_ascii_alphabetic() || c == '-' || c == '^' => {}
            _ => return Ok(()),
        }
    }
    Ok(())
}

fn translate_escape(next: char, in_class: bool) -> Result<String, QueryError> {
    let s = match next {
        'd' => class(in_class, "0-9", false),
        'D' => class(in_class, "0-9", true),
        'w' => class(in_class, "0-9A-Za-z_", false),
        'W' => class(in_class, "0-9A-Za-z_", true),
        's' => class(in_class, "\\t\\n\\x0B\\x0C\\r ", false),
        'S' => class(in_class, "\\t\\n\\x0B\\x0C\\r ", true),
        'b' if !in_class => "(?-u:\\b)".to_owned(),
        'B' if !in_class => "(?-u:\\B)".to_owned(),
        'Z' if !in_class => "(?:\\n?\\z)".to_owned(),
        'A' | 'z' if !in_class => format!("\\{next}"),
        '1'..='9' => return Err(unsupported("backreference")),
        'g' | 'k' => return Err(unsupported("backreference")),
        'v' | 'h' | 'V' | 'H' | 'R' | 'K' | 'G' | 'Q' | 'E' | 'N' | 'X' | 'C' | 'c' | 'e' | 'o'
        | '0' | 'b' | 'B' | 'Z' | 'A' | 'z' => return Err(unsupported(&format!("\\{next}"))),
        _ => format!("\\{next}"),
    };
    Ok(s)
}

fn class(in_class: bool, members: &str, negated: bool) -> String {
    match (in_class, negated) {
        (false, false) => format!("[{members}]"),
        (false, true) | (true, true) => format!("[^{members}]"),
        (true, false) => members.to_owned(),
    }
}
