//! `cargo xtask profile --case ID`: where one benchmark case's time goes, by function and by
//! source line of the eBPF programs, kernel helpers included (the map hash, the checksum
//! helpers, the test-run loop).
//!
//! `perf` samples the whole machine while `otfw bench-datapath --case ID` runs the case in a
//! loop; samples in the JIT-compiled programs are mapped back to source lines through the line
//! information the kernel keeps for each loaded program (`jited_line_info`: the address where
//! each line's code starts; `line_info` with the program's BTF: the file and line). perf alone
//! names only the program a sample fell in, and cannot annotate JIT code.
//!
//! Shares are of busy samples (idle excluded) while the case and the trivial program run
//! alternately, so the test-run loop and the baseline appear too; multiply a share by the
//! case's per-packet time from `cargo xtask bench` (or `otfw bench-datapath --case ID`) for an
//! estimate in nanoseconds.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use crate::{bench, cmd};

#[derive(Args)]
pub struct ProfileArgs {
    /// The benchmark case to profile (an id of `otfw bench-datapath`, e.g. modbus_read).
    #[arg(long = "case", value_name = "ID")]
    case: String,
    /// How long to sample.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Source lines to list.
    #[arg(long, default_value_t = 50)]
    lines: usize,
    /// Where the report goes (default: target/bench/profile-ID.md).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(repo: &Path, args: &ProfileArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("profiling loads XDP programs and samples the kernel: run it as root");
    }
    ensure!(args.seconds > 0, "--seconds must be at least 1");
    if cmd::stdout_of("perf", ["--version"]).is_none() {
        bail!(
            "perf is not installed: install it (Debian: apt install linux-perf; Ubuntu: apt \
             install linux-tools-$(uname -r)) and run this again"
        );
    }
    let otfw = bench::build_otfw(repo, false)?;
    let out = args.out.clone().unwrap_or_else(|| {
        repo.join("target")
            .join("bench")
            .join(format!("profile-{}.md", args.case))
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let data = out.with_extension("data");

    let before = program_ids()?;
    // Far more repetitions than the sampling needs: the run is ended once sampled.
    let mut child = Command::new(&otfw)
        .args([
            "bench-datapath",
            "--quick",
            "--repeat",
            "2000000",
            "--rounds",
            "100000",
        ])
        .args(["--case", &args.case])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", otfw.display()))?;
    let sampled = (|| -> Result<(Vec<Program>, Samples)> {
        let programs = wait_for_programs(&mut child, &before)?;
        let samples = record(&data, args.seconds)?;
        Ok((programs, samples))
    })();
    // Ended by its PID whatever happened; its programs go with it.
    let _ = child.kill();
    let status = child.wait();
    let (programs, samples) = match sampled {
        Ok(s) => s,
        Err(e) => {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
            }
            // The error, without the backtrace a debug environment may add to it.
            let said = stderr
                .split("\n\nStack backtrace")
                .next()
                .unwrap_or_default();
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            return Err(e.context(format!(
                "otfw bench-datapath ({status}) said: {}",
                said.trim()
            )));
        }
    };
    let report = render(&args.case, args.lines, &programs, &samples);
    std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    print!("{report}");
    println!(
        "profile: report in {} (samples in {})",
        out.display(),
        data.display()
    );
    Ok(())
}

/// One loaded eBPF program as the kernel describes it after JIT compilation.
struct Program {
    name: String,
    /// `(start, length)` of each of its JIT-compiled functions.
    functions: Vec<(u64, u32)>,
    /// `(address, line)`: where the code of each source line starts.
    lines: Vec<(u64, String)>,
    /// The JIT-compiled code: the functions' images in the order of `functions`.
    code: Vec<u8>,
}

/// Programs a `bench-datapath` run loads (the main program, its inspectors and forwarder, the
/// trivial program it is measured against).
const BENCH_PROGRAMS: [&str; 6] = [
    "otfw",
    "otfw_modbus",
    "otfw_enip",
    "otfw_enip_io",
    "otfw_forward",
    "baseline",
];

/// How long the set of loaded programs must stay the same before sampling starts: the run
/// loads a first object only to measure its maps' memory and drops it at once, then the one it
/// times; the verifier takes seconds for each inspector.
const SETTLED: Duration = Duration::from_secs(2);

