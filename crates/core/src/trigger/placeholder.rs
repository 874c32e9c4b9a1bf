//! Placeholders in a string (`{{name}}`) and the shell context they stand
//! in when the string is a step's `run` command.
//!
//! A string is split into literal text and placeholders once; values are
//! spliced in a single pass, so a value is never scanned again (a `{{` in a
//! value stays text). In a shell command every value is spliced as one
//! POSIX single-quoted word, which is inert only where the shell reads
//! quotes: outside any quotes (or inside `$(…)`). A placeholder anywhere else
//! (inside quotes, backticks, `${…}`, a comment, a here-document, after `\`
//! or `$`) is refused instead of guessed at.

use super::vars::{VarError, Vars};

/// A piece of a string: literal text or a placeholder's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// A `{{` that starts no placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// Byte offset of the `{{` in the string.
    pub(crate) offset: usize,
    pub(crate) message: String,
}

pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !name.ends_with('.')
}

const UNCLOSED: &str =
    "unclosed `{{`: a placeholder is written `{{name}}`; write `{{{{` for a literal `{{`";

/// Splits `s` into text and placeholders. `{{{{` is a literal `{{`.
pub(crate) fn pieces(s: &str) -> Result<Vec<Piece<'_>>, SyntaxError> {
    let mut out = Vec::new();
    let mut rest = s;
    let mut base = 0;
    while let Some(i) = rest.find("{{") {
        if i > 0 {
            out.push(Piece::Text(&rest[..i]));
        }
        let after = &rest[i + 2..];
        if let Some(tail) = after.strip_prefix("{{") {
            out.push(Piece::Text("{{"));
            base += i + 4;
            rest = tail;
            continue;
        }
        let Some(end) = after.find("}}") else {
            return Err(SyntaxError {
                offset: base + i,
                message: UNCLOSED.to_owned(),
            });
        };
        if after[..end].contains("{{") {
            return Err(SyntaxError {
                offset: base + i,
                message: UNCLOSED.to_owned(),
            });
        }
        let name = after[..end].trim();
        if !valid_name(name) {
            return Err(SyntaxError {
                offset: base + i,
                message: format!(
                    "`{{{{{}}}}}` is not a placeholder: a name is letters, digits, `_`, `-` and `.`, starting with a letter; write `{{{{{{{{` for a literal `{{{{`",
                    &after[..end]
                ),
            });
        }
        out.push(Piece::Var(name));
        let consumed = i + 2 + end + 2;
        base += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// POSIX single quotes: the value as one inert shell word.
pub fn shell_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    out.push_str(&value.replace('\'', r"'\''"));
    out.push('\'');
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nest {
    Bare,
    Paren,
    Double,
    Brace,
    Backtick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    None,
    Single,
    AnsiC,
    Comment,
}

/// Just enough of the POSIX shell's lexer to know whether a single-quoted
/// word would be read as one literal word at a given point.
#[derive(Debug)]
struct ShellScan {
    stack: Vec<Nest>,
    leaf: Leaf,
    escape: bool,
    heredoc: bool,
    prev: Option<char>,
}

impl ShellScan {
    fn new() -> ShellScan {
        ShellScan {
            stack: vec![Nest::Bare],
            leaf: Leaf::None,
            escape: false,
            heredoc: false,
            prev: None,
        }
    }

    fn top(&self) -> Nest {
        self.stack.last().copied().unwrap_or(Nest::Bare)
    }

    fn pop(&mut self) {
        if self.stack.len() > 1 {
            self.stack.pop();
        }
    }

    fn feed(&mut self, text: &str) {
        for c in text.chars() {
            self.step(c);
            self.prev = Some(c);
        }
    }

    fn step(&mut self, c: char) {
        if self.escape {
            self.escape = false;
            return;
        }
        match self.leaf {
            Leaf::Single => {
                if c == '\'' {
                    self.leaf = Leaf::None;
                }
                return;
            }
            Leaf::AnsiC => {
                match c {
                    '\\' => self.escape = true,
                    '\'' => self.leaf = Leaf::None,
                    _ => {}
                }
                return;
            }
            Leaf::Comment => {
                if c == '\n' {
                    self.leaf = Leaf::None;
                }
                return;
            }
            Leaf::None => {}
        }
        let dollar = self.prev == Some('$');
        match self.top() {
            top @ (Nest::Bare | Nest::Paren) => match c {
                '\\' => self.escape = true,
                '\'' if dollar => self.leaf = Leaf::AnsiC,
                '\'' => self.leaf = Leaf::Single,
                '"' => self.stack.push(Nest::Double),
                '`' => self.stack.push(Nest::Backtick),
                '(' if dollar => self.stack.push(Nest::Paren),
                '{' if dollar => self.stack.push(Nest::Brace),
                ')' if top == Nest::Paren => self.pop(),
                '#' if self
                    .prev
                    .is_none_or(|p| p.is_whitespace() || ";&|()<>".contains(p)) =>
                {
                    self.leaf = Leaf::Comment;
                }
                '<' if self.prev == Some('<') => self.heredoc = true,
                _ => {}
            },
            Nest::Double => match c {
                '\\' => self.escape = true,
                '"' => self.pop(),
                '`' => self.stack.push(Nest::Backtick),
                '(' if dollar => self.stack.push(Nest::Paren),
                '{' if dollar => self.stack.push(Nest::Brace),
                _ => {}
            },
            Nest::Brace => match c {
                '\\' => self.escape = true,
                '}' => self.pop(),
                '\'' => self.leaf = Leaf::Single,
                '"' => self.stack.push(Nest::Double),
                '(' if dollar => self.stack.push(Nest::Paren),
                '{' if dollar => self.stack.push(Nest::Brace),
                _ => {}
            },
            Nest::Backtick => match c {
                '\\' => self.escape = true,
                '`' => self.pop(),
                _ => {}
            },
        }
    }

    /// Where a placeholder would stand, when that is not a place where a
    /// single-quoted word is inert.
    fn refusal(&self) -> Option<&'static str> {
        if self.heredoc {
            return Some("after a here-document `<<` (its body is expanded)");
        }
        if self.escape {
            return Some("right after a backslash");
        }
        match self.leaf {
            Leaf::Single => return Some("inside single quotes"),
            Leaf::AnsiC => return Some("inside `$'…'` quotes"),
            Leaf::Comment => return Some("in a shell comment"),
            Leaf::None => {}
        }
        match self.top() {
            Nest::Double => Some("inside double quotes"),
            Nest::Brace => Some("inside `${…}`"),
            Nest::Backtick => Some("inside backticks"),
            Nest::Bare | Nest::Paren if self.prev == Some('$') => Some("right after `$`"),
            Nest::Bare | Nest::Paren => None,
        }
    }
}

