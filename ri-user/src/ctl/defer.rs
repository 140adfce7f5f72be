//! Mutations held back for a local ri to confirm: when this ri runs for a
//! fleet command (`remote/` turns this on), a mutating call is not made but
//! named on stderr, and the run ends with [`NEEDS_CONFIRMATION`].

use std::sync::atomic::{AtomicBool, Ordering};

/// Exit status of a remote ri that held back a mutation for the local ri
/// to confirm.
pub const NEEDS_CONFIRMATION: u8 = 4;

/// Opens a stderr line naming a process a held-back mutation would touch;
/// JSON follows.
pub const CONFIRM: &str = "ri-remote-confirm";

/// Whether mutations are held back (this ri runs for a local one).
static HOLD: AtomicBool = AtomicBool::new(false);

/// Whether a mutation was held back.
static HELD: AtomicBool = AtomicBool::new(false);

/// From now on, mutations are held back instead of asked about.
pub fn hold_mutations() {
    HOLD.store(true, Ordering::Relaxed);
}

/// Whether mutations are held back.
pub fn holding() -> bool {
    HOLD.load(Ordering::Relaxed)
}

/// Holds back a mutation: tells the local ri, on a line of its own on
/// stderr, which process it would touch (`pid`, `comm`) with which command.
pub fn hold(pid: i64, comm: &str, command: &str) {
    if holding() {
        HELD.store(true, Ordering::Relaxed);
        let line = serde_json::json!({"pid": pid, "comm": comm, "command": command});
        eprintln!("{CONFIRM} {line}");
    }
}

/// Whether a mutation was held back: the run then exits with
/// [`NEEDS_CONFIRMATION`].
pub fn held() -> bool {
    HELD.load(Ordering::Relaxed)
}
