//! Where things are in a policy file, and the diagnostics that point there.
//!
//! serde_yaml deserializes without spans, so the file is read a second time with yaml-rust2's
//! marked event parser to index the position of every key and value by its path. Paths read like
//! the policy: `conduits[1].allow[0].tcp.ports[2]`, `zones.cell-1.hosts.plc-1`.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: usize,
    pub col: usize,
}

impl Position {
    /// Where a diagnostic goes when nothing better is known: the start of the file.
    pub const START: Position = Position { line: 1, col: 1 };

    fn from_marker(marker: &Marker) -> Position {
        // yaml-rust2 counts lines from 1 but columns from 0.
        Position {
            line: marker.line().max(1),
            col: marker.col() + 1,
        }
    }

    /// Just past the last character of `text`, counting line breaks as yaml-rust2 does
    /// (`\n`, `\r\n`, a lone `\r`) and columns in characters.
    fn end_of(text: &str) -> Position {
        let mut end = Position::START;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            let line_break = c == '\n' || (c == '\r' && chars.peek() != Some(&'\n'));
            if line_break {
                end = Position {
                    line: end.line + 1,
                    col: 1,
                };
            } else if c != '\r' {
                end.col += 1;
            }
        }
        end
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding of `otfw check`, displayed as `file:line:col: error: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.col, self.severity, self.message
        )
    }
}

/// The path of `key` inside the mapping at `parent`.
pub fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The path of item `index` of the sequence at `parent`.
pub fn item(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// The path one level up: `a.b[2]` -> `a.b` -> `a` -> ``.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

/// Positions of every key and value of one YAML document, by path.
#[derive(Debug, Default)]
pub struct SourceMap {
    values: HashMap<String, Position>,
    keys: HashMap<String, Position>,
    /// Just past the last character of the text (`None` for a map of no text): no diagnostic
    /// points further.
    end: Option<Position>,
}

/// A mapping key that appears twice in one mapping.
#[derive(Debug, PartialEq, Eq)]
pub struct DuplicateKey {
    pub path: String,
    pub at: Position,
    pub first: Position,
}

/// The file is not well-formed YAML.
#[derive(Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub at: Position,
    pub message: String,
}

impl SourceMap {
    /// Indexes `text`. Duplicate keys do not stop the indexing: each is returned.
    pub fn parse(text: &str) -> Result<(SourceMap, Vec<DuplicateKey>), SyntaxError> {
        // At the end of the input yaml-rust2 moves its marker to the start of the line after
        // the last (as if the file ended with a line break): what it finds there (an error, the
        // empty value of a last `key:`) is at the end of the file, not on a line the file does
        // not have.
        let end = Position::end_of(text);
        let mut indexer = Indexer {
            end,
            map: SourceMap {
                end: Some(end),
                ..SourceMap::default()
            },
            stack: Vec::new(),
            duplicates: Vec::new(),
        };
        Parser::new_from_str(text)
            .load(&mut indexer, false)
            .map_err(|e| SyntaxError {
                at: Position::from_marker(e.marker()).min(end),
                message: e.info().to_string(),
            })?;
        Ok((indexer.map, indexer.duplicates))
    }

    /// Where the value at `path` starts; for a path the file does not contain (a missing key),
    /// the value of the nearest enclosing path that it does.
    pub fn value(&self, path: &str) -> Position {
        let mut path = Some(path);
        while let Some(p) = path {
            if let Some(pos) = self.values.get(p) {
                return *pos;
            }
            path = parent(p);
        }
        Position::START
    }

    /// Where the key naming the value at `path` starts (falls back like `value`).
    pub fn key(&self, path: &str) -> Position {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.value(path))
    }
}

enum Frame {
    Mapping {
        path: String,
        /// Path of the value whose key was just read; `None` while a key is expected.
        key: Option<String>,
        seen: HashMap<String, Position>,
    },
    Sequence {
        path: String,
        next: usize,
    },
    /// A collection used as a mapping key: not valid in a policy (serde reports it); skipped
    /// so the rest of the file is still indexed.
    ComplexKey,
}

struct Indexer {
    /// The end of the text: no position lies past it.
    end: Position,
    map: SourceMap,
    stack: Vec<Frame>,
    duplicates: Vec<DuplicateKey>,
}

impl Indexer {
    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Mapping { key: None, .. }))
    }

    fn in_complex_key(&self) -> bool {
        self.stack.iter().any(|f| matches!(f, Frame::ComplexKey))
    }

    fn on_key(&mut self, name: String, at: Position) {
        let Some(Frame::Mapping { path, key, seen }) = self.stack.last_mut() else {
            return;
        };
        let key_path = child(path, &name);
        // A block mapping's start marker lies past its first key; the key is the better spot.
        if seen.is_empty() {
            let start = self.map.values.entry(path.clone()).or_insert(at);
            *start = (*start).min(at);
        }
        match seen.get(&name) {
            Some(first) => self.duplicates.push(DuplicateKey {
                path: key_path.clone(),
                at,
                first: *first,
            }),
            None => {
                seen.insert(name, at);
                self.map.keys.insert(key_path.clone(), at);
            }
        }
        *key = Some(key_path);
    }

    /// Claims the path of a value that starts here and records its position.
    fn on_value(&mut self, at: Position) -> String {
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Mapping { key, .. }) => key.take().unwrap_or_default(),
            Some(Frame::Sequence { path, next }) => {
                *next += 1;
                item(path, *next - 1)
            }
            Some(Frame::ComplexKey) => return String::new(),
        };
        // A duplicate key's value must not move the first one's position.
        self.map.values.entry(path.clone()).or_insert(at);
        path
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, event: Event, marker: Marker) {
        let at = Position::from_marker(&marker).min(self.end);
        let complex = self.in_complex_key();
        match event {
            Event::Scalar(..) | Event::Alias(_) if complex => {}
            Event::Scalar(text, ..) if self.expecting_key() => self.on_key(text, at),
            Event::Scalar(..) | Event::Alias(_) => {
                self.on_value(at);
            }
            Event::MappingStart(..) | Event::SequenceStart(..)
                if complex || self.expecting_key() =>
            {
                self.stack.push(Frame::ComplexKey)
            }
            Event::MappingStart(..) => {
                let path = self.on_value(at);
                self.stack.push(Frame::Mapping {
                    path,
                    key: None,
                    seen: HashMap::new(),
                });
            }
            Event::SequenceStart(..) => {
                let path = self.on_value(at);
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(Frame::ComplexKey) = self.stack.pop() {
                    if !self.in_complex_key() {
                        self.on_key("?".to_string(), at);
                    }
                }
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// Collects the diagnostics of one file, placing each at the position of a path.
pub struct Diagnostics<'a> {
    file: &'a str,
    source: &'a SourceMap,
    list: Vec<Diagnostic>,
}

impl<'a> Diagnostics<'a> {
    pub fn new(file: &'a str, source: &'a SourceMap) -> Self {
        Diagnostics {
            file,
            source,
            list: Vec::new(),
        }
    }

    pub fn push(&mut self, at: Position, severity: Severity, message: impl Into<String>) {
        // Positions from elsewhere (serde_yaml's, like yaml-rust2's, can lie on the line after
        // the last when the text does not end with a line break) stop at the end of the file.
        let at = self.source.end.map_or(at, |end| at.min(end));
        self.list.push(Diagnostic {
            file: self.file.to_string(),
            line: at.line,
            col: at.col,
            severity,
            message: message.into(),
        });
    }

    /// An error about the value at `path`.
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.push(self.source.value(path), Severity::Error, message);
    }

    /// An error about the key of the value at `path` (unknown or duplicate keys).
    pub fn key_error(&mut self, path: &str, message: impl Into<String>) {
        self.push(self.source.key(path), Severity::Error, message);
    }

    /// A warning about the value at `path`.
    pub fn warning(&mut self, path: &str, message: impl Into<String>) {
        self.push(self.source.value(path), Severity::Warning, message);
    }

    /// Where the value at `path` is, to point at a related place in a message.
    pub fn position(&self, path: &str) -> Position {
        self.source.value(path)
    }

    pub fn has_errors(&self) -> bool {
        self.list.iter().any(Diagnostic::is_error)
    }

    /// The diagnostics in file order (errors before warnings at the same spot).
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.list.sort_by_key(|d| (d.line, d.col, d.severity));
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, col: usize) -> Position {
        Position { line, col }
    }

    #[test]
    fn indexes_keys_and_values_of_block_and_flow_collections() {
        let text = "a: 1\nb:\n  - x\n  - {c: 2, d: [3, 4]}\n  -\n    e: f\n";
        let (map, dups) = SourceMap::parse(text).unwrap();
        assert!(dups.is_empty());
        assert_eq!(map.value(""), at(1, 1));
        assert_eq!(map.key("a"), at(1, 1));
        assert_eq!(map.value("a"), at(1, 4));
        assert_eq!(map.value("b"), at(3, 3));
        assert_eq!(map.value("b[0]"), at(3, 5));
        assert_eq!(map.value("b[1]"), at(4, 5));
        assert_eq!(map.key("b[1].c"), at(4, 6));
        assert_eq!(map.value("b[1].d[1]"), at(4, 19));
        assert_eq!(map.value("b[2]"), at(6, 5));
        assert_eq!(map.value("b[2].e"), at(6, 8));
    }

    #[test]
    fn missing_paths_fall_back_to_their_nearest_ancestor() {
        let (map, _) = SourceMap::parse("a:\n  b: 1\n").unwrap();
        assert_eq!(map.value("a.c[3].d"), at(2, 3));
        assert_eq!(map.key("a.c"), at(2, 3));
        assert_eq!(map.value("zzz"), at(1, 1));
    }

    #[test]
    fn reports_every_duplicate_key() {
        let (map, dups) = SourceMap::parse("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n").unwrap();
        assert_eq!(
            dups,
            vec![
                DuplicateKey {
                    path: "b.c".into(),
                    at: at(4, 3),
                    first: at(3, 3)
                },
                DuplicateKey {
                    path: "a".into(),
                    at: at(5, 1),
                    first: at(1, 1)
                },
            ]
        );
        assert_eq!(map.value("a"), at(1, 4));
    }

    #[test]
    fn syntax_errors_carry_their_position() {
        let err = SourceMap::parse("a: [1\nb: 2").unwrap_err();
        assert_eq!(err.at, at(2, 2));
    }

    #[test]
    fn syntax_errors_at_the_end_of_the_file_point_inside_it() {
        // The last line has no line break: the error is at its end, not on a line 3.
        let err = SourceMap::parse("a: 1\nb").unwrap_err();
        assert_eq!(err.at, at(2, 2), "{err:?}");
        let err = SourceMap::parse("a: 1\r\nzones: [x\r\n  y").unwrap_err();
        assert_eq!(err.at, at(3, 4), "{err:?}");
        // With a final line break the end of the file is the start of the next line.
        let err = SourceMap::parse("a: 1\nb\n").unwrap_err();
        assert_eq!(err.at, at(3, 1), "{err:?}");
    }

    #[test]
    fn an_empty_last_value_is_at_the_end_of_the_file() {
        let (map, _) = SourceMap::parse("a: 1\nb:").unwrap();
        assert_eq!(map.value("b"), at(2, 3));
        let (map, _) = SourceMap::parse("zones:\n  cell:   # no networks").unwrap();
        assert_eq!(map.value("zones.cell"), at(2, 24));
    }

    #[test]
    fn diagnostics_stop_at_the_end_of_the_file() {
        let (map, _) = SourceMap::parse("a: 1\nb: x").unwrap();
        let mut diagnostics = Diagnostics::new("p.yaml", &map);
        diagnostics.push(at(3, 1), Severity::Error, "past the end");
        diagnostics.push(at(2, 2), Severity::Error, "inside");
        let lines: Vec<String> = diagnostics
            .into_sorted()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "p.yaml:2:2: error: inside",
                "p.yaml:2:5: error: past the end"
            ]
        );
    }

    #[test]
    fn the_end_of_a_text_counts_breaks_as_yaml_does() {
        assert_eq!(Position::end_of(""), at(1, 1));
        assert_eq!(Position::end_of("ab"), at(1, 3));
        assert_eq!(Position::end_of("a\nbé"), at(2, 3));
        assert_eq!(Position::end_of("a\r\nb\rc\n"), at(4, 1));
    }

    #[test]
    fn complex_keys_do_not_derail_the_index() {
        let (map, _) = SourceMap::parse("? [a, b]\n: 1\nc: 2\n").unwrap();
        assert_eq!(map.value("c"), at(3, 4));
    }

    #[test]
    fn diagnostic_display() {
        let d = Diagnostic {
            file: "p.yaml".into(),
            line: 3,
            col: 7,
            severity: Severity::Warning,
            message: "hm".into(),
        };
        assert_eq!(d.to_string(), "p.yaml:3:7: warning: hm");
    }
}