/// Why a string could not be filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FillError {
    Syntax(SyntaxError),
    Var(VarError),
    Shell { name: String, context: &'static str },
}

impl FillError {
    /// Text to look for in the template's source to find the line.
    pub(crate) fn needle(&self, s: &str) -> String {
        match self {
            FillError::Syntax(e) => s[e.offset..].chars().take(12).collect(),
            FillError::Var(
                VarError::Unknown { name, .. }
                | VarError::Missing { name, .. }
                | VarError::NotScalar { name, .. },
            )
            | FillError::Shell { name, .. } => name.clone(),
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            FillError::Syntax(e) => e.message.clone(),
            FillError::Var(e) => e.to_string(),
            FillError::Shell { name, context } => format!(
                "placeholder `{{{{{name}}}}}` stands {context} in a shell command; write it outside any quotes: its value is single-quoted for the shell"
            ),
        }
    }
}

/// Fills the placeholders of `s`: values as they are, or, for a shell
/// command, as single-quoted words (refused where quotes would not hold).
pub(crate) fn fill(s: &str, shell: bool, vars: &Vars<'_>) -> Result<String, FillError> {
    let parts = pieces(s).map_err(FillError::Syntax)?;
    let mut out = String::with_capacity(s.len());
    let mut scan = ShellScan::new();
    for part in parts {
        match part {
            Piece::Text(t) => {
                out.push_str(t);
                if shell {
                    scan.feed(t);
                }
            }
            Piece::Var(name) => {
                let value = vars.get(name).map_err(FillError::Var)?;
                if shell {
                    if let Some(context) = scan.refusal() {
                        return Err(FillError::Shell {
                            name: name.to_owned(),
                            context,
                        });
                    }
                    out.push_str(&shell_quote(&value));
                    scan.prev = Some('\'');
                } else {
                    out.push_str(&value);
                }
            }
        }
    }
    Ok(out)
}

