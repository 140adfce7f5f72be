//! `ri run` of a pack in the background and the JSON prints of an
//! aggregating command, for the pack test binaries.

use std::process::{Child, Command};

use serde_json::Value;

use crate::{Reader, ri_bin, sigint, start_waiting};

/// Starts `ri run ARGS` and returns once its probes are attached.
pub fn run_attached(args: &[&str]) -> (Child, Reader, Reader) {
    let mut cmd = Command::new(ri_bin());
    cmd.arg("run").args(args);
    start_waiting(cmd, "attached", true)
}

/// Stops an `ri run` started by [`run_attached`] with Ctrl-C; its stdout
/// and stderr.
pub fn stop(mut child: Child, out: Reader, err: Reader) -> (String, String) {
    sigint(&mut child);
    let out = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
    let err = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    (out, err)
}

/// The JSON prints of an aggregating command, in order.
pub fn prints(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The last (`final`) print's entries.
pub fn final_entries(stdout: &str) -> Vec<Value> {
    let all = prints(stdout);
    let last = all
        .iter()
        .rev()
        .find(|p| p["type"] == "final")
        .unwrap_or_else(|| panic!("no final print in:\n{stdout}"));
    last["entries"].as_array().cloned().unwrap_or_default()
}
