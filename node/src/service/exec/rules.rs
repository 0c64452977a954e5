//! What a client may put into an `exec` template's placeholders: a rule per
//! placeholder from the operator's config (`name`, `number`, `media`,
//! `regex`), a conservative character set for the others, and refusals
//! that every value meets, whatever its rule: nothing that climbs out of a
//! directory (`..`), names an absolute path (`/...`) or reads as a URL
//! (`file:`, `http:`), unless the template opts in (`allow_paths`,
//! `allow_urls`); never a leading `-` or a control character.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

use super::template::Template;
use crate::service::Error;

/// Longest value substituted.
pub const MAX_VALUE_LEN: usize = 512;

/// Placeholders the node fills in from the session: never client values.
pub(super) const BUILTINS: [&str; 7] = [
    "id",
    "client",
    "client_host",
    "client_port",
    "gate",
    "elapsed_ms",
    "elapsed_s",
];

/// Largest compiled pattern (the `regex` crate's size limit): a pattern is
/// the operator's, but one typo should not cost the node its memory.
const MAX_PATTERN_SIZE: usize = 1 << 20;

/// One template of `[services.exec]`: a command line alone (`name =
/// "prog {x}"`), or a table with the command, rules for its placeholders
/// and opt-ins.
///
/// ```toml
/// [services.exec.transcode]
/// command = "ffmpeg -re -i {input} -b:a {kbps}k -f rtp rtp://{client}"
/// params = { input = "media", kbps = { kind = "number", min = 8, max = 256 } }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateConfig {
    /// The command line (syntax in [`super`]).
    pub command: String,
    /// Rules by placeholder; placeholders without one take the default.
    pub params: BTreeMap<String, RuleConfig>,
    /// Values of this template may read as URLs (`scheme:...`).
    pub allow_urls: bool,
    /// Values of this template may hold `..` and begin with `/`.
    pub allow_paths: bool,
}

/// The rule of one placeholder: a kind alone (`"name"`, `"number"`,
/// `"media"`), or a table with the kind's options (`{ kind = "number", min
/// = 1, max = 10 }`, `{ kind = "regex", pattern = "[a-z]{2}" }`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleConfig {
    /// `name`, `number`, `media` or `regex`.
    pub kind: String,
    /// `number`: the smallest value accepted.
    pub min: Option<u64>,
    /// `number`: the largest value accepted.
    pub max: Option<u64>,
    /// `regex`: what a whole value must match (anchored by the node).
    pub pattern: Option<String>,
    /// `url`: the `http://` or `https://` prefixes a value must begin with,
    /// each ending in `/`.
    pub prefixes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateTable {
    command: String,
    #[serde(default)]
    params: BTreeMap<String, RuleConfig>,
    #[serde(default)]
    allow_urls: bool,
    #[serde(default)]
    allow_paths: bool,
}

impl From<String> for TemplateConfig {
    fn from(command: String) -> Self {
        TemplateConfig {
            command,
            ..TemplateConfig::default()
        }
    }
}

impl From<TemplateTable> for TemplateConfig {
    fn from(t: TemplateTable) -> Self {
        TemplateConfig {
            command: t.command,
            params: t.params,
            allow_urls: t.allow_urls,
            allow_paths: t.allow_paths,
        }
    }
}

impl<'de> Deserialize<'de> for TemplateConfig {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringOrTable::<Self, TemplateTable>(PhantomData))
    }
}

impl From<String> for RuleConfig {
    fn from(kind: String) -> Self {
        RuleConfig {
            kind,
            ..RuleConfig::default()
        }
    }
}

/// `RuleConfig`'s table form, read by the derived code.
#[derive(Deserialize)]
#[serde(remote = "RuleConfig", deny_unknown_fields)]
struct RuleTable {
    kind: String,
    min: Option<u64>,
    max: Option<u64>,
    pattern: Option<String>,
    prefixes: Option<Vec<String>>,
}