/// The placeholder names `s` uses (empty when it has a syntax error).
pub(crate) fn names(s: &str) -> Vec<&str> {
    pieces(s)
        .map(|p| {
            p.into_iter()
                .filter_map(|p| match p {
                    Piece::Var(n) => Some(n),
                    Piece::Text(_) => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars<'static> {
        let mut v = Vars::new();
        for (k, val) in pairs {
            v.insert(*k, *val);
        }
        v
    }

    #[test]
    fn pieces_split_text_and_names() {
        assert_eq!(
            pieces("a{{x}}b{{ y.z }}").unwrap(),
            vec![
                Piece::Text("a"),
                Piece::Var("x"),
                Piece::Text("b"),
                Piece::Var("y.z")
            ]
        );
        assert_eq!(
            pieces("f '{{{{.Id}}'").unwrap(),
            vec![Piece::Text("f '"), Piece::Text("{{"), Piece::Text(".Id}}'")]
        );
        let e = pieces("ab {{x").unwrap_err();
        assert_eq!(e.offset, 3);
        assert!(e.message.starts_with("unclosed `{{`"), "{}", e.message);
        let e = pieces("{{.Id}}").unwrap_err();
        assert!(
            e.message.contains("`{{.Id}}` is not a placeholder"),
            "{}",
            e.message
        );
    }

    #[test]
    fn plain_fields_take_values_as_they_are() {
        let v = vars(&[("item", "a'b\"c\n{{x}}")]);
        assert_eq!(fill("n-{{item}}", false, &v).unwrap(), "n-a'b\"c\n{{x}}");
    }

    #[test]
    fn shell_values_are_single_quoted_words() {
        let v = vars(&[("item", "'; rm -rf /; '"), ("n", "x")]);
        assert_eq!(
            fill("rpmlint {{item}} > out/{{n}}.txt", true, &v).unwrap(),
            r"rpmlint ''\''; rm -rf /; '\''' > out/'x'.txt"
        );
        // Inside $(…) quotes hold again, even within double quotes.
        assert_eq!(
            fill("echo \"$(basename {{n}})\"", true, &v).unwrap(),
            "echo \"$(basename 'x')\""
        );
        // Quotes that closed before the placeholder do not count.
        assert_eq!(
            fill("echo 'a' \"b\" {{n}}", true, &v).unwrap(),
            "echo 'a' \"b\" 'x'"
        );
    }

    #[test]
    fn shell_contexts_where_quotes_do_not_hold_are_refused() {
        let v = vars(&[("x", "v")]);
        let cases = [
            ("echo \"{{x}}\"", "inside double quotes"),
            ("echo '{{x}}'", "inside single quotes"),
            ("echo $'{{x}}'", "inside `$'…'` quotes"),
            ("echo `{{x}}`", "inside backticks"),
            ("echo ${A:-{{x}}}", "inside `${…}`"),
            ("true # {{x}}", "in a shell comment"),
            ("cat <<EOF\n{{x}}\nEOF", "after a here-document"),
            ("echo \\{{x}}", "right after a backslash"),
            ("echo ${{x}}", "right after `$`"),
        ];
        for (cmd, want) in cases {
            match fill(cmd, true, &v) {
                Err(FillError::Shell { context, .. }) => {
                    assert!(context.starts_with(want), "{cmd}: {context}");
                }
                other => panic!("{cmd}: {other:?}"),
            }
        }
        // `#` inside a word is no comment.
        assert_eq!(fill("echo a#b {{x}}", true, &v).unwrap(), "echo a#b 'v'");
    }
}
