//! A/B runs in one bench: an older commit's `ri` (built once into
//! target/bench-baseline, cached by commit hash) against this build, run
//! in alternating rounds on the same nop5 fixture, each ratio the median
//! of the rounds' own ratios, so the host's drift between runs cancels.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    bench::{median, parse_sample, prog_ns, run_measured, verdict},
    ri_bin, root, run, target_dir,
};

/// The log2-bucket `hist` that log-linear buckets replaced (issue #13
/// part 4: "within 1.05× of today's hist").
pub const HIST_BASELINE: &str = "a23c09c";

/// Calls of `work_nop5` per measurement.
pub const CALLS: u64 = 3_000_000;

/// One program to time: `program` with `args`, in which `{CMD}` is the
/// fixture's command line and `{C}` its path; `env` added.
#[derive(Clone)]
pub struct Variant {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Calls per run instead of the bench's (for a slow tool).
    pub calls: Option<u64>,
}

impl Variant {
    /// `ri ARGS -q -c CMD u:calls:work_nop5`, through per-site perf events
    /// when `no_multi`.
    pub fn new(ri: &Path, args: &[&str], no_multi: bool) -> Self {
        let mut v = Variant {
            program: ri.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            calls: None,
        };
        v.args
            .extend(["-q", "-c", "{CMD}", "u:{C}:work_nop5"].map(String::from));
        if no_multi {
            v.env.push(("RI_NO_MULTI_UPROBE".into(), "1".into()));
        }
        v
    }
}

/// The `ri` binary of `commit`, built from `git archive` of it into
/// target/bench-baseline/HASH with its own target dir (seeded from this
/// build's dependencies the first time); a second bench finds it built.
pub fn baseline_ri(commit: &str) -> Result<PathBuf> {
    let out = Command::new("git")
        .current_dir(root())
        .args(["rev-parse", "--verify", &format!("{commit}^{{commit}}")])
        .output()
        .context("git rev-parse")?;
    if !out.status.success() {
        bail!("unknown commit {commit}");
    }
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dir = target_dir().join("bench-baseline").join(&hash);
    let bin = dir.join("target/release/ri");
    if bin.is_file() {
        return Ok(bin);
    }
    let src = dir.join("src");
    if !src.join("Cargo.toml").is_file() {
        std::fs::create_dir_all(&src)?;
        run(Command::new("sh").current_dir(root()).args([
            "-c",
            &format!("git archive {hash} | tar -x -C '{}'", src.display()),
        ]))?;
    }
    let tgt = dir.join("target");
    if !tgt.join("release").exists() {
        // Registry crates keep their fingerprints under another target
        // dir; only the workspace's own crates rebuild.
        std::fs::create_dir_all(&tgt)?;
        run(Command::new("cp").args([
            "-a",
            "--reflink=auto",
            &target_dir().join("release").display().to_string(),
            &tgt.display().to_string(),
        ]))?;
    }
    eprintln!("bench: building ri of {hash} (once) in {}", dir.display());
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&src)
            .env("CARGO_TARGET_DIR", &tgt)
            .args(["build", "--release", "-p", "ri-user", "--bin", "ri"]),
    )?;
    if !bin.is_file() {
        bail!("building {hash} left no {}", bin.display());
    }
    Ok(bin)
}

/// Each variant's ns per call, round by round, and its runs' summary lines.
pub type Rounds = (Vec<Vec<f64>>, Vec<Vec<String>>);

/// Runs each variant once per round (in reverse order every other round,
/// so neither side always goes first) and returns each variant's ns per
/// call, round by round, and the summary lines of its runs.
pub fn interleaved(calls: &Path, variants: &[Variant], rounds: usize, n: u64) -> Result<Rounds> {
    let mut all = vec![Vec::new(); variants.len()];
    let mut said = vec![Vec::new(); variants.len()];
    for r in 0..rounds {
        let order: Vec<usize> = if r % 2 == 0 {
            (0..variants.len()).collect()
        } else {
            (0..variants.len()).rev().collect()
        };
        for i in order {
            let (ns, summary) = nop5_ns(calls, &variants[i], n)?;
            all[i].push(ns);
            said[i].extend(summary);
        }
    }
    Ok((all, said))
}