/// Waits until `otfw bench-datapath` has loaded the programs it times, and describes the
/// programs loaded since `before`. Sampling earlier would sample the verifier, and miss the
/// programs loaded after the description.
fn wait_for_programs(child: &mut std::process::Child, before: &[u32]) -> Result<Vec<Program>> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen: Vec<u32> = Vec::new();
    let mut since = Instant::now();
    let mut failure = None;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the benchmark ended before it could be sampled ({status})");
        }
        let new: Vec<u32> = program_ids()?
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        if new != seen {
            seen = new;
            since = Instant::now();
        } else if since.elapsed() >= SETTLED {
            let mut programs = Vec::new();
            for &id in &seen {
                match describe(id) {
                    Ok(p) => programs.push(p),
                    Err(e) => failure = Some(e),
                }
            }
            if BENCH_PROGRAMS
                .iter()
                .all(|name| programs.iter().any(|p| p.name == *name))
            {
                return Ok(programs);
            }
        }
        if Instant::now() >= deadline {
            let why = failure.map_or(String::new(), |e| format!(" (last error: {e:#})"));
            bail!(
                "otfw bench-datapath did not load its programs ({}) within three minutes{why}",
                BENCH_PROGRAMS.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The samples of one `perf record` of the whole machine, as `(symbol, address)` with idle
/// left out.
type Samples = Vec<(String, u64)>;

fn record(data: &Path, seconds: u64) -> Result<Samples> {
    let mut perf = Command::new("perf");
    perf.args(["record", "-e", "cpu-clock", "-F", "20000", "-a", "-o"])
        .arg(data)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd::run(&mut perf).context("sampling with perf")?;
    let mut script = Command::new("perf");
    script
        .args(["script", "-F", "pid,ip,sym", "-i"])
        .arg(data)
        .stderr(Stdio::null());
    let output = cmd::capture(&mut script)?;
    ensure!(
        output.status.success(),
        "perf script could not read {}",
        data.display()
    );
    let mut samples = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut fields = line.split_whitespace();
        let (Some(pid), Some(ip)) = (fields.next(), fields.next()) else {
            continue;
        };
        // The idle task.
        if pid == "0" {
            continue;
        }
        let Ok(ip) = u64::from_str_radix(ip, 16) else {
            continue;
        };
        let sym = fields.next().unwrap_or("[unknown]").to_string();
        samples.push((sym, ip));
    }
    ensure!(!samples.is_empty(), "perf recorded no busy samples");
    Ok(samples)
}

fn render(case: &str, lines: usize, programs: &[Program], samples: &Samples) -> String {
    let total = samples.len() as f64;
    let mut by_symbol: HashMap<&str, usize> = HashMap::new();
    // By name: programs of the same name (the run loads more than one datapath) summed.
    for (sym, _) in samples {
        *by_symbol.entry(short_symbol(sym)).or_default() += 1;
    }
    let mut symbols: Vec<_> = by_symbol.into_iter().collect();
    symbols.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));

    // Every line-start address of every program, for the line each sample fell in.
    let mut starts: Vec<(u64, &str)> = programs
        .iter()
        .flat_map(|p| p.lines.iter().map(|(addr, line)| (*addr, line.as_str())))
        .collect();
    starts.sort_by_key(|s| s.0);
    let in_program = |ip: u64| {
        programs.iter().any(|p| {
            p.functions
                .iter()
                .any(|&(start, len)| ip >= start && ip < start + len as u64)
        })
    };
    let mut by_line: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut mapped = 0usize;
    for (sym, ip) in samples {
        if !in_program(*ip) {
            continue;
        }
        let i = starts.partition_point(|s| s.0 <= *ip);
        if i == 0 {
            continue;
        }
        let line = starts[i - 1].1;
        *by_line.entry((short_symbol(sym), line)).or_default() += 1;
        mapped += 1;
    }
    let mut hot: Vec<_> = by_line.into_iter().collect();
    hot.sort_by_key(|h| std::cmp::Reverse(h.1));

    let mut r = String::new();
    let _ = writeln!(r, "# Profile of `{case}`\n");
    let _ = writeln!(
        r,
        "{} busy samples (idle excluded), {} of them in otfw's and the baseline's programs \
         mapped to source lines. Shares are of busy samples: the case and the trivial program \
         run alternately, inside the kernel's test-run loop.\n",
        samples.len(),
        mapped
    );
    let _ = writeln!(r, "## By function\n\n| share | function |\n|---:|---|");
    for (sym, n) in symbols.iter().take(30) {
        let _ = writeln!(
            r,
            "| {:.1}% | `{}` |",
            100.0 * *n as f64 / total,
            short_symbol(sym)
        );
    }
    let _ = writeln!(
        r,
        "\n## By source line\n\n| share | function | line |\n|---:|---|---|"
    );
    for ((function, line), n) in hot.iter().take(lines) {
        let _ = writeln!(
            r,
            "| {:.2}% | {} | `{}` |",
            100.0 * *n as f64 / total,
            function,
            line.replace('|', "\\|")
        );
    }
    r.push_str(&instructions(programs, samples));
    r
}

