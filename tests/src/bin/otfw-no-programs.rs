//! `otfw-no-programs COMMAND [ARGS...]`: runs COMMAND in a process where the kernel refuses
//! every BPF program load, as a kernel whose verifier or security policy rejects otfw's
//! program would. A seccomp filter answers `bpf(BPF_PROG_LOAD, ...)` with `EACCES`; every
//! other system call (map creation and pinning included) goes through.

use std::os::unix::process::CommandExt as _;

const BPF_PROG_LOAD: u32 = 5;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// Offsets in `struct seccomp_data`: the system call number, the architecture, and the low
/// half of the first argument (little-endian).
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0: u32 = 16;

fn statement(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_unless_equal(k: u32, skip: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: 0,
        jf: skip,
        k,
    }
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(command) = args.next() else {
        eprintln!("usage: otfw-no-programs COMMAND [ARGS...]");
        std::process::exit(2);
    };
    let load = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let mut filter = [
        statement(load, ARCH),
        // Another architecture's system call numbers mean something else: let it through.
        jump_unless_equal(AUDIT_ARCH, 5),
        statement(load, NR),
        jump_unless_equal(libc::SYS_bpf as u32, 3),
        statement(load, ARG0),
        jump_unless_equal(BPF_PROG_LOAD, 1),
        statement(ret, libc::SECCOMP_RET_ERRNO | libc::EACCES as u32),
        statement(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(
        ret,
        0,
        "PR_SET_NO_NEW_PRIVS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `program` points to `filter`, both alive for the call; the kernel copies them.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &program as *const libc::sock_fprog,
        )
    };
    assert_eq!(
        ret,
        0,
        "PR_SET_SECCOMP: {}",
        std::io::Error::last_os_error()
    );
    let error = std::process::Command::new(&command).args(args).exec();
    eprintln!("otfw-no-programs: running {command:?}: {error}");
    std::process::exit(127);
}
