//! Go's formatting as Kubernetes messages use it, so that messages read byte for byte as the
//! real API server's.

/// A string quoted as Go's `%q` (`strconv.Quote`) does: `"`, `\` and control characters
/// escaped (`\n`, `\x01`, `\u0085`), everything else as it is.
pub fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_like_go() {
        assert_eq!(
            go_quote("a\"b\\c\n\u{1}\u{85}é"),
            "\"a\\\"b\\\\c\\n\\x01\\u0085é\""
        );
    }
}
