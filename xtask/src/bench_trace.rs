//! Streaming at bare cost: `ri trace` of two arguments on the nop5 site
//! against the bare program and bpftrace, in interleaved rounds, with
//! events sent to the ring in per-CPU batches (the default) and each alone
//! (`RI_BATCH_EVENTS=1`).

use std::{fmt::Write as _, path::Path};

use anyhow::Result;

use crate::{
    bench::{median, verdict},
    bench_ab::{Variant, interleaved, paired},
    have, ri_bin,
};

/// bpftrace's calls per run: its printf costs about 14 µs a hit here.
const BPFTRACE_CALLS: u64 = 100_000;

/// The trace-vs-bare rows and their targets.
pub fn section(fx: &Path, rounds: usize, n: u64) -> Result<String> {
    let calls = fx.join("calls");
    let ri = ri_bin();
    let traced = |batch: Option<&str>| Variant {
        program: ri.clone(),
        args: [
            "trace",
            "--json",
            "-c",
            "{CMD}",
            "u:{C}:work_nop5(a=arg0, b=arg1)",
        ]
        .map(String::from)
        .to_vec(),
        env: batch
            .map(|b| vec![("RI_BATCH_EVENTS".to_string(), b.to_string())])
            .unwrap_or_default(),
        calls: None,
    };
    let mut variants = vec![
        Variant::new(&ri, &["trace", "--bare"], false),
        traced(None),
        traced(Some("1")),
    ];
    let with_bpftrace = have("bpftrace");
    if with_bpftrace {
        variants.push(Variant {
            program: "bpftrace".into(),
            args: [
                "-c",
                "{CMD}",
                "-e",
                "uprobe:{C}:work_nop5 { printf(\"%d %d\\n\", arg0, arg1); }",
            ]
            .map(String::from)
            .to_vec(),
            env: Vec::new(),
            calls: Some(BPFTRACE_CALLS.min(n)),
        });
    }
    eprintln!("bench: trace vs bare, {rounds} interleaved rounds of {n} calls");
    let (t, said) = interleaved(&calls, &variants, rounds, n)?;
    let bare = median(t[0].clone());
    let (batched, alone) = (paired(&t[1], &t[0]), paired(&t[2], &t[0]));
    let mut s = format!(
        "## Streaming at bare cost\n\n\
         `ri trace --json` of `(a=arg0, b=arg1)` on the nop5 site (`work_nop5`, {n} calls, \
         events to /dev/null) against the bare program, in {rounds} alternating rounds; a \
         ratio is the median of the rounds' own ratios.\n\n\
         | | ns per call | / bare |\n|---|---:|---:|\n\
         | bare program (`ri trace --bare`) | {bare:.1} | 1.000 |\n\
         | ri, events in per-CPU batches (default) | {:.1} | {batched:.3} |\n\
         | ri, each event its own ring record (`RI_BATCH_EVENTS=1`) | {:.1} | {alone:.3} |\n",
        median(t[1].clone()),
        median(t[2].clone()),
    );
    let bt = with_bpftrace.then(|| median(t[3].clone()));
    if let Some(b) = bt {
        let _ = writeln!(
            s,
            "| bpftrace `printf(\"%d %d\\n\", arg0, arg1)` ({BPFTRACE_CALLS} calls) | {b:.1} | {:.3} |",
            b / bare
        );
    }
    let _ = writeln!(
        s,
        "\nEvents and losses (batched): {}.\n\nTargets:\n\n\
         - ri / bare = {batched:.3} (target ≤ 1.15: {}); each event alone: {alone:.3}; \
         batched / alone = {:.3}",
        said[1].join("; "),
        verdict(batched <= 1.15),
        paired(&t[1], &t[2]),
    );
    if let Some(b) = bt {
        let ri_ns = median(t[1].clone());
        let _ = writeln!(
            s,
            "- ri {ri_ns:.1} ns vs bpftrace {b:.1} ns (target ri ≤ bpftrace: {})",
            verdict(ri_ns <= b)
        );
    }
    Ok(s)
}

/// `cargo xtask bench --trace`: only [`section`], into bench/RESULTS-trace.md.
pub fn run_alone(rounds: usize, n: u64) -> Result<()> {
    let fx = crate::fixtures()?;
    let section = section(&fx, rounds, n)?;
    crate::bench::write_report(
        "RESULTS-trace.md",
        &format!("# ri streaming benchmark\n\n{section}"),
    )
}