/// Reads a `T` written as a string or as a table (`Table`), so that the
/// short form of the common case and the full form both read, and a
/// mistake in the full form is reported by key, not as "no variant
/// matched".
struct StringOrTable<T, Table>(PhantomData<(T, Table)>);

impl<'de, T, Table> Visitor<'de> for StringOrTable<T, Table>
where
    T: From<String> + From<Table>,
    Table: Deserialize<'de>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a table")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok(T::from(v.to_owned()))
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<T, M::Error> {
        Table::deserialize(de::value::MapAccessDeserializer::new(map)).map(T::from)
    }
}

/// `RuleConfig`'s table form as a type of its own, for [`StringOrTable`].
struct RuleForm(RuleConfig);

impl<'de> Deserialize<'de> for RuleForm {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RuleTable::deserialize(d).map(RuleForm)
    }
}

impl From<RuleForm> for RuleConfig {
    fn from(form: RuleForm) -> Self {
        form.0
    }
}

impl<'de> Deserialize<'de> for RuleConfig {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringOrTable::<Self, RuleForm>(PhantomData))
    }
}

/// A placeholder's rule, checked.
#[derive(Debug, Clone)]
enum Rule {
    /// Letters, digits, `-`, `_` and `.`; not beginning with `.`.
    Name,
    /// Decimal digits, within bounds.
    Number { min: Option<u64>, max: Option<u64> },
    /// A file in the node's media directory; the node substitutes its
    /// resolved path.
    Media,
    /// What the operator's pattern matches, whole.
    Pattern(regex::Regex),
    /// An `http(s)` URL under one of the operator's prefixes.
    Url(Vec<String>),
    /// Letters, digits and `. _ : / @ % + = , -` (placeholders without a
    /// rule).
    Default,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Name => f.write_str("name"),
            Rule::Number { min, max } => {
                f.write_str("number")?;
                match (min, max) {
                    (Some(min), Some(max)) => write!(f, " {min} to {max}"),
                    (Some(min), None) => write!(f, " from {min}"),
                    (None, Some(max)) => write!(f, " up to {max}"),
                    (None, None) => Ok(()),
                }
            }
            Rule::Media => f.write_str("media"),
            Rule::Pattern(re) => write!(f, "regex {}", re.as_str()),
            Rule::Url(prefixes) => write!(f, "url under {}", prefixes.join(" or ")),
            Rule::Default => f.write_str("default"),
        }
    }
}

/// The rules of one template.
#[derive(Debug, Clone, Default)]
pub(super) struct Rules {
    params: BTreeMap<String, Rule>,
    allow_urls: bool,
    allow_paths: bool,
}

impl Rules {
    /// Checks the rules of `config` against its parsed `template`; the
    /// error names the field at fault (`params.kbps: ...`).
    pub(super) fn new(
        config: &TemplateConfig,
        template: &Template,
        media_dir: Option<&Path>,
    ) -> Result<Self, String> {
        let mut params = BTreeMap::new();
        for (key, rule) in &config.params {
            let bad = |why: String| format!("params.{key}: {why}");
            if BUILTINS.contains(&key.as_str()) {
                return Err(bad(
                    "the node fills it in from the session: it takes no rule".into(),
                ));
            }
            if key == "template" {
                return Err(bad("names the template: it takes no rule".into()));
            }
            if !template.placeholders().any(|p| p == key) {
                return Err(bad(format!(
                    "the command has no placeholder {{{key}}}: remove the rule or use it"
                )));
            }
            params.insert(key.clone(), Rule::new(rule, media_dir).map_err(bad)?);
        }
        Ok(Rules {
            params,
            allow_urls: config.allow_urls,
            allow_paths: config.allow_paths,
        })
    }

