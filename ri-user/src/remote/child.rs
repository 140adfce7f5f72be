//! The remote side of a fleet command: checks the protocol, then ends this
//! ri (detaching its probes) when the local ri or its connection goes away.

use std::{
    io::Read,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use super::{HELLO, PROTOCOL, RemoteError};

/// A local ri writes a heartbeat line this often ([`HEARTBEAT`]); this
/// long without one means the connection is gone, even when TCP has not
/// noticed yet.
const SILENCE_MS: i32 = 2000;

/// How often the local ri writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(250);

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether this ri runs for a local ri over ssh (aggregations then print
/// JSON with raw buckets, for an exact merge).
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Enters remote mode after checking that the local ri speaks `theirs`
/// (the protocol, and the build when it names one).
///
/// The run ends (SIGTERM to itself, which every command handles as Ctrl-C)
/// when stdin reaches end of file, which is what ssh delivers when the local
/// ri exits, is killed, or the connection closes; when stdin stays silent
/// for 2 s (the local ri's heartbeat stopped: a dropped connection); or when the parent (the
/// sshd session) dies. SIGHUP ends it too. A run that has not ended a
/// second after that exits outright: closing its descriptors detaches.
pub fn enter(theirs: &str) -> Result<(), RemoteError> {
    let (proto, build) = match theirs.split('/').collect::<Vec<_>>()[..] {
        [a, b, c] => (format!("{a}/{b}"), Some(c)),
        _ => (theirs.to_string(), None),
    };
    if proto != PROTOCOL {
        return Err(RemoteError::Protocol {
            ours: PROTOCOL.into(),
            theirs: proto,
        });
    }
    let ours = super::build_id();
    if let Some(b) = build
        && b != ours
    {
        return Err(RemoteError::Build {
            ours: ours.into(),
            theirs: b.into(),
        });
    }
    ACTIVE.store(true, Ordering::Relaxed);
    crate::ctl::defer::hold_mutations();
    // Tells the local ri that what follows on stderr is this ri's own.
    eprintln!("{HELLO}");
    // SAFETY: prctl and signal with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        libc::signal(libc::SIGHUP, libc::SIG_DFL);
        if libc::getppid() == 1 {
            libc::_exit(1);
        }
    }
    std::thread::spawn(|| {
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin();
        loop {
            let mut fd = libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd on our stack.
            let n = unsafe { libc::poll(&mut fd, 1, SILENCE_MS) };
            if n == 0 || !matches!(stdin.read(&mut buf), Ok(n) if n > 0) {
                break;
            }
        }
        end();
    });
    Ok(())
}

/// Asks this process to end, then makes sure it does.
fn end() {
    // SAFETY: signals to our own process.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(1200));
    // SAFETY: as above; the kernel releases every probe with the descriptors.
    unsafe { libc::_exit(3) };
}
