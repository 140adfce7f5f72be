//! Builds the C probe targets (fixtures, and the motr-shaped service when
//! present) so the tests can find them through `FIXTURES`.
use std::{path::PathBuf, process::Command};

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("fixtures");
    println!("cargo:rerun-if-changed=fixtures");
    let status = Command::new("sh")
        .arg("fixtures/build.sh")
        .arg(&out)
        .status()
        .expect("run fixtures/build.sh (needs sh and gcc)");
    assert!(status.success(), "fixtures/build.sh failed");
    println!("cargo:rustc-env=FIXTURES={}", out.display());
}
