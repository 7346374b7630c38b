//! The kernel-side measurements: runs `otfw bench-datapath` (root, BPF_PROG_TEST_RUN) and
//! summarises its raw samples into ratios to the baseline program and to the smallest policy.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::stats::Summary;
use crate::cmd;

#[derive(Deserialize, Debug)]
pub struct Raw {
    pub repeat: u32,
    pub rounds: usize,
    pub cpus: usize,
    pub kernel: String,
    pub verified_instructions: Option<u32>,
    pub cases: Vec<Case>,
    pub sizes: Vec<Size>,
    pub samples: Vec<Sample>,
    pub control: Control,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Case {
    pub id: String,
    pub title: String,
    pub inspected: bool,
    pub note: String,
    pub frame_len: usize,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Size {
    pub conduits: usize,
    pub prefixes: usize,
    pub map_bytes: u64,
}

#[derive(Deserialize, Debug)]
pub struct Sample {
    pub round: usize,
    pub size: usize,
    pub case: usize,
    pub otfw_ns: f64,
    pub baseline_ns: f64,
}

#[derive(Deserialize, Debug)]
pub struct Control {
    pub conduits: usize,
    pub prefixes: usize,
    pub yaml_bytes: usize,
    pub compile_ms: Vec<f64>,
    pub swap_ms: Vec<f64>,
    pub phases_ms: Vec<(String, f64)>,
    pub map_bytes: Vec<(String, u64)>,
}

/// One case at one policy size.
#[derive(Debug, Clone)]
pub struct Cell {
    pub otfw_ns: Summary,
    pub baseline_ns: Summary,
    /// otfw / baseline, paired per measurement.
    pub ratio: Summary,
    /// This size's ratio over the smallest policy's ratio, paired per round.
    pub scaling: Summary,
}

#[derive(Debug)]
pub struct Datapath {
    pub raw: Raw,
    /// `[size][case]`.
    pub cells: Vec<Vec<Cell>>,
}

impl Datapath {
    pub fn cell(&self, size: usize, case: &str) -> Option<&Cell> {
        let c = self.raw.cases.iter().position(|k| k.id == case)?;
        self.cells.get(size)?.get(c)
    }

    pub fn case(&self, id: &str) -> Option<&Case> {
        self.raw.cases.iter().find(|k| k.id == id)
    }
}

pub fn measure(otfw: &Path, quick: bool, example: &Path) -> Result<Datapath> {
    let mut command = Command::new(otfw);
    command.arg("bench-datapath").arg("--policy").arg(example);
    if quick {
        command.arg("--quick");
    }
    println!("bench: measuring the datapath: {}", cmd::display(&command));
    let output = cmd::capture(&mut command)?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            cmd::display(&command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    let raw: Raw = serde_json::from_slice(&output.stdout)
        .context("otfw bench-datapath printed no valid report")?;
    Ok(summarise(raw))
}

fn summarise(raw: Raw) -> Datapath {
    let sample = |size: usize, case: usize| {
        raw.samples
            .iter()
            .filter(move |s| s.size == size && s.case == case)
    };
    let cells = (0..raw.sizes.len())
        .map(|size| {
            (0..raw.cases.len())
                .map(|case| {
                    let ratio = |s: &Sample| s.otfw_ns / s.baseline_ns.max(1.0);
                    let scaling: Vec<f64> = sample(size, case)
                        .filter_map(|s| {
                            let reference = sample(0, case).find(|r| r.round == s.round)?;
                            Some(ratio(s) / ratio(reference))
                        })
                        .collect();
                    Cell {
                        otfw_ns: Summary::of(sample(size, case).map(|s| s.otfw_ns)),
                        baseline_ns: Summary::of(sample(size, case).map(|s| s.baseline_ns)),
                        ratio: Summary::of(sample(size, case).map(ratio)),
                        scaling: Summary::of(scaling),
                    }
                })
                .collect()
        })
        .collect();
    Datapath { raw, cells }
}
