//! Quoting: every identifier and literal that reaches SQL, and the encodings of URIs and
//! libpq keyword strings, go through here.

//! Statements and the decisions that produce them: pure text, no connection.

/// `"name"` with embedded double quotes doubled: a safe SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` with quotes doubled (and `E''` when there is a backslash): a safe SQL literal.
pub fn quote_literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// Percent-encode a URI's query value: everything but RFC 3986 unreserved characters and the
/// `/` and `:` a query may hold as they are, so that a file path stays readable and a revealed
/// URI has no `%` in it (tools that read `%` specially, Alembic's ini among them, take it).
pub fn query_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A libpq keyword/value string's value: as it is when it is plain, else single-quoted with
/// `\` and `'` escaped (libpq's rule).
pub fn libpq_value(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'/' | b':' | b'~')
        });
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// Percent-encode everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("ws_a-b"), "\"ws_a-b\"");
        assert_eq!(quote_ident("x\"y"), "\"x\"\"y\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
        assert_eq!(percent_encode("a b/c:d@e"), "a%20b%2Fc%3Ad%40e");
        assert_eq!(query_encode("/tmp/a b/ca.crt"), "/tmp/a%20b/ca.crt");
        assert_eq!(libpq_value("/tmp/ca.crt"), "/tmp/ca.crt");
        assert_eq!(libpq_value("it's a\\b"), "'it\\'s a\\\\b'");
        assert_eq!(libpq_value(""), "''");
    }
}
