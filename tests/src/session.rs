//! A capture session (`ri session run`) on a live m0d, for the session
//! test binaries.

use std::process::{Child, Command};

use crate::{
    Reader,
    m0sim::{M0d, M0dConfig},
    ri_bin, sigint, start_waiting,
};

/// Live sessions one at a time: the flight-recorder window is timed.
pub static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A session running on an m0d whose requests take about 40 ms.
pub struct Live {
    /// Holds the session file and the bundle.
    pub dir: tempfile::TempDir,
    /// The bundle directory.
    pub bundle: std::path::PathBuf,
    /// The target.
    pub m0d: M0d,
    /// `ri session run`.
    pub session: Child,
    out: Reader,
    err: Reader,
}

/// Writes the session file `toml` and runs it on a new m0d (`-p`), with
/// `extra` arguments, until its instruments are attached.
pub fn start(toml: &str, extra: &[&str]) -> Live {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("session.toml");
    std::fs::write(&file, toml).unwrap();
    let bundle = dir.path().join("bundle");
    let m0d = M0d::start_with(M0dConfig {
        args: vec!["--handler-delay-us".into(), "40000".into()],
        ..Default::default()
    });
    let mut cmd = Command::new(ri_bin());
    cmd.args(["session", "run", file.to_str().unwrap()])
        .args([
            "-p",
            &m0d.pid.to_string(),
            "-q",
            "--out",
            bundle.to_str().unwrap(),
        ])
        .args(extra);
    let (session, out, err) = start_waiting(cmd, "instruments attached", true);
    Live {
        dir,
        bundle,
        m0d,
        session,
        out,
        err,
    }
}

impl Live {
    /// Ends the session with Ctrl-C, then m0d; ri's stderr.
    pub fn finish(mut self) -> (tempfile::TempDir, std::path::PathBuf, String) {
        sigint(&mut self.session);
        let _ = self.out.join();
        let err = String::from_utf8_lossy(&self.err.join().unwrap()).into_owned();
        drop(self.m0d);
        (self.dir, self.bundle, err)
    }
}

/// A bundle's `manifest.json`.
pub fn manifest(bundle: &std::path::Path) -> serde_json::Value {
    let path = bundle.join("manifest.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The stderr of a session that has ended (its stdout dropped).
pub fn ended(out: Reader, err: Reader) -> String {
    let _ = out.join();
    String::from_utf8_lossy(&err.join().unwrap()).into_owned()
}