/// Share of busy samples from which an instruction is shown in the instruction view.
const HOT_INSTRUCTION: f64 = 0.001;
/// Instructions shown before each hot one: a sample usually lands on an instruction after the
/// one that stalled (a load, a call's return).
const LEAD_IN: usize = 3;

/// The JIT-compiled code around the instructions with the most samples, per function of the
/// programs, disassembled by `objdump`: the machine-level view behind the source lines (which
/// lookup's key waits on a store, which call's return is expensive, what is spilled).
fn instructions(programs: &[Program], samples: &Samples) -> String {
    let total = samples.len() as f64;
    let mut by_address: HashMap<u64, usize> = HashMap::new();
    for (_, ip) in samples {
        *by_address.entry(*ip).or_default() += 1;
    }
    let mut r = format!(
        "\n## Hottest instructions\n\nThe JIT-compiled code of each function with at least \
         1% of the busy samples: every instruction with at least {:.1}% of them, with the {LEAD_IN} \
         before it (a sample usually lands after the instruction that stalled). Columns: share, \
         address, disassembly.\n",
        100.0 * HOT_INSTRUCTION
    );
    let arch = match std::env::consts::ARCH {
        "x86_64" => "i386:x86-64",
        "aarch64" => "aarch64",
        other => other,
    };
    let mut functions = Vec::new();
    for p in programs {
        let mut offset = 0usize;
        for &(start, len) in &p.functions {
            let code = p
                .code
                .get(offset..offset + len as usize)
                .unwrap_or_default();
            offset += len as usize;
            let n: usize = (start..start + len as u64)
                .filter_map(|a| by_address.get(&a))
                .sum();
            if n as f64 >= 0.01 * total && !code.is_empty() {
                // The function's name as perf's samples give it (the kernel's symbol).
                let name = samples
                    .iter()
                    .find(|(_, ip)| (start..start + len as u64).contains(ip))
                    .map_or(p.name.as_str(), |(sym, _)| short_symbol(sym));
                functions.push((n, p, name, start, code));
            }
        }
    }
    functions.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (n, program, name, start, code) in functions {
        let listing = match disassemble(arch, start, code) {
            Ok(listing) => listing,
            Err(e) => {
                let _ = writeln!(r, "\n(no instruction view: {e:#})");
                return r;
            }
        };
        let function = program
            .lines
            .iter()
            .filter(|(a, _)| *a <= start)
            .max_by_key(|(a, _)| *a)
            .map_or("", |(_, l)| l.as_str());
        let _ = writeln!(
            r,
            "\n### {name} (program {}) at {start:#x}, {:.1}% (first line: `{}`)\n\n```",
            program.name,
            100.0 * n as f64 / total,
            function
        );
        let hot: Vec<bool> = listing
            .iter()
            .map(|(a, _)| by_address.get(a).copied().unwrap_or(0) as f64 >= HOT_INSTRUCTION * total)
            .collect();
        let mut last = None;
        for (i, (address, text)) in listing.iter().enumerate() {
            if !hot[i..(i + LEAD_IN + 1).min(hot.len())].iter().any(|&h| h) {
                continue;
            }
            if last.is_some_and(|l| l + 1 != i) {
                r.push_str("   ...\n");
            }
            last = Some(i);
            let share = by_address.get(address).map_or(String::new(), |&c| {
                format!("{:.2}%", 100.0 * c as f64 / total)
            });
            let _ = writeln!(r, "{share:>7} {address:x}  {text}");
        }
        r.push_str("```\n");
    }
    r
}

