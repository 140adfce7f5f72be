//! Streaming at bare cost: `ri trace` of two arguments on the nop5 site
//! against the bare program and bpftrace, in interleaved rounds: text and
//! JSON, with events sent to the ring in per-CPU batches (the default) and
//! each alone (`RI_BATCH_EVENTS=1`).

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
    let traced = |json: bool, batch: Option<&str>| Variant {
        program: ri.clone(),
        args: ["trace"]
            .into_iter()
            .chain(json.then_some("--json"))
            .chain(["-c", "{CMD}", "u:{C}:work_nop5(a=arg0, b=arg1)"])
            .map(String::from)
            .collect(),
        env: batch
            .map(|b| vec![("RI_BATCH_EVENTS".to_string(), b.to_string())])
            .unwrap_or_default(),
        calls: None,
    };
    let mut variants = vec![
        Variant::new(&ri, &["trace", "--bare"], false),
        traced(false, None),
        traced(true, None),
        traced(true, Some("1")),
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
    let ratio = |i: usize| paired(&t[i], &t[0]);
    let (text, json, alone) = (ratio(1), ratio(2), ratio(3));
    let mut s = format!(
        "## Streaming at bare cost\n\n\
         `ri trace` of `(a=arg0, b=arg1)` on the nop5 site (`work_nop5`, {n} calls, events to \
         /dev/null) against the bare program, in {rounds} alternating rounds with a pause \
         before each run (a detach's RCU grace periods slow the next run's hits); a ratio is \
         the median of the rounds' own ratios. The text lines carry no time, so their events \
         skip the kernel's clock; `--json` prints `ts_ns`, one `bpf_ktime_get_ns()` a hit \
         (30–60 ns on this VM).\n\n\
         | | ns per call | / bare |\n|---|---:|---:|\n\
         | bare program (`ri trace --bare`) | {bare:.1} | 1.000 |\n\
         | `ri trace` (text, events in per-CPU batches) | {:.1} | {text:.3} |\n\
         | `ri trace --json` (batched, with `ts_ns`) | {:.1} | {json:.3} |\n\
         | `ri trace --json`, each event its own ring record (`RI_BATCH_EVENTS=1`) | {:.1} | {alone:.3} |\n",
        median(t[1].clone()),
        median(t[2].clone()),
        median(t[3].clone()),
    );
    let bt = with_bpftrace.then(|| median(t[4].clone()));
    if let Some(b) = bt {
        let _ = writeln!(
            s,
            "| bpftrace `printf(\"%d %d\\n\", arg0, arg1)` ({BPFTRACE_CALLS} calls) | {b:.1} | {:.3} |",
            b / bare
        );
    }
    let _ = writeln!(
        s,
        "\nEvents and losses (text): {}.\n\nEvents and losses (`--json`): {}.\n\nTargets:\n\n\
         - `ri trace` / bare = {text:.3} (target ≤ 1.15: {}); `--json` / bare = {json:.3} \
         ({}); each event alone: {alone:.3}; batched / alone (JSON) = {:.3}",
        said[1].join("; "),
        said[2].join("; "),
        verdict(text <= 1.15),
        if json <= 1.15 {
            "also within 1.15"
        } else {
            "over 1.15: the clock read a hit"
        },
        paired(&t[2], &t[3]),
    );
    if let Some(b) = bt {
        let ri_ns = median(t[2].clone());
        let _ = writeln!(
            s,
            "- `ri trace --json` {ri_ns:.1} ns vs bpftrace {b:.1} ns (target ri ≤ bpftrace: {})",
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
