//! The address lists of `From:` and `Sender:` (RFC 5322 section 3.4), read strictly.
//!
//! A lenient reader joins `<ceo@bank.example> <a@site1.example>` into one string, and
//! a check that looks after its last `@` sees `site1.example`. Here every mailbox
//! must be one addr-spec, on its own or in angle brackets after a display name, with
//! commas between mailboxes; groups (RFC 6854) are read as their members. Anything
//! else is an error, and the caller refuses the message. Display names may carry
//! UTF-8 (RFC 6532) and encoded words (RFC 2047), which are skipped, not decoded.

use super::address::{Mailbox, is_atext, is_dot_string, mailbox};

/// Why a value is not an address list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A run of atext and dots.
    Atom(Vec<u8>),
    /// A quoted string, unescaped.
    Quoted(Vec<u8>),
    /// A domain literal, brackets included.
    Literal(Vec<u8>),
    Special(u8),
}

/// Reads every mailbox of an address list (groups opened). An empty list, or one
/// with an empty group, is an error: a `From:` must name someone.
pub fn parse_address_list(value: &[u8]) -> Result<Vec<Mailbox>, ListError> {
    let out = list(value, false)?;
    if out.is_empty() {
        return Err(ListError);
    }
    Ok(out)
}

/// Reads every mailbox of a recipient list (`To:`, `Cc:`, `Bcc:`), as strictly;
/// unlike a `From:`, it may be empty or hold empty groups
/// (`undisclosed-recipients:;`).
pub fn parse_recipient_list(value: &[u8]) -> Result<Vec<Mailbox>, ListError> {
    if value.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Vec::new());
    }
    list(value, true)
}

fn list(value: &[u8], empty_groups: bool) -> Result<Vec<Mailbox>, ListError> {
    let tokens = tokenize(value)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        empty_groups,
    };
    let mut out = Vec::new();
    loop {
        p.address(&mut out)?;
        match p.next() {
            None => break,
            Some(Token::Special(b',')) => {}
            Some(_) => return Err(ListError),
        }
    }
    Ok(out)
}

/// Reads exactly one mailbox (as `Sender:` holds).
pub fn parse_single_mailbox(value: &[u8]) -> Result<Mailbox, ListError> {
    let tokens = tokenize(value)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        empty_groups: false,
    };
    let m = p.mailbox()?;
    if p.next().is_some() {
        return Err(ListError);
    }
    Ok(m)
}

fn tokenize(s: &[u8]) -> Result<Vec<Token>, ListError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => i = skip_comment(s, i)?,
            b'"' => {
                let (text, next) = quoted(s, i)?;
                out.push(Token::Quoted(text));
                i = next;
            }
            b'[' => {
                let end = s[i..].iter().position(|&c| c == b']').ok_or(ListError)? + i;
                let lit = &s[i..=end];
                if lit[1..lit.len() - 1]
                    .iter()
                    .any(|&c| matches!(c, b'[' | b'\\' | 0..=32 | 127))
                {
                    return Err(ListError);
                }
                out.push(Token::Literal(lit.to_vec()));
                i = end + 1;
            }
            b'<' | b'>' | b'@' | b',' | b':' | b';' => {
                out.push(Token::Special(b));
                i += 1;
            }
            _ if is_atext(b) || b == b'.' => {
                let end = atom_end(s, i);
                out.push(Token::Atom(s[i..end].to_vec()));
                i = end;
            }
            _ => return Err(ListError),
        }
    }
    Ok(out)
}

/// The end of the atom at `i`. An encoded word (RFC 2047) is no exception: encoders
/// put only atext in one, and a reader that took `=?...?=` as one opaque token would
/// hide the `<`, `,` and `@` that every other reader splits on.
fn atom_end(s: &[u8], i: usize) -> usize {
    let mut j = i;
    while j < s.len() && (is_atext(s[j]) || s[j] == b'.') {
        j += 1;
    }
    j
}

fn skip_comment(s: &[u8], mut i: usize) -> Result<usize, ListError> {
    let mut depth = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(ListError)
}