/// Pause before each run: the last run's detach starts RCU grace periods
/// that slow every uprobe hit while they last (tens to hundreds of ms), so
/// a run started at once would pay for the one before it.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(1500);

/// ns per call of `work_nop5` while `v` probes it (`calls bench 1000 N`),
/// and the run's summary line, if it printed one.
pub fn nop5_ns(calls: &Path, v: &Variant, n: u64) -> Result<(f64, Option<String>)> {
    std::thread::sleep(SETTLE);
    let c = calls.display().to_string();
    let cmd_line = format!("{c} bench 1000 {}", v.calls.unwrap_or(n));
    let mut cmd = Command::new(&v.program);
    cmd.args(
        v.args
            .iter()
            .map(|a| a.replace("{CMD}", &cmd_line).replace("{C}", &c)),
    )
    .env_remove("RI_NO_MULTI_UPROBE")
    .env_remove("RI_BATCH_EVENTS")
    .envs(v.env.iter().map(|(k, x)| (k, x)));
    let (err, rss) = run_measured(&mut cmd)?;
    let summary = err
        .lines()
        .find(|l| l.starts_with("ri: ") && l.contains(" events, "))
        .map(|l| l.trim_start_matches("ri: ").to_string());
    Ok((parse_sample(&err, rss)?.nop5_ns, summary))
}

/// Median over the rounds of `a[r] / b[r]`.
pub fn paired(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| x / y).collect())
}

/// `hist`, `hist --by KEY` and `count --by KEY` (a control whose path did
/// not change) of this build against [`HIST_BASELINE`]'s, with per-site
/// perf events on both sides (the baseline has no multi-uprobe link); and
/// this build's `hist --by` through the multi-uprobe link against per-site
/// perf events.
pub fn hist_section(fx: &Path, rounds: usize, n: u64) -> Result<String> {
    let calls = fx.join("calls");
    let base = baseline_ri(HIST_BASELINE)?;
    let now = ri_bin();
    let cases: [(&str, Vec<&str>); 3] = [
        ("`hist --value arg1`", vec!["hist", "--value", "arg1"]),
        (
            "`hist --value arg1 --by 'arg0 % 16'`",
            vec!["hist", "--value", "arg1", "--by", "arg0 % 16"],
        ),
        (
            "`count --by 'arg0 % 16'` (control)",
            vec!["count", "--by", "arg0 % 16"],
        ),
    ];
    let mut variants = vec![Variant::new(&now, &["trace", "--bare"], true)];
    for (_, args) in &cases {
        variants.push(Variant::new(&base, args, true));
        variants.push(Variant::new(&now, args, true));
    }
    variants.push(Variant::new(&now, &cases[1].1, false));
    variants.push(Variant::new(&now, &["trace", "--bare"], false));
    eprintln!("bench: hist A/B against {HIST_BASELINE}, {rounds} interleaved rounds of {n} calls");
    let (t, _) = interleaved(&calls, &variants, rounds, n)?;
    let mut s = format!(
        "## Histogram cost against the log2 hist it replaced\n\n\
         ns per call on the nop5 site, {n} calls; `ri` of commit {HIST_BASELINE} (log2 \
         buckets, built by the bench) and of this tree, run in {rounds} alternating rounds \
         in this one bench, both through per-site perf events (`RI_NO_MULTI_UPROBE=1`; the \
         baseline predates multi-uprobe links). A ratio is the median of the rounds' own \
         ratios. Bare program: {:.1} ns.\n\n\
         | | {HIST_BASELINE} | now | now / {HIST_BASELINE} |\n|---|---:|---:|---:|\n",
        median(t[0].clone())
    );
    let mut lines = String::new();
    for (i, (name, _)) in cases.iter().enumerate() {
        let (b, c) = (&t[1 + 2 * i], &t[2 + 2 * i]);
        let q = paired(c, b);
        let _ = writeln!(
            s,
            "| {name} | {:.1} | {:.1} | {q:.3} |",
            median(b.clone()),
            median(c.clone())
        );
        if i < 2 {
            let _ = writeln!(
                lines,
                "- {name}: {q:.3} × the log2 hist (target ≤ 1.05: {})",
                verdict(q <= 1.05)
            );
        } else {
            let _ = writeln!(
                lines,
                "- {name}: {q:.3} (same code on both sides but for the build)"
            );
        }
    }
    let (multi, bare_multi) = (&t[t.len() - 2], &t[t.len() - 1]);
    let _ = writeln!(
        s,
        "\nTargets:\n\n{lines}- `hist --by` through the multi-uprobe link (the default): {:.1} ns, \
         {:.3} × per-site perf events; the bare program: {:.1} ns, {:.3} × per-site\n",
        median(multi.clone()),
        paired(multi, &t[4]),
        median(bare_multi.clone()),
        paired(bare_multi, &t[0]),
    );
    s.push_str(&prog_section(&calls, &base, &now, &cases, rounds)?);
    Ok(s)
}

