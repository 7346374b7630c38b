use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

/// Builds the XDP object (firewall-ebpf) for the bpf target with the nightly toolchain and
/// bpf-linker; src/datapath embeds it with `include_bytes_aligned!`.
fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "firewall-ebpf")
        .ok_or_else(|| anyhow!("firewall-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("firewall-ebpf manifest has no parent directory"))?
        .as_str()
        .to_owned();
    aya_build::build_ebpf(
        [Package {
            name: "firewall-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the XDP object; if bpf-linker or the nightly toolchain is missing, run `cargo xtask setup`")
}