    /// Checks a client's value for placeholder `key` and answers what to
    /// substitute: the value itself, or for a `media` placeholder the
    /// file's resolved path.
    pub(super) fn value(
        &self,
        key: &str,
        value: &str,
        media_dir: Option<&Path>,
    ) -> Result<String, Error> {
        let rule = self.params.get(key).unwrap_or(&Rule::Default);
        let refuse = |why: &str| Error::param(key, format!("{why} (rule: {rule})"));
        // A url rule takes URLs by nature; its prefixes bound them.
        let allow_urls = self.allow_urls || matches!(rule, Rule::Url(_));
        refusals(value, self.allow_paths, allow_urls).map_err(|why| refuse(&why))?;
        match rule {
            Rule::Default => default_charset(value).map_err(refuse)?,
            Rule::Name => {
                let ok = value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !ok || value.starts_with('.') {
                    return Err(refuse(
                        "expected letters, digits, - _ and ., not beginning with .",
                    ));
                }
            }
            Rule::Number { min, max } => {
                if !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(refuse("expected decimal digits"));
                }
                let n: u64 = value.parse().map_err(|_| refuse("too large"))?;
                if min.is_some_and(|min| n < min) || max.is_some_and(|max| n > max) {
                    return Err(refuse("out of bounds"));
                }
            }
            Rule::Pattern(re) => {
                if !re.is_match(value) {
                    return Err(refuse("does not match the template's pattern"));
                }
            }
            Rule::Url(prefixes) => {
                let Some(rest) = prefixes.iter().find_map(|p| value.strip_prefix(p.as_str()))
                else {
                    return Err(refuse("not under a prefix the operator allows"));
                };
                // Dot segments, plain or percent-encoded, and encoded
                // separators climb out of the prefix on most servers.
                let lower = rest.to_ascii_lowercase();
                let escapes = lower.split(['/', '?', '#']).any(|seg| seg == "..")
                    || ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e));
                if escapes {
                    return Err(refuse(
                        "after the prefix: no .. segment and no encoded . / or \\",
                    ));
                }
                if !rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~/%=&?+,:@".contains(c))
                {
                    return Err(refuse(
                        "after the prefix: letters, digits and - . _ ~ / % = & ? + , : @ only",
                    ));
                }
            }
            Rule::Media => {
                let path = media(value, media_dir).map_err(|why| match why {
                    Media::Refused(why) => refuse(&why),
                    Media::Dir(e) => e,
                })?;
                return path.into_os_string().into_string().map_err(|_| {
                    refuse("the file's path is not UTF-8: rename it in the media directory")
                });
            }
        }
        Ok(value.to_string())
    }
}

impl Rule {
    fn new(config: &RuleConfig, media_dir: Option<&Path>) -> Result<Self, String> {
        let RuleConfig {
            kind,
            min,
            max,
            pattern,
            prefixes,
        } = config;
        let only = |allowed: &[&str]| -> Result<(), String> {
            for (option, set) in [
                ("min", min.is_some()),
                ("max", max.is_some()),
                ("pattern", pattern.is_some()),
                ("prefixes", prefixes.is_some()),
            ] {
                if set && !allowed.contains(&option) {
                    return Err(format!("kind {kind} takes no {option}"));
                }
            }
            Ok(())
        };
        match kind.as_str() {
            "name" => only(&[]).map(|()| Rule::Name),
            "number" => {
                only(&["min", "max"])?;
                if let (Some(min), Some(max)) = (min, max)
                    && min > max
                {
                    return Err(format!("min {min} is above max {max}"));
                }
                Ok(Rule::Number {
                    min: *min,
                    max: *max,
                })
            }
            "media" => {
                only(&[])?;
                if media_dir.is_none() {
                    return Err(
                        "kind media reads files from media_dir: set it in [services]".into(),
                    );
                }
                Ok(Rule::Media)
            }
            "regex" => {
                only(&["pattern"])?;
                let pattern = pattern
                    .as_deref()
                    .ok_or("kind regex needs a pattern = \"...\"")?;
                regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(MAX_PATTERN_SIZE)
                    .build()
                    .map(Rule::Pattern)
                    .map_err(|e| format!("pattern {pattern:?}: {e}"))
            }
            "url" => {
                only(&["prefixes"])?;
                let prefixes = prefixes
                    .clone()
                    .filter(|p| !p.is_empty())
                    .ok_or("kind url needs prefixes = [\"https://host/path/\", ...]")?;
                for prefix in &prefixes {
                    let host = prefix
                        .strip_prefix("https://")
                        .or_else(|| prefix.strip_prefix("http://"));
                    let ok = host.is_some_and(|h| {
                        h.find('/').is_some_and(|slash| slash > 0)
                            && h.chars().all(|c| c.is_ascii_graphic())
                    }) && prefix.ends_with('/');
                    if !ok {
                        return Err(format!(
                            "prefix {prefix:?}: expected http:// or https://, a host, and a \
                             path ending in / (so that no value can change the host)"
                        ));
                    }
                }
                Ok(Rule::Url(prefixes))
            }
            other => Err(format!(
                "unknown kind {other:?}: expected name, number, media, regex or url"
            )),
        }
    }
}

