//! Asking a CPU for its batch of events: `ri_flush` is never attached; it
//! runs on a chosen CPU through `BPF_PROG_TEST_RUN` with
//! `BPF_F_TEST_RUN_ON_CPU`, so a batch left behind by a CPU that saw no
//! more events still reaches the reader within a tick or two.

use std::os::fd::{AsRawFd, OwnedFd};

/// `BPF_PROG_TEST_RUN`.
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// Run the program on `cpu` rather than the caller's CPU.
const BPF_F_TEST_RUN_ON_CPU: u32 = 1;

/// The test-run part of `union bpf_attr` (up to `batch_size`).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

/// The loaded `ri_flush` program.
pub struct Flusher {
    prog: OwnedFd,
}

impl Flusher {
    /// Wraps the program's fd.
    pub fn new(prog: OwnedFd) -> Self {
        Flusher { prog }
    }

    /// Runs the program on `cpu`: its batch goes to the ring.
    pub fn flush(&self, cpu: u32) -> std::io::Result<()> {
        let attr = TestRunAttr {
            prog_fd: self.prog.as_raw_fd() as u32,
            flags: BPF_F_TEST_RUN_ON_CPU,
            cpu,
            ..Default::default()
        };
        // SAFETY: a zero-padded test-run attr with no pointers, its own size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &attr as *const TestRunAttr,
                std::mem::size_of::<TestRunAttr>() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