/// `(address, instruction)` of JIT code `code` loaded at `start`, by objdump.
fn disassemble(arch: &str, start: u64, code: &[u8]) -> Result<Vec<(u64, String)>> {
    let file = std::env::temp_dir().join(format!("otfw-profile-{}.bin", std::process::id()));
    std::fs::write(&file, code).with_context(|| format!("writing {}", file.display()))?;
    let output = Command::new("objdump")
        .args(["-D", "-b", "binary", "-m", arch, "--no-show-raw-insn"])
        .arg(format!("--adjust-vma={start:#x}"))
        .arg(&file)
        .stderr(Stdio::null())
        .output();
    let _ = std::fs::remove_file(&file);
    let output = output.context("objdump (binutils) is not installed")?;
    ensure!(
        output.status.success(),
        "objdump could not disassemble for {arch}"
    );
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (address, text) = line.split_once(':')?;
            let address = u64::from_str_radix(address.trim(), 16).ok()?;
            Some((address, text.trim().replace('\t', " ")))
        })
        .collect())
}

/// `bpf_prog_<tag>_<name>` as `<name>` (the tag changes with every build).
fn short_symbol(sym: &str) -> &str {
    match sym.strip_prefix("bpf_prog_") {
        Some(rest) => rest.split_once('_').map_or(rest, |(_, name)| name),
        None => sym,
    }
}

// The bpf(2) commands and records used here (include/uapi/linux/bpf.h).
const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_BTF_GET_FD_BY_ID: libc::c_long = 19;

/// `struct bpf_prog_info`, as far as this reads it (the kernel accepts a shorter struct). No
/// padding: every byte is a field the kernel reads.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
    ifindex: u32,
    gpl_compatible: u32,
    netns_dev: u64,
    netns_ino: u64,
    nr_jited_ksyms: u32,
    nr_jited_func_lens: u32,
    jited_ksyms: u64,
    jited_func_lens: u64,
    btf_id: u32,
    func_info_rec_size: u32,
    func_info: u64,
    nr_func_info: u32,
    nr_line_info: u32,
    line_info: u64,
    jited_line_info: u64,
    nr_jited_line_info: u32,
    line_info_rec_size: u32,
    jited_line_info_rec_size: u32,
    /// Named so that it is zeroed: left as padding, it would be whatever the stack held, and
    /// the kernel would write that many tags through a null pointer.
    nr_prog_tags: u32,
}

const _: () = {
    assert!(std::mem::offset_of!(ProgInfo, nr_jited_ksyms) == 104);
    assert!(std::mem::offset_of!(ProgInfo, btf_id) == 128);
    assert!(std::mem::offset_of!(ProgInfo, nr_line_info) == 148);
    assert!(std::mem::offset_of!(ProgInfo, jited_line_info_rec_size) == 176);
    assert!(std::mem::size_of::<ProgInfo>() == 184);
};

/// `struct bpf_line_info`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct LineInfo {
    insn_off: u32,
    file_name_off: u32,
    line_off: u32,
    line_col: u32,
}

/// `struct bpf_btf_info`.
#[repr(C)]
#[derive(Default)]
struct BtfInfo {
    btf: u64,
    btf_size: u32,
    id: u32,
    name: u64,
    name_len: u32,
    kernel_btf: u32,
}

fn bpf(command: libc::c_long, attr: &mut [u32]) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, writable buffer of the length passed; every command used here
    // reads (and at most writes) within it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// The ids of every loaded program.
fn program_ids() -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    let mut start = 0;
    loop {
        let mut attr = [start, 0, 0, 0];
        match bpf(BPF_PROG_GET_NEXT_ID, &mut attr) {
            Ok(_) => {
                start = attr[1];
                ids.push(start);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(ids),
            Err(e) => return Err(e).context("listing the loaded eBPF programs"),
        }
    }
}

