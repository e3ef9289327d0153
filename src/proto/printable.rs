//! Client-supplied text as it may appear in a log line or on a terminal.
//!
//! A HELO name, an address, a header value or a smarthost's reply (which often
//! echoes the client's words) can carry CR and LF (a forged log line), ESC (terminal
//! control sequences for whoever runs `tail` or `postern queue list`), other control
//! characters, and the Unicode format characters that reorder or hide text (bidi
//! overrides, zero-width characters). [`Printable`] writes every one of those as
//! `\u{…}`, and a backslash as `\\`, so the escaping cannot be forged. A value that
//! contains `=` or `"` is quoted, so that it cannot pose as another `key=value` field
//! of the same line. Anything else, non-ASCII letters included, is written as it is.

use std::fmt::{self, Display, Write};

/// Displays `T` with control and format characters escaped; see the module doc.
/// Use it for every client-supplied value in a log field (`sender = %Printable(&a)`)
/// and in CLI output.
pub struct Printable<T>(pub T);

impl<T: Display> Display for Printable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        escape(f, &text, text.contains(['=', '"']))
    }
}

/// Displays `T` with control and format characters (and backslashes) escaped as
/// [`Printable`] does, but never quoted: for text that is not a `key=value` field,
/// such as a DNS record in `postern doctor`'s report.
pub struct Escaped<T>(pub T);

impl<T: Display> Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape(f, &self.0.to_string(), false)
    }
}

fn escape(f: &mut fmt::Formatter<'_>, text: &str, quote: bool) -> fmt::Result {
    if quote {
        f.write_char('"')?;
    }
    for c in text.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '"' if quote => f.write_str("\\\"")?,
            c if hidden(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    if quote {
        f.write_char('"')?;
    }
    Ok(())
}

/// Characters that control a terminal or change how the text around them reads.
pub fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'   // zero-width spaces and joiners, LRM, RLM
            | '\u{2028}'..='\u{202e}' // line and paragraph separators, bidi embeddings
            | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, bidi isolates
            | '\u{feff}'              // zero-width no-break space (BOM)
            | '\u{fff9}'..='\u{fffb}' // interlinear annotations
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        Printable(s).to_string()
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        assert_eq!(p("alice@example.org"), "alice@example.org");
        assert_eq!(p("550 5.1.1 user unknown"), "550 5.1.1 user unknown");
        assert_eq!(p("jöhn@bücher.example"), "jöhn@bücher.example");
        assert_eq!(p(""), "");
    }

    #[test]
    fn controls_and_format_characters_are_escaped() {
        assert_eq!(
            p("x\r\n2026-01-01 INFO forged"),
            "x\\u{d}\\u{a}2026-01-01 INFO forged"
        );
        assert_eq!(
            p("\u{1b}[2J\u{1b}]0;pwned\u{7}"),
            "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"
        );
        assert_eq!(p("a\0b\tc\u{7f}\u{85}"), "a\\u{0}b\\u{9}c\\u{7f}\\u{85}");
        assert_eq!(
            p("evil\u{202e}gro.elpmaxe\u{200b}\u{2066}"),
            "evil\\u{202e}gro.elpmaxe\\u{200b}\\u{2066}"
        );
        assert_eq!(p("\u{2028}\u{feff}"), "\\u{2028}\\u{feff}");
    }

    #[test]
    fn escapes_cannot_be_forged_and_fields_cannot_be_faked() {
        // A literal backslash sequence stays distinguishable from an escape.
        assert_eq!(p("a\\u{1b}b"), "a\\\\u{1b}b");
        // A value cannot pose as another field.
        assert_eq!(p("a@b.example user=admin"), "\"a@b.example user=admin\"");
        assert_eq!(p("say \"hi\""), "\"say \\\"hi\\\"\"");
    }

    #[test]
    fn any_display_value_can_be_wrapped() {
        let reply = crate::proto::reply::Reply::plain(550, "no\u{1b}[31m");
        assert_eq!(Printable(&reply).to_string(), "550 no\\u{1b}[31m");
        assert_eq!(Printable(String::from("x\ny")).to_string(), "x\\u{a}y");
    }

    #[test]
    fn escaped_is_never_quoted() {
        assert_eq!(
            Escaped("v=spf1 \u{1b}[31m -all").to_string(),
            "v=spf1 \\u{1b}[31m -all"
        );
        assert_eq!(Escaped("a\\b \"c\"").to_string(), "a\\\\b \"c\"");
    }

    /// Nothing that comes out ever holds a character a terminal would act on.
    #[test]
    fn output_never_holds_a_hidden_character() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let out = p(&all);
        assert!(!out.chars().any(hidden), "{out:?}");
    }
}
