//! Builds the C probe targets so the tests can find them through `FIXTURES`:
//! the fixtures, then the motr-shaped service m0sim with the ri-control
//! library linked into m0d (and its static-inline variant, `inline/m0d`). ri-control's staticlib comes from a nested
//! `cargo build` in its own target directory (the outer build holds the
//! lock of the main one); and `bigdwarf/bigdwarf`, a generated program of
//! many compilation units (the DWARF benchmark's generator, smaller).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The big-DWARF program generator of the benchmark, at a test's size.
#[path = "../xtask/src/gen_dwarf.rs"]
mod gen_dwarf;

fn main() {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = out_dir.join("fixtures");
    for p in [
        "fixtures",
        "m0sim",
        "../ri-control/src",
        "../ri-control/include",
        "../ri-control/Cargo.toml",
        "../xtask/src/gen_dwarf.rs",
    ] {
        println!("cargo:rerun-if-changed={p}");
    }
    run(
        Command::new("sh").arg("fixtures/build.sh").arg(&out),
        "fixtures/build.sh (needs sh and gcc)",
    );
    let lib = ri_control_lib(&manifest, &out_dir.join("ri-control-target"));
    run(
        Command::new("sh")
            .arg("m0sim/build.sh")
            .arg(&out)
            .env("RI_CONTROL_LIB", &lib)
            .env("RI_CONTROL_INCLUDE", manifest.join("../ri-control/include")),
        "m0sim/build.sh",
    );
    // The static-inline variant: balloc_alloc's symbol is gone, as an
    // optional probe point's may be on Motr. Named m0d, in a folder of its own.
    run(
        Command::new("sh")
            .arg("m0sim/build.sh")
            .arg(out.join("inline"))
            .env("M0SIM_CFLAGS", "-DM0SIM_INLINE_BALLOC")
            .env("RI_CONTROL_LIB", &lib)
            .env("RI_CONTROL_INCLUDE", manifest.join("../ri-control/include")),
        "m0sim/build.sh (M0SIM_INLINE_BALLOC)",
    );
    // Many compilation units of many structs: tests/tests/bigdwarf.rs.
    if let Err(e) = gen_dwarf::generate(&out.join("bigdwarf"), &gen_dwarf::Shape::TEST) {
        panic!("generating the big-DWARF fixture failed (needs gcc): {e}");
    }
    println!("cargo:rustc-env=FIXTURES={}", out.display());
}

/// Builds ri-control's staticlib (release) into `target_dir`; its path.
fn ri_control_lib(manifest: &Path, target_dir: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(manifest.join(".."))
        .args(["build", "--release", "-p", "ri-control", "--target-dir"])
        .arg(target_dir)
        // Settings meant for this build script's own compilation.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    run(&mut cmd, "cargo build -p ri-control");
    let lib = target_dir.join("release").join("libri_control.a");
    assert!(lib.is_file(), "{} was not built", lib.display());
    lib
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(status.success(), "{what} failed with {status}");
}
