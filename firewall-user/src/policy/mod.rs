//! Policies: YAML source -> validated model -> compiled map contents. Pure: no kernel needed.
//!
//! [`check_str`] and [`load`] run the whole pipeline: index positions (`source`), read the
//! document (`model`), check it (`validate`), warn about doubtful parts (`lint`), and build the
//! map contents (`compile`). Every problem comes back as a [`Diagnostic`] with its line and
//! column; a policy loads when none of them is an error. [`diff`] compares two loaded policies
//! by what they allow (`otfw diff`).

pub mod compile;
pub mod compiled;
pub mod diff;
pub mod enip;
pub mod git;
pub mod lint;
pub mod modbus;
pub mod model;
pub mod permissions;
pub mod source;
pub mod validate;
pub mod validated;

use std::path::Path;

pub use compiled::CompiledPolicy;
pub use source::{Diagnostic, Severity};
pub use validated::Policy;

use source::{Diagnostics, SourceMap};

/// A policy that passed `otfw check`: its validated form, its map contents, and the warnings
/// it drew.
#[derive(Clone, Debug)]
pub struct LoadedPolicy {
    pub policy: Policy,
    pub compiled: CompiledPolicy,
    pub warnings: Vec<Diagnostic>,
}

/// Reads and checks the policy file at `path`. Diagnostics name the file as given.
pub fn load(path: &Path) -> Result<LoadedPolicy, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic {
            file: file.clone(),
            line: 1,
            col: 1,
            severity: Severity::Error,
            message: format!("cannot read the policy file: {e}"),
        }]
    })?;
    match check_str(&file, &text) {
        (Some(loaded), _) => Ok(loaded),
        (None, diagnostics) => Err(diagnostics),
    }
}

/// Checks policy `text` (named `file_name` in diagnostics). Returns the loaded policy if there
/// was no error, and every diagnostic (errors and warnings) in file order.
pub fn check_str(file_name: &str, text: &str) -> (Option<LoadedPolicy>, Vec<Diagnostic>) {
    let (source, duplicates) = match SourceMap::parse(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            let empty = SourceMap::default();
            let mut diagnostics = Diagnostics::new(file_name, &empty);
            diagnostics.push(
                e.at,
                Severity::Error,
                format!("not valid YAML: {}", e.message),
            );
            return (None, diagnostics.into_sorted());
        }
    };
    let mut diagnostics = Diagnostics::new(file_name, &source);
    for duplicate in duplicates {
        let key = duplicate.path.rsplit('.').next().unwrap_or_default();
        diagnostics.push(
            duplicate.at,
            Severity::Error,
            format!(
                "duplicate key `{key}` (first on line {}); keep one",
                duplicate.first.line
            ),
        );
    }
    let loaded = load_checked(text, &mut diagnostics);
    let diagnostics = diagnostics.into_sorted();
    let loaded = loaded.map(|(policy, compiled)| LoadedPolicy {
        policy,
        compiled,
        warnings: diagnostics.clone(),
    });
    (loaded, diagnostics)
}

fn load_checked(text: &str, diagnostics: &mut Diagnostics) -> Option<(Policy, CompiledPolicy)> {
    let document = model::read(text, diagnostics)?;
    let policy = validate::validate(&document, diagnostics)?;
    lint::lint(&policy, diagnostics);
    match compile::compile(&policy) {
        Ok(compiled) => Some((policy, compiled)),
        Err(errors) => {
            for e in errors {
                diagnostics.error(&e.path, e.message);
            }
            None
        }
    }
}
