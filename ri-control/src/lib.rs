//! `ri-control`: the in-target half of `ri`'s cooperative mutation.
//!
//! A target links this library and calls [`Control::builder`]; the library
//! opens a Unix control socket at `/run/ri/<name>.<pid>.sock` (or a
//! fallback directory, see [`paths`]) and serves commands the target
//! registered, on its own threads. Inspection by `ri` needs nothing from the
//! target; changing it does, and goes through here:
//!
//! - only the target's own uid (or root) may connect (`SO_PEERCRED`);
//! - commands that change state must be confirmed with `"mutate": true`;
//! - every mutation attempt is appended to an audit log and kept in memory;
//! - handlers run on library threads, a panicking handler becomes an error
//!   response, and the target keeps running.
//!
//! ```no_run
//! use ri_control::{Command, Control};
//! use serde_json::json;
//!
//! let ctl = Control::builder("myapp").start()?;
//! ctl.register(
//!     Command::new("cache.clear", "Drop every cached entry", |_args, _peer| {
//!         Ok(json!({"dropped": 42}))
//!     })
//!     .mutating(),
//! )?;
//! ctl.report_section("cache", || json!({"entries": 42}))?;
//! # Ok::<(), ri_control::ControlError>(())
//! ```
//!
//! The wire protocol is described in `docs/CONTROL-PROTOCOL.md` and in
//! [`protocol`]; [`client`] is the matching client used by `ri ctl`; [`ffi`]
//! is the C API declared in `include/ri_control.h`.

#![warn(missing_docs)]

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub mod audit;
pub mod client;
pub mod ffi;
pub mod paths;
pub mod protocol;
pub mod report;
pub mod schema;
mod server;
pub mod signal;
mod sys;
pub mod time;

pub use client::{Client, ClientError};
pub use paths::{SocketInfo, discover};
pub use protocol::{CommandInfo, PROTOCOL_VERSION};
pub use report::{ReportFn, ReportTarget};
pub use server::{Command, Control, ControlBuilder, ControlError, Handler, Peer, Transport};
pub use sys::pid_alive;

/// Version of this library.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Locks a mutex, ignoring poisoning (handlers run under `catch_unwind`, so
/// a poisoned lock only means some earlier panic was already reported).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read-locks an `RwLock`, ignoring poisoning.
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

/// Write-locks an `RwLock`, ignoring poisoning.
pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn public_handles_are_send_and_sync() {
        send_sync::<crate::Control>();
        send_sync::<crate::Command>();
        send_sync::<crate::Client>();
    }
}
