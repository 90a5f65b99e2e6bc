//! EdgeLake's `!var` template language as netstrap reads it, the way `deployment-scripts/policies/*.al` use it.
//!
//! - `!name` is a node variable, `$NAME` an environment variable; names are ASCII letters,
//!   digits and `_`. An environment value that starts with `!` is resolved again through the
//!   node variables (`$LEDGER=!master_node`), once. `!!name` stands for the literal `!name`
//!   (EdgeLake keeps one `!` for the node the command is sent to; unquoted in a policy it is the
//!   string `"!name"`). A `!` or `$` not followed by
//!   a name (`!=`, `$ `, a lone `!`) is ordinary text.
//! - A suffix converts the value: `.int`, `.float`, `.str`, `.bool`, `.name` (lower case, spaces
//!   to `_`). A suffix counts only when no name character follows it: in `!ip.intx` the
//!   reference is `!ip` and `.intx` is text.
//! - Where EdgeLake is silent, netstrap is loud: an unknown variable, an unset environment
//!   variable and a failed conversion (EdgeLake substitutes an empty string) are errors that
//!   name the reference, the value and the suffix.
//! - `.bool`: EdgeLake reads only exactly `false` or an empty value as false, so `False`, `no`
//!   and `0` are *true* to it. netstrap gives the same answer wherever the spelling is
//!   unambiguous (`false` and empty are false; `true`, `True`, `yes`, `1`, anything else is
//!   true) and refuses, with an error saying EdgeLake would read it as true, the spellings an
//!   operator means as false: `False`/`FALSE`/`no`/`n`/`f`/`off`/`0`/`none`/`null`/
//!   `disable(d)` in any case, padded `false`, and blank values.
//!   A template that renders here therefore means the same thing to EdgeLake.
//! - Integers are an optional sign and ASCII digits with surrounding whitespace (Python's
//!   `int()` without `_` separators); floats are what Rust's `f64` parser reads, finite only
//!   (JSON has no `inf`/`nan`).
//!
//! [`render_policy_text`] renders a policy written as JSON with references: an *unquoted*
//! reference becomes a JSON value (a number for `.int`/`.float`, a boolean for `.bool`, a
//! string otherwise) and a *quoted* one (`"ip": "!external_ip"`) stays as written, which is how
//! config policies stay valid across restarts (EdgeLake resolves them when it applies the
//! policy). [`expand`] substitutes every reference in a command line (booleans as `true`/
//! `false`, floats in Python's repr).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;

use serde_json::Value;

use super::id::python_float_repr;

/// A source of variable values: node variables, or the environment. Tests pass maps; the
/// daemon passes [`ProcessEnv`] for `$NAME`.
pub trait Vars {
    /// The value of `name` (without `!`/`$`), `None` when it is not set.
    fn get(&self, name: &str) -> Option<String>;
}

impl<S: BuildHasher> Vars for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Vars for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl Vars for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_string())
    }
}

impl<const N: usize> Vars for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        Vars::get(self.as_slice(), name)
    }
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Vars for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// No variables at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoVars;

impl Vars for NoVars {
    fn get(&self, _: &str) -> Option<String> {
        None
    }
}

/// Variables answered by a closure (see [`from_fn`]).
#[derive(Clone, Copy)]
pub struct FromFn<F>(F);

/// Variables answered by `f`.
pub fn from_fn<F: Fn(&str) -> Option<String>>(f: F) -> FromFn<F> {
    FromFn(f)
}

impl<F: Fn(&str) -> Option<String>> Vars for FromFn<F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }
}

/// A value conversion written after a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suffix {
    Int,
    Str,
    Float,
    Bool,
    Name,
}

impl Suffix {
    const ALL: [(&'static str, Suffix); 5] = [
        (".int", Suffix::Int),
        (".str", Suffix::Str),
        (".float", Suffix::Float),
        (".bool", Suffix::Bool),
        (".name", Suffix::Name),
    ];

    fn text(self) -> &'static str {
        Self::ALL.iter().find(|(_, s)| *s == self).map_or("", |(t, _)| t)
    }
}

impl fmt::Display for Suffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// Where in the template text something is (line and column count from 1, in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Byte offset in the template.
    pub offset: usize,
    pub line: usize,
    pub column: usize,
}