/// The same A/B by the programs' own run time per hit (kernel BPF
/// statistics, attached with `-p` to `calls spin` for 2 s each): less of
/// the machine's noise than timing the traced loop.
fn prog_section(
    calls: &Path,
    base: &Path,
    now: &Path,
    cases: &[(&str, Vec<&str>)],
    rounds: usize,
) -> Result<String> {
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(STATS).context("read bpf_stats_enabled")?;
    std::fs::write(STATS, "1").context("enable BPF statistics")?;
    let site = format!("u:{}:work_nop5", calls.display());
    let rounds = rounds.div_ceil(2).max(1);
    let mut t = vec![Vec::new(); 2 * cases.len()];
    let measured = (|| -> Result<()> {
        for r in 0..rounds {
            for (i, (_, args)) in cases.iter().enumerate() {
                let sides = if r % 2 == 0 { [base, now] } else { [now, base] };
                for ri in sides {
                    let ns = prog_ns(calls, |pid| {
                        let mut cmd = Command::new(ri);
                        cmd.args(args)
                            .args(["-q", "-p", &pid.to_string(), &site])
                            .env("RI_NO_MULTI_UPROBE", "1");
                        cmd
                    })?;
                    t[2 * i + usize::from(ri == now)].push(ns);
                }
            }
        }
        Ok(())
    })();
    std::fs::write(STATS, before.trim()).context("restore bpf_stats_enabled")?;
    measured?;
    let mut s = format!(
        "The programs' own run time per hit (ns; kernel BPF statistics, `run_time_ns / \
         run_cnt` while attached to a `calls spin` process for 2 s; {rounds} alternating \
         rounds):\n\n| | {HIST_BASELINE} | now | now / {HIST_BASELINE} |\n|---|---:|---:|---:|\n"
    );
    let mut lines = String::new();
    for (i, (name, _)) in cases.iter().enumerate() {
        let (b, c) = (&t[2 * i], &t[2 * i + 1]);
        let q = paired(c, b);
        let _ = writeln!(
            s,
            "| {name} | {:.1} | {:.1} | {q:.3} |",
            median(b.clone()),
            median(c.clone()),
        );
        if i < 2 {
            let _ = writeln!(
                lines,
                "- {name}, program time: {q:.3} × the log2 hist (target ≤ 1.05: {})",
                verdict(q <= 1.05)
            );
        }
    }
    let _ = writeln!(s, "\n{lines}");
    Ok(s)
}

/// `cargo xtask bench --ab`: only [`hist_section`], into bench/RESULTS-ab.md.
pub fn run_alone(rounds: usize, n: u64) -> Result<()> {
    let fx = crate::fixtures()?;
    let section = hist_section(&fx, rounds, n)?;
    crate::bench::write_report("RESULTS-ab.md", &format!("# ri A/B benchmark\n\n{section}"))
}