/// What every client value meets, whatever its rule. `Err` says why.
pub(super) fn refusals(
    value: &str,
    allow_paths: bool,
    allow_urls: bool,
) -> Result<(), Cow<'static, str>> {
    if value.is_empty() || value.len() > MAX_VALUE_LEN {
        return Err(format!("expected 1 to {MAX_VALUE_LEN} characters").into());
    }
    if value.chars().any(char::is_control) {
        return Err("control characters are never accepted".into());
    }
    if value.starts_with('-') {
        return Err("may not begin with - (it would read as an option)".into());
    }
    if !allow_paths && value.contains("..") {
        return Err(
            "may not hold .. (it climbs out of a directory; the template does not \
             set allow_paths)"
                .into(),
        );
    }
    if !allow_paths && value.starts_with('/') {
        return Err(
            "may not begin with / (an absolute path; the template does not set \
             allow_paths)"
                .into(),
        );
    }
    if !allow_urls && has_scheme(value) {
        return Err(
            "may not begin with a URL scheme such as file: or http: (the template \
             does not set allow_urls)"
                .into(),
        );
    }
    Ok(())
}

/// Whether `value` begins like a URL (RFC 3986 scheme, then `:`): `file:`,
/// `http:`, ffmpeg's `concat:` and `subfile,...:` alike. `C:` too.
fn has_scheme(value: &str) -> bool {
    let mut chars = value.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    for c in chars {
        if c == ':' {
            return true;
        }
        if !(c.is_ascii_alphanumeric() || "+-.".contains(c)) {
            return false;
        }
    }
    false
}

/// The character set of placeholders without a rule (and of template names).
pub(super) fn default_charset(value: &str) -> Result<(), &'static str> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "._:/@%+=,-".contains(c);
    if value.chars().all(safe) {
        Ok(())
    } else {
        Err(
            "values may hold only letters, digits and . _ : / @ % + = , - (no blanks or shell \
             characters)",
        )
    }
}

/// Why a `media` value cannot be used: the request's fault, or the node's.
enum Media {
    Refused(String),
    Dir(Error),
}