impl Position {
    fn of(text: &str, offset: usize) -> Position {
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        Position { offset, line, column }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a template cannot be rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("{at}: unknown node variable `!{name}`{} — set it (in a policy, quote the reference to leave it for the node to resolve)", via(.via_env))]
    UnknownVariable { name: String, via_env: Option<String>, at: Position },
    #[error("{at}: environment variable `${name}` is not set")]
    UnsetEnv { name: String, at: Position },
    #[error("{at}: `{reference}` is {value:?}, which is not {}", what(.suffix))]
    Conversion { reference: String, value: String, suffix: Suffix, at: Position },
    #[error(
        "{at}: `{reference}` is {value:?}: EdgeLake would read this as true (only exactly `false` or an empty \
         value is false); write `false` or `true`"
    )]
    AmbiguousBool { reference: String, value: String, at: Position },
    #[error(
        "the policy is not valid JSON after substitution: {message} (line {line}, column {column} of the \
         rendered text, near `{context}`)"
    )]
    Json { message: String, line: usize, column: usize, context: String },
}

fn via(env: &Option<String>) -> String {
    env.as_ref().map(|e| format!(" (the value of ${e})")).unwrap_or_default()
}

fn what(suffix: &Suffix) -> &'static str {
    match suffix {
        Suffix::Int => "a 64-bit integer (.int)",
        Suffix::Float => "a finite number (.float)",
        _ => "convertible",
    }
}

/// A resolved reference.
#[derive(Debug, Clone, PartialEq)]
enum Resolved {
    Str(String),
    Int(serde_json::Number),
    Float(f64),
    Bool(bool),
}

impl Resolved {
    fn text(&self) -> String {
        match self {
            Resolved::Str(s) => s.clone(),
            Resolved::Int(n) => n.to_string(),
            Resolved::Float(f) => python_float_repr(*f),
            Resolved::Bool(b) => b.to_string(),
        }
    }

    fn json(&self) -> String {
        match self {
            Resolved::Str(s) => Value::String(s.clone()).to_string(),
            Resolved::Int(n) => n.to_string(),
            // Finite by construction; `null` is unreachable but keeps this total.
            Resolved::Float(f) => {
                serde_json::Number::from_f64(*f).map_or_else(|| "null".into(), |n| n.to_string())
            }
            Resolved::Bool(b) => b.to_string(),
        }
    }
}

/// One reference found in the text.
enum Token<'t> {
    /// `!!name`: the literal `!name`.
    Literal(&'t str),
    Ref {
        sigil: u8,
        name: &'t str,
        suffix: Option<Suffix>,
    },
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The reference starting at `start` (a `!` or `$`) and the offset after it, or `None` when
/// the sigil is ordinary text.
fn token_at(text: &str, start: usize) -> Option<(Token<'_>, usize)> {
    let bytes = text.as_bytes();
    let sigil = *bytes.get(start)?;
    let name_run =
        |from: usize| bytes.get(from..).map_or(0, |b| b.iter().take_while(|&&c| is_name_byte(c)).count());
    if sigil == b'!' && bytes.get(start + 1) == Some(&b'!') {
        let n = name_run(start + 2);
        // All ASCII, so these are char boundaries.
        return (n > 0).then(|| (Token::Literal(&text[start + 1..start + 2 + n]), start + 2 + n));
    }
    let n = name_run(start + 1);
    if n == 0 {
        return None;
    }
    let name = &text[start + 1..start + 1 + n];
    let mut end = start + 1 + n;
    let rest = &bytes[end..];
    let mut suffix = None;
    for (t, s) in Suffix::ALL {
        if rest.starts_with(t.as_bytes()) && !rest.get(t.len()).is_some_and(|&c| is_name_byte(c)) {
            suffix = Some(s);
            end += t.len();
            break;
        }
    }
    Some((Token::Ref { sigil, name, suffix }, end))
}

struct Resolver<'a> {
    vars: &'a dyn Vars,
    env: &'a dyn Vars,
}

impl Resolver<'_> {
    fn resolve(&self, text: &str, start: usize, token: &Token<'_>) -> Result<Resolved, TemplateError> {
        let at = || Position::of(text, start);
        let (sigil, name, suffix) = match token {
            Token::Literal(s) => return Ok(Resolved::Str((*s).to_string())),
            Token::Ref { sigil, name, suffix } => (*sigil, *name, *suffix),
        };
        let raw = if sigil == b'$' {
            let value =
                self.env.get(name).ok_or_else(|| TemplateError::UnsetEnv { name: name.into(), at: at() })?;
            if value.starts_with('!') { self.resolve_env_value(&value, name, at())? } else { value }
        } else {
            self.vars.get(name).ok_or_else(|| TemplateError::UnknownVariable {
                name: name.into(),
                via_env: None,
                at: at(),
            })?
        };
        let reference = format!("{}{name}{}", sigil as char, suffix.map_or("", Suffix::text));
        convert(raw, suffix, reference, at())
    }

    /// An environment value that starts with `!`: its node-variable references, resolved once
    /// (no `$` inside, no further rounds).
    fn resolve_env_value(&self, value: &str, env_name: &str, at: Position) -> Result<String, TemplateError> {
        let inner = Resolver { vars: self.vars, env: &NoVars };
        inner.expand_with(value, b"!").map_err(|e| match e {
            TemplateError::UnknownVariable { name, .. } => {
                TemplateError::UnknownVariable { name, via_env: Some(env_name.into()), at }
            }
            TemplateError::Conversion { reference, value, suffix, .. } => TemplateError::Conversion {
                reference: format!("${env_name} = {reference}"),
                value,
                suffix,
                at,
            },
            TemplateError::AmbiguousBool { reference, value, .. } => {
                TemplateError::AmbiguousBool { reference: format!("${env_name} = {reference}"), value, at }
            }
            other => other,
        })
    }

    fn expand_with(&self, text: &str, sigils: &[u8]) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut i = 0;
        let bytes = text.as_bytes();
        while i < bytes.len() {
            if sigils.contains(&bytes[i])
                && let Some((token, end)) = token_at(text, i)
            {
                out.push_str(&text[copied..i]);
                out.push_str(&self.resolve(text, i, &token)?.text());
                copied = end;
                i = end;
                continue;
            }
            i += 1;
        }
        out.push_str(&text[copied..]);
        Ok(out)
    }
}