/// A quoted string starting at `i`: its unescaped text and the index after it.
/// Folding inside it is unfolded.
fn quoted(s: &[u8], mut i: usize) -> Result<(Vec<u8>, usize), ListError> {
    let mut text = Vec::new();
    i += 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Ok((text, i + 1)),
            b'\\' => {
                let c = *s.get(i + 1).ok_or(ListError)?;
                if c < 0x20 && c != b'\t' || c == 0x7f {
                    return Err(ListError);
                }
                text.push(c);
                i += 2;
            }
            b'\r' | b'\n' => i += 1,
            c if c < 0x20 && c != b'\t' || c == 0x7f => return Err(ListError),
            c => {
                text.push(c);
                i += 1;
            }
        }
    }
    Err(ListError)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Whether `name:;` may stand for no one.
    empty_groups: bool,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, c: u8) -> Result<(), ListError> {
        match self.next() {
            Some(Token::Special(x)) if x == c => Ok(()),
            _ => Err(ListError),
        }
    }

    /// The words before `<`, `:` or `@`.
    fn words(&mut self) -> Vec<Token> {
        let mut words = Vec::new();
        while let Some(t @ (Token::Atom(_) | Token::Quoted(_))) = self.peek() {
            words.push(t.clone());
            self.pos += 1;
        }
        words
    }

    /// A mailbox or a group (whose members are added).
    fn address(&mut self, out: &mut Vec<Mailbox>) -> Result<(), ListError> {
        let start = self.pos;
        let words = self.words();
        if !words.is_empty() && self.peek() == Some(&Token::Special(b':')) {
            self.pos += 1;
            if self.empty_groups && self.peek() == Some(&Token::Special(b';')) {
                self.pos += 1;
                return Ok(());
            }
            // An empty group names no one; readers disagree on what it leaves.
            loop {
                out.push(self.mailbox()?);
                match self.next() {
                    Some(Token::Special(b',')) => {}
                    Some(Token::Special(b';')) => return Ok(()),
                    _ => return Err(ListError),
                }
            }
        }
        self.pos = start;
        out.push(self.mailbox()?);
        Ok(())
    }

    /// `addr-spec` or `[display-name] "<" addr-spec ">"`.
    fn mailbox(&mut self) -> Result<Mailbox, ListError> {
        let words = self.words();
        match self.peek() {
            Some(Token::Special(b'<')) => {
                self.pos += 1;
                let local = self.words();
                let m = self.addr_spec(local)?;
                self.expect(b'>')?;
                Ok(m)
            }
            Some(Token::Special(b'@')) => self.addr_spec(words),
            _ => Err(ListError),
        }
    }

    /// `local-part "@" domain`, the local part already read as `local`, with the
    /// checks an envelope address gets.
    fn addr_spec(&mut self, local: Vec<Token>) -> Result<Mailbox, ListError> {
        let local = match local.as_slice() {
            [Token::Atom(a)] if is_dot_string(a) => a.clone(),
            [Token::Quoted(q)] => q.clone(),
            _ => return Err(ListError),
        };
        self.expect(b'@')?;
        let domain = match self.next() {
            Some(Token::Atom(d)) | Some(Token::Literal(d)) => d,
            _ => return Err(ListError),
        };
        mailbox(local, &domain).map_err(|_| ListError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Result<Vec<String>, ListError> {
        parse_address_list(s.as_bytes()).map(|v| v.iter().map(Mailbox::wire).collect())
    }

    #[test]
    fn valid_lists() {
        let ok = |s: &str, want: &[&str]| {
            assert_eq!(
                list(s),
                Ok(want.iter().map(|w| w.to_string()).collect()),
                "{s:?}"
            )
        };
        ok(" a@site1.example", &["a@site1.example"]);
        ok(
            " \"Site One\" <news@SITE1.example>",
            &["news@SITE1.example"],
        );
        ok(
            " =?UTF-8?Q?J=C3=B6rg?= <j@site1.example>",
            &["j@site1.example"],
        );

        ok(
            " J\u{f6}rg M. Smith <j@site1.example>",
            &["j@site1.example"],
        );
        ok(
            " a@site1.example, Alerts <alerts@site2.example>",
            &["a@site1.example", "alerts@site2.example"],
        );
        ok(
            " team: a@site1.example, b@site1.example;",
            &["a@site1.example", "b@site1.example"],
        );
        ok(
            " (comment) a@site1.example (another (nested))",
            &["a@site1.example"],
        );
        ok(" <a@site1.example>", &["a@site1.example"]);
        ok(" \"a b\"@site1.example", &["\"a b\"@site1.example"]);
        ok(
            " =?ISO-8859-1?B?SvZyZw==?= <j@site1.example>",
            &["j@site1.example"],
        );
        ok(
            " =?UTF-8?Q?J=C3=B6rg?=\r\n =?UTF-8?Q?_M?= <j@site1.example>",
            &["j@site1.example"],
        );
        ok(" x\r\n <a@site1.example>", &["a@site1.example"]);
        ok(" a@[192.0.2.1]", &["a@[192.0.2.1]"]);
    }

    #[test]
    fn defects_are_errors() {
        for bad in [
            "",
            " ",
            " Just A Name",
            " <ceo@bank.example> <a@site1.example>",
            " ceo@bank.example a@site1.example",
            " a@site1.example,",
            " ,a@site1.example",
            " a@@site1.example",
            " a@site1.example@x",
            " <a@site1.example",
            " a@site1.example>",
            " \"unterminated <a@site1.example>",
            " (unterminated a@site1.example",
            " a b@site1.example",
            " a..b@site1.example",
            " a@site1..example",
            " a@-x.example",
            " empty:;",
            " team: a@site1.example",
            " <@relay:a@site1.example>",
            " a@site1.example\u{1}",
            " \"x\u{1b}\"@site1.example",
            " undisclosed-recipients:;, ",
            " \"ceo@bank.example\":;, a@site1.example",
            " \"a@b\"@site1.example",
            " \"<ceo@bank.example>\"@site1.example",
            " a\u{85}b@site1.example",
            " a\u{202e}b@site1.example",
        ] {
            assert!(list(bad).is_err(), "{bad:?} -> {:?}", list(bad));
        }
    }

    /// Encoded words are atoms like any other: what they hide is read as every other
    /// reader reads it, and the bank.example address is there to be refused.
    #[test]
    fn encoded_words_hide_nothing() {
        for s in [
            " =?a?=<ceo@bank.example>,?b?= <a@site1.example>",
            " =?utf-8?q?<ceo@bank.example>,?= <a@site1.example>",
            " =?a?=ceo@bank.example,?b?=: a@site1.example;",
        ] {
            let got = list(s).unwrap_or_default();
            assert!(
                got.iter().any(|a| a.ends_with("@bank.example")),
                "{s:?} -> {got:?}"
            );
        }
    }

    #[test]
    fn single_mailbox() {
        assert_eq!(
            parse_single_mailbox(b" Bob <b@x.example>").unwrap().wire(),
            "b@x.example"
        );
        assert!(parse_single_mailbox(b" a@x.example, b@x.example").is_err());
        assert!(parse_single_mailbox(b" g: a@x.example;").is_err());
    }
}