/// Resolves a `media` value inside `media_dir`, as `wav:` sources are:
/// symbolic links and all resolved, the file must exist and stay inside.
fn media(name: &str, media_dir: Option<&Path>) -> Result<PathBuf, Media> {
    let refused = |why: &str| Media::Refused(why.to_string());
    let plain = name.split('/').all(|segment| {
        !segment.is_empty()
            && !segment.starts_with('.')
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    });
    if !plain {
        return Err(refused(
            "expected a file name in the node's media directory: letters, digits, - _ . and / \
             between names, no name beginning with .",
        ));
    }
    let dir = media_dir.ok_or_else(|| refused("this node has no media_dir"))?;
    let dir = dir.canonicalize().map_err(|e| {
        Media::Dir(Error::io(
            format!("open the media directory {}", dir.display()),
            e,
        ))
    })?;
    let path = dir
        .join(name)
        .canonicalize()
        .map_err(|_| refused("no such file in the node's media directory"))?;
    if !path.starts_with(&dir) {
        return Err(refused(
            "leads outside the node's media directory (a symbolic link points out)",
        ));
    }
    if !path.is_file() {
        return Err(refused("not a file"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(command: &str, params: &[(&str, RuleConfig)], media_dir: Option<&Path>) -> Rules {
        let config = TemplateConfig {
            command: command.to_string(),
            params: params
                .iter()
                .map(|(k, r)| (k.to_string(), r.clone()))
                .collect(),
            ..TemplateConfig::default()
        };
        Rules::new(&config, &Template::parse(command).unwrap(), media_dir).unwrap()
    }

    fn kind(kind: &str) -> RuleConfig {
        RuleConfig::from(kind.to_string())
    }

    fn refused(rules: &Rules, key: &str, value: &str, media_dir: Option<&Path>) -> String {
        let err = rules.value(key, value, media_dir).unwrap_err();
        assert!(err.is_request_error(), "{value:?}: {err}");
        let text = err.to_string();
        assert!(text.contains(&format!("{key:?}")), "names the key: {text}");
        text
    }

    #[test]
    fn every_rule_refuses_climbing_absolute_paths_and_urls() {
        let dir = temp_dir("refusals");
        let re = RuleConfig {
            kind: "regex".into(),
            pattern: Some(".+".into()),
            ..RuleConfig::default()
        };
        let r = rules(
            "p {a} {b} {c} {d}",
            &[("a", kind("name")), ("b", kind("media")), ("c", re)],
            Some(&dir),
        );
        for key in ["a", "b", "c", "d", "undeclared"] {
            for (value, expected) in [
                ("..", "may not hold .."),
                ("a/../../x", "may not hold .."),
                ("/etc/passwd", "may not begin with /"),
                ("file:/x", "URL scheme"),
                ("http://x", "URL scheme"),
                ("concat:a", "URL scheme"),
                ("C:x", "URL scheme"),
                ("-x", "may not begin with -"),
                ("a\tb", "control characters"),
                ("", "1 to 512"),
            ] {
                let err = refused(&r, key, value, Some(&dir));
                assert!(err.contains(expected), "{key}={value:?}: {err}");
                assert!(err.contains("(rule: "), "{err}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn templates_that_opt_in_take_paths_and_urls() {
        let mut config = TemplateConfig::from("p {a}".to_string());
        let template = Template::parse(&config.command).unwrap();
        config.allow_paths = true;
        let r = Rules::new(&config, &template, None).unwrap();
        assert_eq!(r.value("a", "/srv/../x", None).unwrap(), "/srv/../x");
        assert!(refused(&r, "a", "http://x", None).contains("URL scheme"));
        config.allow_paths = false;
        config.allow_urls = true;
        let r = Rules::new(&config, &template, None).unwrap();
        assert_eq!(r.value("a", "http://x/y", None).unwrap(), "http://x/y");
        assert!(refused(&r, "a", "/x", None).contains("may not begin with /"));
        // Never a leading - though.
        assert!(refused(&r, "a", "-x", None).contains("option"));
    }

    #[test]
    fn names_are_letters_digits_and_dots_not_leading() {
        let r = rules("p {a}", &[("a", kind("name"))], None);
        for ok in ["clip-1", "a_b.c", "X9"] {
            assert_eq!(r.value("a", ok, None).unwrap(), ok);
        }
        for bad in [".hidden", "a/b", "a:b", "a b", "a=b", "é"] {
            let err = refused(&r, "a", bad, None);
            assert!(err.contains("(rule: name)"), "{bad}: {err}");
        }
    }

    #[test]
    fn numbers_are_digits_within_their_bounds() {
        let bounded = RuleConfig {
            kind: "number".into(),
            min: Some(8),
            max: Some(256),
            ..RuleConfig::default()
        };
        let r = rules("p {n} {m}", &[("n", bounded), ("m", kind("number"))], None);
        for ok in ["8", "64", "256", "0064"] {
            assert_eq!(r.value("n", ok, None).unwrap(), ok);
        }
        for (bad, expected) in [
            ("7", "out of bounds"),
            ("257", "out of bounds"),
            ("1e3", "decimal digits"),
            ("+9", "decimal digits"),
            ("99999999999999999999", "too large"),
        ] {
            let err = refused(&r, "n", bad, None);
            assert!(err.contains(expected), "{bad}: {err}");
            assert!(err.contains("(rule: number 8 to 256)"), "{err}");
        }
        assert_eq!(r.value("m", "0", None).unwrap(), "0");
    }

    #[test]
    fn patterns_match_whole_values() {
        let re = RuleConfig {
            kind: "regex".into(),
            pattern: Some("[a-z]{2}|auto".into()),
            ..RuleConfig::default()
        };
        let r = rules("p {lang}", &[("lang", re)], None);
        assert_eq!(r.value("lang", "fr", None).unwrap(), "fr");
        assert_eq!(r.value("lang", "auto", None).unwrap(), "auto");
        // Anchored by the node: the alternation cannot escape the anchors.
        for bad in ["fra", "xfr", "autox", "fr auto"] {
            let err = refused(&r, "lang", bad, None);
            assert!(err.contains("pattern"), "{bad}: {err}");
        }
    }

    #[test]
    fn media_names_resolve_inside_the_media_directory() {
        let root = temp_dir("media");
        let dir = root.join("media");
        std::fs::create_dir_all(dir.join("clips")).unwrap();
        std::fs::write(dir.join("a.wav"), b"x").unwrap();
        std::fs::write(dir.join("clips/b.wav"), b"x").unwrap();
        std::fs::write(root.join("secret"), b"x").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("secret"), dir.join("escape.wav")).unwrap();
            std::os::unix::fs::symlink(dir.join("a.wav"), dir.join("alias.wav")).unwrap();
        }
        let r = rules("p {input}", &[("input", kind("media"))], Some(&dir));
        let canonical = dir.canonicalize().unwrap();
        let ok = |name: &str| r.value("input", name, Some(&dir)).unwrap();
        assert_eq!(ok("a.wav"), canonical.join("a.wav").display().to_string());
        assert_eq!(
            ok("clips/b.wav"),
            canonical.join("clips/b.wav").display().to_string()
        );
        let mut cases = vec![
            ("missing.wav", "no such file"),
            ("clips", "not a file"),
            ("clips//b.wav", "expected a file name"),
            ("clips/.b", "expected a file name"),
            ("a b.wav", "expected a file name"),
        ];
        if cfg!(unix) {
            // A link that stays inside is followed; one that leads out is not.
            assert_eq!(
                ok("alias.wav"),
                canonical.join("a.wav").display().to_string()
            );
            cases.push(("escape.wav", "outside the node's media directory"));
        }
        for (name, expected) in cases {
            let err = refused(&r, "input", name, Some(&dir));
            assert!(err.contains(expected), "{name}: {err}");
            assert!(err.contains("(rule: media)"), "{err}");
        }
        // A media directory that is gone is the node's fault, not the caller's.
        let gone = root.join("gone");
        let err = r.value("input", "a.wav", Some(&gone)).unwrap_err();
        assert!(!err.is_request_error(), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn urls_are_taken_under_the_operators_prefixes_only() {
        let rule = RuleConfig {
            kind: "url".into(),
            prefixes: Some(vec![
                "https://media.example.com/films/".into(),
                "http://198.18.0.9:8080/".into(),
            ]),
            ..RuleConfig::default()
        };
        #[derive(Deserialize)]
        struct File {
            src: RuleConfig,
        }
        let file: File = toml::from_str(
            "src = { kind = \"url\", prefixes = [\"https://media.example.com/films/\", \"http://198.18.0.9:8080/\"] }",
        )
        .unwrap();
        assert_eq!(file.src, rule, "as the config file writes it");
        let r = rules("ffmpeg -i {src}", &[("src", rule)], None);
        for ok in [
            "https://media.example.com/films/a.mp4",
            "https://media.example.com/films/x/y.ogg?token=a%20b&t=3",
            "http://198.18.0.9:8080/live.aac",
        ] {
            assert_eq!(r.value("src", ok, None).unwrap(), ok);
        }
        for (bad, expected) in [
            (
                "https://media.example.com/other/a.mp4",
                "not under a prefix",
            ),
            (
                "https://media.example.com.evil.org/films/a",
                "not under a prefix",
            ),
            ("http://media.example.com/films/a.mp4", "not under a prefix"),
            ("file:/etc/passwd", "not under a prefix"),
            ("a.mp4", "not under a prefix"),
            (
                "https://media.example.com/films/../secret",
                "may not hold ..",
            ),
            (
                "https://media.example.com/films/%2e%2e/secret",
                "no .. segment and no encoded",
            ),
            (
                "https://media.example.com/films/.%2E/secret",
                "no .. segment and no encoded",
            ),
            (
                "https://media.example.com/films/a%2Fb",
                "no .. segment and no encoded",
            ),
            (
                "https://media.example.com/films/a%5Csecret",
                "no .. segment and no encoded",
            ),
            ("https://media.example.com/films/a b", "after the prefix"),
            ("https://media.example.com/films/a|b", "after the prefix"),
            ("https://media.example.com/films/\"x\"", "after the prefix"),
        ] {
            let err = refused(&r, "src", bad, None);
            assert!(err.contains(expected), "{bad}: {err}");
            assert!(err.contains("(rule: url under https://media"), "{err}");
        }
        // Prefixes that would let a value choose the host, or a scheme.
        for prefix in [
            "https://media.example.com",
            "https://",
            "ftp://media.example.com/",
            "media.example.com/",
            "https:///x/",
        ] {
            let config = TemplateConfig {
                command: "p {x}".into(),
                params: BTreeMap::from([(
                    "x".to_string(),
                    RuleConfig {
                        kind: "url".into(),
                        prefixes: Some(vec![prefix.into()]),
                        ..RuleConfig::default()
                    },
                )]),
                ..TemplateConfig::default()
            };
            let template = Template::parse(&config.command).unwrap();
            let err = Rules::new(&config, &template, None).unwrap_err();
            assert!(
                err.contains("expected http:// or https://"),
                "{prefix}: {err}"
            );
        }
    }

    #[test]
    fn undeclared_placeholders_keep_the_conservative_set() {
        let r = rules("p {a}", &[], None);
        assert_eq!(r.value("a", "x=1,y@2%3+4", None).unwrap(), "x=1,y@2%3+4");
        for bad in ["a b", "$(x)", "a;b", "'q'", "a|b", "~root"] {
            let err = refused(&r, "a", bad, None);
            assert!(err.contains("(rule: default)"), "{bad}: {err}");
        }
    }

    #[test]
    fn rule_mistakes_name_the_field() {
        let dir = std::env::temp_dir();
        let table = |kind: &str, min, max, pattern: Option<&str>| RuleConfig {
            kind: kind.into(),
            min,
            max,
            pattern: pattern.map(String::from),
            prefixes: None,
        };
        for (key, rule, media_dir, expected) in [
            ("x", kind("nmber"), None, "params.x: unknown kind \"nmber\""),
            (
                "y",
                kind("name"),
                None,
                "params.y: the command has no placeholder {y}",
            ),
            (
                "client_host",
                kind("name"),
                None,
                "params.client_host: the node fills",
            ),
            (
                "template",
                kind("name"),
                None,
                "params.template: names the template",
            ),
            (
                "x",
                kind("regex"),
                None,
                "params.x: kind regex needs a pattern",
            ),
            (
                "x",
                table("regex", None, None, Some("(")),
                None,
                "params.x: pattern \"(\"",
            ),
            (
                "x",
                table("name", Some(1), None, None),
                None,
                "params.x: kind name takes no min",
            ),
            (
                "x",
                table("number", None, None, Some("1")),
                None,
                "takes no pattern",
            ),
            (
                "x",
                table("number", Some(9), Some(1), None),
                None,
                "min 9 is above max 1",
            ),
            (
                "x",
                kind("media"),
                None,
                "params.x: kind media reads files from media_dir",
            ),
            ("x", kind("url"), None, "params.x: kind url needs prefixes"),
            (
                "x",
                table("url", Some(1), None, None),
                None,
                "params.x: kind url takes no min",
            ),
        ] {
            let config = TemplateConfig {
                command: "p {x} {template}".into(),
                params: BTreeMap::from([(key.to_string(), rule)]),
                ..TemplateConfig::default()
            };
            let template = Template::parse(&config.command).unwrap();
            let err = Rules::new(&config, &template, media_dir).unwrap_err();
            assert!(err.contains(expected), "{err} lacks {expected}");
        }
        let config = TemplateConfig {
            command: "p {x}".into(),
            params: BTreeMap::from([("x".to_string(), kind("media"))]),
            ..TemplateConfig::default()
        };
        let template = Template::parse(&config.command).unwrap();
        assert!(Rules::new(&config, &template, Some(&dir)).is_ok());
    }

    #[test]
    fn templates_read_as_a_line_or_as_a_table() {
        #[derive(Deserialize)]
        struct File {
            exec: BTreeMap<String, TemplateConfig>,
        }
        let file: File = toml::from_str(
            r#"
            [exec]
            plain = "play {x}"
            inline = { command = "play {x}", params = { x = "name" } }
            [exec.transcode]
            command = "ffmpeg -i {input} -b:a {kbps}k -metadata lang={lang}"
            allow_urls = true
            [exec.transcode.params]
            input = "media"
            kbps = { kind = "number", min = 8, max = 256 }
            [exec.transcode.params.lang]
            kind = "regex"
            pattern = "[a-z]{2}"
            "#,
        )
        .unwrap();
        assert_eq!(
            file.exec["plain"],
            TemplateConfig::from("play {x}".to_string())
        );
        assert_eq!(file.exec["inline"].params["x"], kind("name"));
        let t = &file.exec["transcode"];
        assert!(t.allow_urls && !t.allow_paths);
        assert_eq!(t.params["input"], kind("media"));
        assert_eq!(
            (t.params["kbps"].min, t.params["kbps"].max),
            (Some(8), Some(256))
        );
        assert_eq!(t.params["lang"].pattern.as_deref(), Some("[a-z]{2}"));
        for (bad, expected) in [
            (
                "[exec.t]\ncommand = \"p\"\nallow_url = true\n",
                "unknown field `allow_url`",
            ),
            ("[exec.t]\nallow_urls = true\n", "missing field `command`"),
            (
                "[exec.t]\ncommand = \"p {x}\"\nparams = { x = { kind = \"number\", mx = 3 } }\n",
                "unknown field `mx`",
            ),
            ("[exec]\nt = 3\n", "a string or a table"),
        ] {
            let err = toml::from_str::<File>(bad).err().unwrap().to_string();
            assert!(err.contains(expected), "{bad}: {err}");
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "baton-exec-rules-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
