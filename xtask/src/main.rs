//! Project tasks: `cargo xtask setup|build|test|demo|dist|bench`.
//!
//! `setup` installs what a fresh machine lacks (nightly `rust-src`,
//! `bpf-linker`, bpftrace for the comparison tests, protoc for ri's build)
//! and returns quickly when everything is there. The other tasks run it
//! first.

mod bench;
mod bench_ab;
mod bench_agg;
mod bench_budget;
mod bench_dwarf;
mod bench_fleet;
mod bench_report;
mod bench_run;
mod bench_serve;
mod bench_session;
mod bench_trace;
mod bench_wild;
mod demo;
mod dist;
mod gen_dwarf;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// Pinned linker for the eBPF crate: the version that uses rustc's own LLVM.
const BPF_LINKER_VERSION: &str = "0.10.0";

#[derive(Parser)]
#[command(name = "xtask", about = "ri project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain pieces a fresh machine lacks (idempotent).
    Setup,
    /// Build ri (release) and the test fixtures.
    Build,
    /// Setup, build, lint and run every test.
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Arguments passed to `cargo test` after `--`.
        #[arg(last = true)]
        rest: Vec<String>,
    },
    /// Build, start the bundled sample service, trace it, print what was seen.
    Demo,
    /// Build a Debian package of ri in target/dist (dpkg-deb).
    Dist,
    /// Measure probe overhead, startup and memory against bpftrace and a bare
    /// program; write bench/RESULTS.md.
    Bench {
        /// Only the in-kernel aggregations (count/hist vs bare and bpftrace,
        /// ri's CPU while counting); write bench/RESULTS-agg.md.
        #[arg(long)]
        agg: bool,
        /// Only the DWARF load times on a generated program with about
        /// 30 MB of debug info; write bench/RESULTS-dwarf.md.
        #[arg(long, conflicts_with = "agg")]
        dwarf: bool,
        /// Only wildcards at scale (5,000 functions: attach, whole run,
        /// Ctrl-C, vs bpftrace); write bench/RESULTS-wild.md.
        #[arg(long)]
        wild: bool,
        /// Only whole runs, exec to exit (one probe, and the 5,000-site
        /// count), vs bpftrace; write bench/RESULTS-whole.md.
        #[arg(long, conflicts_with_all = ["agg", "dwarf", "wild"])]
        whole: bool,
        /// Runs per row of `--whole`.
        #[arg(long, default_value_t = bench_run::REPS)]
        whole_reps: usize,
        /// `--whole` without the 5,000-site row (a quick check).
        #[arg(long)]
        no_wild: bool,
        /// Only `hist` against the log2 hist it replaced (commit a23c09c,
        /// built once), in interleaved rounds; write bench/RESULTS-ab.md.
        #[arg(long)]
        ab: bool,
        /// Only `ri trace` against the bare program and bpftrace (events
        /// batched and alone), in interleaved rounds; write
        /// bench/RESULTS-trace.md.
        #[arg(long)]
        trace: bool,
        /// Rounds of the interleaved A/B runs (`--ab`, `--trace`).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Calls of the nop5 site per measurement (`--ab`, `--trace`).
        #[arg(long, default_value_t = bench_ab::CALLS)]
        calls: u64,
        /// Only `ri -H`: fan-out to 3 local nodes (namespaces with their own
        /// sshd) against one and against a local run, and many simulated
        /// hosts; write bench/RESULTS-fleet.md.
        #[arg(long)]
        fleet: bool,
        /// Only the overhead budget: a hot loop under a 1,510-site wildcard
        /// count against unprobed, budget off and bpftrace; write
        /// bench/RESULTS-budget.md.
        #[arg(long)]
        budget: bool,
        /// Only capture sessions: the flight recorder's CPU per event
        /// against plain `ri trace`; write bench/RESULTS-session.md.
        #[arg(long)]
        session: bool,
        /// Only `ri serve`: scrape time of --serve-series series (counts
        /// and histograms), per-hit cost against `ri count`/`ri hist`, CPU
        /// while idle; write bench/RESULTS-serve.md (the full bench puts
        /// the same section in RESULTS.md).
        #[arg(long, conflicts_with_all = ["agg", "dwarf", "wild", "whole"])]
        serve: bool,
        /// Series of the `--serve` scrape.
        #[arg(long, default_value_t = 10_000)]
        serve_series: u32,
        /// Seconds `--serve` measures idle CPU over.
        #[arg(long, default_value_t = 10)]
        serve_idle: u64,
        /// Seconds after which bpftrace's 5,000-probe run is killed (its exit
        /// then still waits while the kernel releases what it attached).
        #[arg(long, default_value_t = 30)]
        bpftrace_timeout: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup(),
        Task::Build => {
            setup()?;
            build()
        }
        Task::Test { no_lint, rest } => {
            setup()?;
            build()?;
            // The package test installs what `cargo xtask dist` builds.
            dist::run_dist()?;
            if !no_lint {
                lint()?;
            }
            test(&rest)
        }
        Task::Demo => {
            setup()?;
            build()?;
            demo::run()
        }
        Task::Dist => {
            setup()?;
            build()?;
            dist::run_dist().map(|_| ())
        }
        Task::Bench {
            agg,
            dwarf,
            wild,
            whole,
            whole_reps,
            no_wild,
            ab,
            trace,
            rounds,
            calls,
            fleet,
            session,
            budget,
            bpftrace_timeout,
            serve,
            serve_series,
            serve_idle,
        } => {
            setup()?;
            build()?;
            if serve {
                return bench_serve::run(serve_series, 20, serve_idle);
            }
            let timeout = std::time::Duration::from_secs(bpftrace_timeout);
            if session {
                bench_session::run()
            } else if budget {
                bench_budget::run_alone()
            } else if agg {
                bench_agg::run_agg()
            } else if dwarf {
                bench_dwarf::run_alone()
            } else if trace {
                bench_trace::run_alone(rounds, calls)
            } else if ab {
                bench_ab::run_alone(rounds, calls)
            } else if fleet {
                bench_fleet::run()
            } else if wild {
                bench_wild::run(timeout)
            } else if whole {
                bench_run::run(whole_reps, no_wild, timeout)
            } else {
                bench::run(timeout)
            }
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The target directory cargo uses.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The release `ri` binary.
pub fn ri_bin() -> PathBuf {
    target_dir().join("release").join("ri")
}

/// Runs a command, failing with its name when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn setup() -> Result<()> {
    let t = Instant::now();
    // Nightly with rust-src: the eBPF crate builds core with -Z build-std.
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]));
    let has_src = sysroot.as_deref().is_some_and(|s| {
        Path::new(s.trim())
            .join("lib/rustlib/src/rust/library/core")
            .is_dir()
    });
    if sysroot.is_none() {
        eprintln!("setup: installing the nightly toolchain with rust-src");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    } else if !has_src {
        eprintln!("setup: adding rust-src to nightly");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    // bpf-linker, pinned.
    let linker = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        eprintln!("setup: installing bpf-linker {BPF_LINKER_VERSION} (about a minute)");
        run(Command::new("cargo").args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
        ]))?;
    }
    // What the tests and benchmarks need from Debian, each installed when
    // what it provides is missing: bpftrace (the reference they compare
    // with), gdb (gcore makes the `ri view --core` tests' cores),
    // <sys/sdt.h> (the USDT note fixture), OpenSSH (the fleet tests start
    // their own sshd), Prometheus (it scrapes `ri serve` in its tests),
    // dpkg-deb, man-db and tmux (`cargo xtask dist`, `man ri`, a real
    // terminal for the interactive tests), protoc (`perfetto-trace-proto`
    // generates Perfetto's messages with it when ri builds).
    let sdt = [
        "/usr/include/sys/sdt.h",
        "/usr/include/x86_64-linux-gnu/sys/sdt.h",
    ];
    let needs: [(bool, &[&str]); 9] = [
        (have("bpftrace"), &["bpftrace"]),
        (have("gcore"), &["gdb"]),
        (
            sdt.iter().any(|p| Path::new(p).exists()),
            &["systemtap-sdt-dev"],
        ),
        (
            Path::new("/usr/sbin/sshd").exists(),
            &["openssh-server", "openssh-client"],
        ),
        (have("prometheus"), &["prometheus"]),
        (have("dpkg-deb"), &["dpkg"]),
        (have("man"), &["man-db"]),
        (have("tmux"), &["tmux"]),
        (have("protoc"), &["protobuf-compiler"]),
    ];
    let missing: Vec<&str> = needs
        .iter()
        .filter(|(there, _)| !there)
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    if !missing.is_empty() && have("apt-get") {
        eprintln!("setup: installing {}", missing.join(" "));
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        // The tests run Prometheus themselves: not the package's service.
        if missing.contains(&"prometheus") && have("systemctl") {
            let _ = Command::new("systemctl")
                .args(["disable", "--now", "prometheus.service"])
                .status();
        }
    }
    // Clippy on nightly lints the eBPF crate for its own target.
    let nightly_parts = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if !nightly_parts.lines().any(|l| l.starts_with("clippy")) {
        eprintln!("setup: adding clippy to nightly");
        run(Command::new("rustup").args(["component", "add", "clippy", "--toolchain", "nightly"]))?;
    }
    if !have("gcc") {
        bail!("gcc is needed to build the C fixtures and is not installed");
    }
    eprintln!("setup: ok ({} ms)", t.elapsed().as_millis());
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn build() -> Result<()> {
    // Default members: everything but the eBPF crate, which ri-user's
    // build script compiles for the BPF target.
    run(cargo().args(["build", "--release"]))
}

fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--release",
        "--workspace",
        "--exclude",
        "ri-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The eBPF crate only builds for the BPF target.
    run(Command::new("rustup").current_dir(root()).args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "--release",
        "-p",
        "ri-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))
}

fn test(rest: &[String]) -> Result<()> {
    let mut c = cargo();
    c.args(["test", "--release", "--no-fail-fast"])
        .env("RI_BIN", ri_bin());
    if !rest.is_empty() {
        c.arg("--").args(rest);
        return run(&mut c);
    }
    // The `ri serve` soak (ignored by cargo test, RI_SOAK_SECS long) runs
    // beside the whole suite rather than after it.
    let mut soak = start_soak()?;
    let suite = run(&mut c);
    eprintln!("test: waiting for the ri serve soak");
    let status = soak.wait()?;
    suite?;
    if !status.success() {
        bail!("the ri serve soak failed: {status}");
    }
    Ok(())
}

/// The soak test of `ri serve`, started in the background.
fn start_soak() -> Result<std::process::Child> {
    const NAME: &str = "soak_keeps_rss_flat_series_capped_and_no_update_lost";
    let out = cargo()
        .args(["test", "--release", "-p", "ri-tests", "--test", "serve"])
        .args(["--no-run", "--message-format=json"])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "serve")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("the serve test binary was not built")?;
    eprintln!("test: the ri serve soak runs in the background");
    Ok(Command::new(exe)
        .args(["--ignored", "--exact", NAME])
        .env("RI_BIN", ri_bin())
        .spawn()?)
}

/// Builds the C fixtures and m0sim (`m0d` with ri-control linked in,
/// `m0client`) into `target/fixtures` and returns that folder.
pub fn fixtures() -> Result<PathBuf> {
    let out = target_dir().join("fixtures");
    run(Command::new("sh")
        .arg(root().join("tests/fixtures/build.sh"))
        .arg(&out))?;
    run(cargo().args(["build", "--release", "-p", "ri-control"]))?;
    run(Command::new("sh")
        .arg(root().join("tests/m0sim/build.sh"))
        .arg(&out)
        .env(
            "RI_CONTROL_LIB",
            target_dir().join("release").join("libri_control.a"),
        )
        .env("RI_CONTROL_INCLUDE", root().join("ri-control/include")))?;
    Ok(out)
}
