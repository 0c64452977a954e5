//! Command templates of the `exec` service: split into argv once, shell-like,
//! when the config is read, and rendered per session with each value inside
//! one argv item (see the syntax in [`super`]).

use crate::service::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

/// A parsed command template: argv items made of text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    argv: Vec<Vec<Piece>>,
}

impl Template {
    /// Parses a template (see the module docs for the syntax).
    pub fn parse(text: &str) -> Result<Self, String> {
        let words = split(text)?;
        if words.first().is_none_or(|w| w.is_empty()) {
            return Err("empty: give at least the program".into());
        }
        let argv = words
            .iter()
            .map(|w| pieces(w))
            .collect::<Result<Vec<_>, _>>()?;
        if argv[0].iter().any(|p| matches!(p, Piece::Var(_))) {
            return Err(format!(
                "the program {:?} takes no placeholder: the template fixes what runs",
                words[0]
            ));
        }
        Ok(Template { argv })
    }

    /// The placeholder names used, in order, with repetitions.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.argv.iter().flatten().filter_map(|p| match p {
            Piece::Var(name) => Some(name.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// The argv with each placeholder replaced by `value(name)`.
    pub fn render(
        &self,
        mut value: impl FnMut(&str) -> Result<String, Error>,
    ) -> Result<Vec<String>, Error> {
        self.argv
            .iter()
            .map(|item| {
                item.iter().try_fold(String::new(), |mut arg, piece| {
                    match piece {
                        Piece::Text(text) => arg.push_str(text),
                        Piece::Var(name) => arg.push_str(&value(name)?),
                    }
                    Ok(arg)
                })
            })
            .collect()
    }
}

/// Splits shell-like into words, honouring quotes and backslashes.
fn split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next().ok_or("a backslash ends the template")?);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Cuts a word into text and `{name}` placeholders.
fn pieces(word: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = word;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("{{") {
            text.push('{');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("}}") {
            text.push('}');
            rest = after;
        } else if c == '{' {
            let end = rest.find('}').ok_or_else(|| {
                format!("unclosed placeholder in {word:?} (write {{{{ for a brace)")
            })?;
            let name = &rest[1..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "placeholder {{{name}}} in {word:?}: names are letters, digits and _"
                ));
            }
            if !text.is_empty() {
                out.push(Piece::Text(std::mem::take(&mut text)));
            }
            out.push(Piece::Var(name.to_string()));
            rest = &rest[end + 1..];
        } else if c == '}' {
            return Err(format!("unmatched }} in {word:?} (write }}}} for a brace)"));
        } else {
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !text.is_empty() || out.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_like_a_shell_without_one() {
        assert_eq!(
            split(r#"ffmpeg  -i 'a b' "c \"d\" \x" e\ f ''"#).unwrap(),
            ["ffmpeg", "-i", "a b", r#"c "d" \x"#, "e f", ""]
        );
        // Shell syntax is just text: no operator means anything.
        assert_eq!(split("a;b | c $(d)").unwrap(), ["a;b", "|", "c", "$(d)"]);
        for (bad, expected) in [
            ("a 'b", "single quote"),
            ("a \"b", "double quote"),
            ("a \\", "backslash"),
        ] {
            assert!(split(bad).unwrap_err().contains(expected), "{bad}");
        }
    }
}
