//! Where an error is, and what to suggest: byte offsets from the TOML parser turned into line
//! and column, and the hints added to "not defined" messages.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::Ctx;
use crate::config::ConfigError;

/// How many defined upstream names a "not defined" message lists before it only suggests the
/// closest one: a short list helps, a long one buries the error.
const MAX_LISTED_NAMES: usize = 8;

/// One file's text with a table of line starts, to turn byte offsets into line and column.
#[derive(Debug)]
pub(super) struct Source<'a> {
    /// The file, as named in errors.
    pub(super) path: &'a Path,
    /// Its whole text.
    pub(super) text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub(super) fn new(path: &'a Path, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source { path, text, line_starts }
    }

    /// 1-based (line, column); the column counts characters, not bytes.
    pub(super) fn locate(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let column = self.text[self.line_starts[line]..offset].chars().count() + 1;
        (line + 1, column)
    }

    pub(super) fn error(&self, span: Range<usize>, message: String) -> ConfigError {
        let (line, column) = self.locate(span.start);
        ConfigError { file: self.path.to_path_buf(), line, column, message }
    }
}

/// An error that has no position inside a file (it could not be read).
pub(super) fn io_error(path: &Path, what: &str, e: &std::io::Error) -> ConfigError {
    ConfigError { file: path.to_path_buf(), line: 1, column: 1, message: format!("{what}: {e}") }
}

impl Ctx<'_, '_> {
    /// A parse or type error from the toml crate, as one line.
    pub(super) fn toml_error(&mut self, e: &toml::de::Error) {
        let message =
            e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
        self.err(e.span().unwrap_or(0..0), message);
    }
}

/// `"routes/"`, or whatever the folder holding the route files is called.
pub(super) fn routes_dir_label(files: &[(PathBuf, String)]) -> String {
    files
        .first()
        .and_then(|(p, _)| p.parent())
        .and_then(Path::file_name)
        .map_or_else(|| "routes/".to_owned(), |n| format!("{}/", n.to_string_lossy()))
}

/// "; defined upstreams: ..." when there are few, else "; did you mean ...?" when one is close
/// (Levenshtein distance in characters, at most a third of the name's length plus one).
pub(super) fn name_hint(wanted: &str, defined: &[&str]) -> String {
    if defined.is_empty() {
        return "; no upstream is defined: add an [[upstream]] table".to_owned();
    }
    if defined.len() <= MAX_LISTED_NAMES {
        let list: Vec<String> = defined.iter().map(|n| format!("{n:?}")).collect();
        return format!("; defined upstreams: {}", list.join(", "));
    }
    let best = defined
        .iter()
        .map(|d| (strsim::levenshtein(wanted, d), *d))
        .min()
        .filter(|(dist, _)| *dist <= wanted.len() / 3 + 1);
    match best {
        Some((_, name)) => format!("; did you mean {name:?}?"),
        None => String::new(),
    }
}

/// The regex crate's error as one line: its `error:` line when it has one.
pub(super) fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "), str::to_owned)
}