fn fd_of(command: libc::c_long, id: u32) -> Result<OwnedFd> {
    let mut attr = [id, 0, 0, 0];
    let fd = bpf(command, &mut attr).with_context(|| format!("opening eBPF object {id}"))?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Fills `info` (a `bpf_*_info` struct) for the object behind `fd`.
fn object_info<T>(fd: &OwnedFd, info: &mut T) -> Result<()> {
    // `{bpf_fd: u32, info_len: u32, info: u64}`, the pointer as two native-endian halves.
    let address = (info as *mut T as u64).to_ne_bytes();
    let half =
        |h: usize| u32::from_ne_bytes([address[h], address[h + 1], address[h + 2], address[h + 3]]);
    let mut attr = [
        fd.as_raw_fd() as u32,
        std::mem::size_of::<T>() as u32,
        half(0),
        half(4),
    ];
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("reading an eBPF object's description")?;
    Ok(())
}

fn describe(id: u32) -> Result<Program> {
    let fd = fd_of(BPF_PROG_GET_FD_BY_ID, id)?;
    let mut counts = ProgInfo::default();
    object_info(&fd, &mut counts)?;
    let name_len = counts.name.iter().position(|&b| b == 0).unwrap_or(16);
    let name = String::from_utf8_lossy(&counts.name[..name_len]).into_owned();
    ensure!(
        counts.line_info_rec_size == 0
            || counts.line_info_rec_size as usize >= std::mem::size_of::<LineInfo>(),
        "unexpected line info record size"
    );
    let mut ksyms = vec![0u64; counts.nr_jited_ksyms as usize];
    let mut lens = vec![0u32; counts.nr_jited_func_lens as usize];
    let mut line_info = vec![LineInfo::default(); counts.nr_line_info as usize];
    let mut jited_lines = vec![0u64; counts.nr_jited_line_info as usize];
    let mut code = vec![0u8; counts.jited_prog_len as usize];
    let mut info = ProgInfo {
        jited_prog_len: code.len() as u32,
        jited_prog_insns: code.as_mut_ptr() as u64,
        nr_jited_ksyms: ksyms.len() as u32,
        nr_jited_func_lens: lens.len() as u32,
        jited_ksyms: ksyms.as_mut_ptr() as u64,
        jited_func_lens: lens.as_mut_ptr() as u64,
        nr_line_info: line_info.len() as u32,
        line_info: line_info.as_mut_ptr() as u64,
        line_info_rec_size: std::mem::size_of::<LineInfo>() as u32,
        nr_jited_line_info: jited_lines.len() as u32,
        jited_line_info: jited_lines.as_mut_ptr() as u64,
        jited_line_info_rec_size: 8,
        ..Default::default()
    };
    object_info(&fd, &mut info)?;
    let strings = if counts.btf_id != 0 {
        btf_strings(counts.btf_id).unwrap_or_default()
    } else {
        Vec::new()
    };
    let text = |off: u32| -> String {
        let s = strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        String::from_utf8_lossy(&s[..end]).into_owned()
    };
    let lines = line_info
        .iter()
        .zip(&jited_lines)
        .map(|(l, &addr)| {
            let file = text(l.file_name_off);
            let file = file.rsplit('/').next().unwrap_or_default().to_string();
            (
                addr,
                format!("{file}:{}  {}", l.line_col >> 10, text(l.line_off).trim()),
            )
        })
        .collect();
    Ok(Program {
        name,
        functions: ksyms.into_iter().zip(lens).collect(),
        lines,
        code,
    })
}

/// The string section of BTF object `id` (file names and source lines of line info).
fn btf_strings(id: u32) -> Result<Vec<u8>> {
    let fd = fd_of(BPF_BTF_GET_FD_BY_ID, id)?;
    let mut size = BtfInfo::default();
    object_info(&fd, &mut size)?;
    let mut raw = vec![0u8; size.btf_size as usize];
    let mut info = BtfInfo {
        btf: raw.as_mut_ptr() as u64,
        btf_size: raw.len() as u32,
        ..Default::default()
    };
    object_info(&fd, &mut info)?;
    // struct btf_header: magic u16, version u8, flags u8, hdr_len, type_off, type_len,
    // str_off, str_len (u32 each).
    ensure!(raw.len() >= 24, "BTF too short");
    let word = |at: usize| u32::from_ne_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
    let (hdr_len, str_off, str_len) = (word(4) as usize, word(16) as usize, word(20) as usize);
    let start = hdr_len + str_off;
    raw.get(start..start + str_len)
        .map(<[u8]>::to_vec)
        .context("BTF string section out of bounds")
}
