//! Where the shared corpus of real captures lives: ../shared/pcaps beside the repository.

use std::path::PathBuf;

/// The corpus directory; fails with a clear message when it is missing.
pub fn dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps");
    assert!(
        dir.is_dir(),
        "{} is missing: the corpus lives in ../shared/pcaps next to the repository",
        dir.display()
    );
    dir
}
