//! What is wrong with a configuration file, and where.

use std::fmt;
use std::path::PathBuf;

/// A place in a configuration file. Lines and columns count from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    /// Unknown when the problem is about a field that is absent from the file.
    pub column: Option<usize>,
}

impl Location {
    pub const START: Location = Location { line: 1, column: None };

    pub(crate) fn from_yaml(location: serde_yaml_ng::Location) -> Self {
        Self { line: location.line(), column: Some(location.column()) }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(column) => write!(f, "{}:{column}", self.line),
            None => write!(f, "{}", self.line),
        }
    }
}

/// Why a site's configuration was refused.
///
/// Every message starts with `file:line[:column]:`, then names the field (its full path from
/// the top of the file, such as `Authority.sync.mode`) and says how to fix the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration file: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    /// The file is larger than any site configuration.
    #[error("{}: the file is larger than {limit} bytes; a configuration file is much smaller: is this the right file?", file.display())]
    TooLarge { file: PathBuf, limit: usize },
    /// The file is not well-formed YAML.
    #[error("{}:{at}: {message}", file.display())]
    Syntax { file: PathBuf, at: Location, message: String },
    /// A field is unknown, has a bad value, is missing, or contradicts another field.
    #[error("{}:{at}: {field}: {message}", file.display())]
    Field { file: PathBuf, at: Location, field: String, message: String },
}

impl ConfigError {
    /// The file the problem is in.
    pub fn file(&self) -> &std::path::Path {
        match self {
            ConfigError::Read { path: file, .. }
            | ConfigError::TooLarge { file, .. }
            | ConfigError::Syntax { file, .. }
            | ConfigError::Field { file, .. } => file,
        }
    }

    /// Where in the file the problem is, when the file could be read.
    pub fn location(&self) -> Option<Location> {
        match self {
            ConfigError::Read { .. } | ConfigError::TooLarge { .. } => None,
            ConfigError::Syntax { at, .. } | ConfigError::Field { at, .. } => Some(*at),
        }
    }

    /// The path of the field at fault, such as `Authority.sync.mode`.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Field { field, .. } => Some(field),
            ConfigError::Read { .. } | ConfigError::TooLarge { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

/// What serde said was wrong with a field, reworded for an operator.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Complaint {
    /// The field's own name is wrong; `expected` lists the names allowed beside it.
    UnknownField { message: String },
    /// A required field is absent from the mapping at the reported path.
    MissingField { name: String, message: String },
    /// The field's value is wrong.
    BadValue { message: String },
}

/// Rewords serde's messages (`unknown field`, `unknown variant`, `missing field`); any other
/// message is about the value and is kept as it is.
pub(crate) fn reword(raw: &str, unknown_name: Option<&str>) -> Complaint {
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let name = unknown_name.map(str::to_owned).unwrap_or_else(|| first_quoted(rest));
        let expected = expected_names(rest);
        let message = if expected.is_empty() {
            "unknown field; this mapping takes no fields".to_owned()
        } else {
            format!(
                "unknown field; expected {}{} (check its spelling and indentation)",
                one_of(&expected),
                did_you_mean(&name, &expected),
            )
        };
        return Complaint::UnknownField { message };
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let value = first_quoted(rest);
        let expected = expected_names(rest);
        let message = format!(
            "unknown value `{value}`; expected {}{}",
            one_of(&expected),
            did_you_mean(&value, &expected)
        );
        return Complaint::BadValue { message };
    }
    if let Some(rest) = raw.strip_prefix("missing field `") {
        let name = first_quoted(rest);
        let message = format!("this field is required; add `{name}:`");
        return Complaint::MissingField { name, message };
    }
    // Serde names the Rust type it wanted; an operator wants to hear "a mapping".
    let message = match raw.split_once(", expected struct ") {
        Some((found, _)) => format!("{found}, expected a mapping of fields"),
        None => raw.to_owned(),
    };
    Complaint::BadValue { message }
}

/// The text up to the first backtick: the rest of a name whose opening backtick was stripped.
fn first_quoted(rest: &str) -> String {
    rest.split('`').next().unwrap_or_default().to_owned()
}

/// The backticked names after `expected` in serde's "unknown field/variant" messages, which
/// read ``expected `a` ``, ``expected `a` or `b` `` or ``expected one of `a`, `b`, `c` ``.
fn expected_names(rest: &str) -> Vec<String> {
    let Some((_, list)) = rest.split_once(", expected ") else {
        return Vec::new();
    };
    list.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// `` `a` `` or ``one of `a`, `b` ``.
pub(crate) fn one_of(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [one] => one.clone(),
        _ => format!("one of {}", quoted.join(", ")),
    }
}

/// `; did you mean `x`?` when one of `candidates` is a likely typo of `name`.
fn did_you_mean(name: &str, candidates: &[String]) -> String {
    let lower = name.to_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.min(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewords_unknown_fields_with_the_allowed_names_and_a_guess() {
        let c = reword(
            "unknown field `can_fly`, expected one of `can_operate_isolated`, `mode`",
            Some("can_fly"),
        );
        assert_eq!(
            c,
            Complaint::UnknownField {
                message: "unknown field; expected one of `can_operate_isolated`, `mode` (check its spelling and indentation)".into()
            }
        );
        let Complaint::UnknownField { message } =
            reword("unknown field `authority`, expected one of `Site`, `Authority`", None)
        else {
            panic!("not an unknown field");
        };
        assert!(message.contains("did you mean `Authority`?"), "{message}");
        let Complaint::UnknownField { message } =
            reword("unknown field `frequncy`, expected `frequency` or `mode`", None)
        else {
            panic!("not an unknown field");
        };
        assert!(
            message.contains("expected one of `frequency`, `mode`; did you mean `frequency`?"),
            "{message}"
        );
    }

    #[test]
    fn rewords_unknown_variants_as_unknown_values() {
        let c = reword("unknown variant `pull`, expected one of `continuous`, `push`, `opportunistic`", None);
        assert_eq!(
            c,
            Complaint::BadValue {
                message: "unknown value `pull`; expected one of `continuous`, `push`, `opportunistic`".into()
            }
        );
    }

    #[test]
    fn names_the_missing_field() {
        assert_eq!(
            reword("missing field `level`", None),
            Complaint::MissingField {
                name: "level".into(),
                message: "this field is required; add `level:`".into()
            }
        );
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("mode", "mode"), 0);
    }
}
