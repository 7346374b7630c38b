use which::which;

/// Rebuild when bpf-linker changes (a new LLVM changes the object).
fn main() {
    let bpf_linker = which("bpf-linker").expect(
        "bpf-linker not found: run `cargo xtask setup` (it builds bpf-linker for the nightly's LLVM)",
    );
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
