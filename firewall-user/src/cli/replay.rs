//! `otfw replay --policy FILE CAPTURE...`: what the firewall would have done with recorded
//! traffic, frame by frame, through the real XDP program.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The policy to judge the captures by.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// TCP checksums: `repair` recomputes wrong ones before judging (captures taken on an
    /// endpoint with checksum offload record unfinished checksums), `verify` judges frames as
    /// captured (captures from a mirror port or tap).
    #[arg(long, value_enum, default_value_t = crate::offload::Checksums::Repair)]
    pub checksums: crate::offload::Checksums,
    /// Write the frames the gateway would forward, as it would forward them (refused requests
    /// neutralised, answers restored; dropped frames left out), to this pcap file (Ethernet).
    #[arg(long, value_name = "OUT.pcap")]
    pub write: Option<PathBuf>,
    /// pcap or pcapng files (Ethernet, Linux cooked, BSD loopback or raw IP), replayed in the
    /// order given.
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
}

pub fn run(args: ReplayArgs) -> anyhow::Result<u8> {
    let policy = match super::load_compiled(&args.policy) {
        Ok(p) => p,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!("policy {} has errors", args.policy.display());
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let summary = crate::replay::replay(
        &policy,
        &args.captures,
        args.checksums,
        args.write.as_deref(),
        &mut out,
    )?;
    use std::io::Write as _;
    out.flush().context("writing to stdout")?;
    eprintln!(
        "{} frames from {} file(s): {} passed, {} refused, {} dropped",
        summary.frames, summary.files, summary.passed, summary.refused, summary.dropped
    );
    if summary.answers_substituted != 0 {
        eprintln!(
            "{} frames: captured answers to refused requests replaced by the exception a live \
             server sends to the neutralised request; {} frames renumbered after them",
            summary.answers_substituted, summary.sequence_shifted
        );
    }
    if summary.checksums_repaired != 0 {
        eprintln!(
            "{} TCP checksums repaired before judging (checksum offload on the capturing host; \
             --checksums verify judges them as captured)",
            summary.checksums_repaired
        );
    }
    Ok(0)
}
