//! Where the lab finds the project's binaries and the Python venv.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The repository root (the parent of this crate's directory), as compiled in.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the repository root")
        .to_path_buf()
}

/// A binary of this workspace (`otfw`, `otfw-peer`) built into the same target directory
/// and profile as the running executable: next to it, or one level up for test binaries,
/// which cargo puts in `deps/`.
pub fn target_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .collect();
    if let Some(found) = candidates.iter().find(|path| path.is_file()) {
        return Ok(found.clone());
    }
    bail!(
        "`{name}` is not built (looked at {}): run `cargo build --bins` in the same profile \
         (`cargo xtask test` does)",
        candidates
            .iter()
            .map(|path| path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The Python interpreter of the venv that `cargo xtask setup` fills with the pinned peers
/// (pymodbus, cpppo, pycomm3).
pub fn venv_python() -> Result<PathBuf> {
    let python = repo_root().join(".venv").join("bin").join("python");
    if !python.is_file() {
        bail!(
            "{} is missing: run `cargo xtask setup` to create the venv",
            python.display()
        );
    }
    Ok(python)
}