fn convert(
    raw: String,
    suffix: Option<Suffix>,
    reference: String,
    at: Position,
) -> Result<Resolved, TemplateError> {
    let fail = |raw: String, suffix| TemplateError::Conversion {
        reference: reference.clone(),
        value: raw,
        suffix,
        at,
    };
    match suffix {
        None | Some(Suffix::Str) => Ok(Resolved::Str(raw)),
        Some(Suffix::Name) => Ok(Resolved::Str(raw.replace(' ', "_").to_lowercase())),
        Some(Suffix::Int) => parse_int(&raw).map(Resolved::Int).ok_or_else(|| fail(raw, Suffix::Int)),
        Some(Suffix::Float) => match raw.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Resolved::Float(f)),
            _ => Err(fail(raw, Suffix::Float)),
        },
        Some(Suffix::Bool) => match edgelake_bool(&raw) {
            Some(b) => Ok(Resolved::Bool(b)),
            None => Err(TemplateError::AmbiguousBool { reference, value: raw, at }),
        },
    }
}

fn parse_int(raw: &str) -> Option<serde_json::Number> {
    let t = raw.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    if let Ok(i) = t.parse::<i64>() {
        return Some(i.into());
    }
    t.parse::<u64>().ok().map(Into::into)
}

/// EdgeLake's reading of `raw` as a boolean, or `None` when EdgeLake would say true to a value
/// that reads as false to a person.
fn edgelake_bool(raw: &str) -> Option<bool> {
    if raw.is_empty() || raw == "false" {
        return Some(false);
    }
    const FALSE_LOOKING: &[&str] =
        &["false", "no", "n", "f", "off", "0", "none", "null", "disable", "disabled", ""];
    let t = raw.trim().to_ascii_lowercase();
    if FALSE_LOOKING.contains(&t.as_str()) { None } else { Some(true) }
}

/// `text` with every `!name` and `$NAME` reference substituted.
pub fn expand(text: &str, vars: &dyn Vars, env: &dyn Vars) -> Result<String, TemplateError> {
    Resolver { vars, env }.expand_with(text, b"!$")
}

/// A JSON policy with references rendered to a JSON value: unquoted references substituted as
/// JSON values, quoted ones kept literally, key order kept.
pub fn render_policy_text(template: &str, vars: &dyn Vars, env: &dyn Vars) -> Result<Value, TemplateError> {
    let resolver = Resolver { vars, env };
    let bytes = template.as_bytes();
    let mut out = String::with_capacity(template.len());
    let (mut copied, mut i) = (0, 0);
    let (mut in_string, mut escaped) = (false, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if (b == b'!' || b == b'$')
            && let Some((token, end)) = token_at(template, i)
        {
            out.push_str(&template[copied..i]);
            out.push_str(&resolver.resolve(template, i, &token)?.json());
            copied = end;
            i = end;
            continue;
        }
        i += 1;
    }
    out.push_str(&template[copied..]);
    serde_json::from_str(&out).map_err(|e| TemplateError::Json {
        message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
        line: e.line(),
        column: e.column(),
        context: context(&out, e.line(), e.column()),
    })
}

/// Up to 30 bytes either side of (line, column) in `text`, on character boundaries.
fn context(text: &str, line: usize, column: usize) -> String {
    let line_text = text.lines().nth(line.saturating_sub(1)).unwrap_or_default();
    let floor = |mut i: usize| {
        i = i.min(line_text.len());
        while !line_text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let at = floor(column.saturating_sub(1));
    let (from, to) = (floor(at.saturating_sub(30)), floor(at + 30));
    line_text.get(from..to).unwrap_or_default().to_string()
}
