//! `cargo xtask bench --dwarf` (and a section of the full bench): how long
//! a typed probe, a `peek` and a `types` query take on a generated program
//! with about 30 MB of DWARF, cold (no ri index cache yet) and warm.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{gen_dwarf, ri_bin, target_dir};

/// Repetitions of each measurement; the median is reported.
const REPS: usize = 5;

/// The generated program, built once per shape (a stamp file records it).
fn program() -> Result<PathBuf> {
    let shape = gen_dwarf::Shape::BENCH;
    let dir = target_dir().join("bench-dwarf");
    let stamp = dir.join("shape");
    let bin = dir.join("bigdwarf");
    let want = format!("{shape:?}");
    if bin.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(bin);
    }
    eprintln!("bench: generating and compiling the big-DWARF program ({want})");
    let _ = std::fs::remove_dir_all(&dir);
    let bin = gen_dwarf::generate(&dir, &shape).context("generate the big-DWARF program")?;
    std::fs::write(&stamp, want)?;
    Ok(bin)
}

/// Total bytes of the `.debug_*` sections and of `.debug_info`, by readelf.
fn dwarf_sizes(bin: &Path) -> Result<(u64, u64)> {
    let out = Command::new("readelf")
        .arg("-SW")
        .arg(bin)
        .output()
        .context("readelf")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut all, mut info) = (0, 0);
    for line in text.lines() {
        let Some(rest) = line.split_once(']').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 5 || !f[0].starts_with(".debug_") {
            continue;
        }
        let size = u64::from_str_radix(f[4], 16).unwrap_or(0);
        all += size;
        if f[0] == ".debug_info" {
            info = size;
        }
    }
    Ok((all, info))
}

/// One run's wall-clock and CPU (user + system) milliseconds.
#[derive(Clone, Copy)]
struct Run {
    wall: f64,
    cpu: f64,
    /// Until ri said "attached" (probe rows; the whole run otherwise).
    attached: f64,
}

/// Runs ri with `args` and the index cache in `cache`.
fn time_run(args: &[String], cache: &Path) -> Result<Run> {
    let t = Instant::now();
    let child = Command::new(ri_bin())
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run ri {}", args.join(" ")))?;
    let pid = child.id() as i32;
    let stderr = std::io::BufReader::new(child.stderr.expect("piped"));
    let mut err = String::new();
    let mut attached = None;
    for line in std::io::BufRead::lines(stderr) {
        let line = line?;
        if attached.is_none() && line.starts_with("ri: attached") {
            attached = Some(t.elapsed().as_secs_f64() * 1e3);
        }
        err.push_str(&line);
        err.push('\n');
    }
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 reaps our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::wait4(pid, &mut status, 0, &mut ru) } < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let wall = t.elapsed().as_secs_f64() * 1e3;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("ri {} failed: {err}", args.join(" "));
    }
    let ms = |tv: libc::timeval| tv.tv_sec as f64 * 1e3 + tv.tv_usec as f64 / 1e3;
    Ok(Run {
        wall,
        cpu: ms(ru.ru_utime) + ms(ru.ru_stime),
        attached: attached.unwrap_or(wall),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

/// Medians of `REPS` runs.
fn median_run(runs: &[Run]) -> Run {
    Run {
        wall: median(runs.iter().map(|r| r.wall).collect()),
        cpu: median(runs.iter().map(|r| r.cpu).collect()),
        attached: median(runs.iter().map(|r| r.attached).collect()),
    }
}

/// Cold (cache emptied before each run) and warm (cache kept) medians.
fn cold_warm(args: &[String], cache: &Path) -> Result<(Run, Run)> {
    let mut cold = Vec::new();
    for _ in 0..REPS {
        let _ = std::fs::remove_dir_all(cache);
        cold.push(time_run(args, cache)?);
    }
    let mut warm = Vec::new();
    for _ in 0..REPS {
        warm.push(time_run(args, cache)?);
    }
    Ok((median_run(&cold), median_run(&warm)))
}

/// The program waiting (`wait`) for `peek`, killed when dropped.
struct Waiting(std::process::Child);

impl Drop for Waiting {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_waiting(bin: &Path) -> Result<Waiting> {
    let mut child = Command::new(bin)
        .arg("wait")
        .stdout(Stdio::piped())
        .spawn()
        .context("start the big-DWARF program")?;
    let out = child.stdout.take().expect("piped");
    let w = Waiting(child);
    let mut lines = BufReader::new(out).lines();
    while let Some(line) = lines.next().transpose()? {
        if line == "ready" {
            return Ok(w);
        }
    }
    bail!("the big-DWARF program exited before it was ready")
}

/// The markdown section.
pub fn run() -> Result<String> {
    let bin = program()?;
    let b = bin.display().to_string();
    let (all, info) = dwarf_sizes(&bin)?;
    let cache = target_dir().join("bench-dwarf-cache");
    let waiting = start_waiting(&bin)?;
    let pid = waiting.0.id().to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let rows: Vec<(&str, Vec<String>)> = vec![
        (
            "raw probe `x=arg0` (no DWARF), whole run",
            s(&["trace", "-c", &b, &format!("u:{b}:gs_fn_20_3(x=arg0)")]),
        ),
        (
            "typed probe `a->count, a->state, b->u.u_word`, whole run",
            s(&[
                "trace",
                "-c",
                &b,
                &format!("u:{b}:gs_fn_20_3(c=a->count, s=a->state, w=b->u.u_word)"),
            ]),
        ),
        (
            "`ri peek -p PID gs_var_20_0`",
            s(&["peek", "-p", &pid, "gs_var_20_0"]),
        ),
        (
            "`ri types BIN 'struct gs_20_7'`",
            s(&["types", &b, "struct gs_20_7"]),
        ),
    ];
    let mut table = String::from(
        "| | cold ms | warm ms | cold CPU ms | warm CPU ms |\n|---|---:|---:|---:|---:|\n",
    );
    let mut results = Vec::new();
    for (name, args) in &rows {
        eprintln!("bench: dwarf: {name}");
        let (cold, warm) = cold_warm(args, &cache)?;
        table.push_str(&format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            cold.wall, warm.wall, cold.cpu, warm.cpu
        ));
        results.push((cold, warm));
    }
    let (raw, typed) = (results[0], results[1]);
    table.push_str(&format!(
        "| typed − raw: what the DWARF costs the probe | {:.0} | {:.0} | {:.0} | {:.0} |\n",
        typed.0.wall - raw.0.wall,
        typed.1.wall - raw.1.wall,
        typed.0.cpu - raw.0.cpu,
        typed.1.cpu - raw.1.cpu
    ));
    table.push_str(&format!(
        "| typed probe, from start to \"attached\" (raw probe: {:.0} / {:.0}) | {:.0} | {:.0} | | |\n",
        raw.0.attached, raw.1.attached, typed.0.attached, typed.1.attached
    ));
    let met = |r: &(Run, Run)| r.0.wall < 1000.0 && r.1.wall < 200.0;
    let lookups_ok = results[2..].iter().all(met);
    let typed_ok = met(&typed);
    let typed_attach_ok = typed.0.attached < 1000.0 && typed.1.attached < 200.0;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_string();
    drop(waiting);
    let _ = std::fs::remove_dir_all(&cache);
    let idx_note =
        "the name index of the build (under `$XDG_CACHE_HOME/ri/dwarf`, one file per build-id)";
    Ok(format!(
        "## DWARF load on big debug info\n\n\
         A generated C program (`xtask/src/gen_dwarf.rs`, {:?}, `gcc -g -O0`): {:.1} MB of \
         `.debug_*` sections, {:.1} MB of `.debug_info`. Whole runs of ri, median of {REPS}. \
         *Cold* is the first run of a build: {idx_note} is not there yet and is written by \
         the run (the files are in the page cache; ri's caches are emptied, not the \
         kernel's). *Warm* runs find the index. CPU is ri's user + system time; the \
         load average was {load} when the section ended.\n\n{table}\n\
         Target, cold < 1000 ms and warm < 200 ms: peek and types {}; the typed probe \
         attached {}; the typed probe's whole run {} (most of a probe's run is loading and verifying the eBPF programs and \
         reading the binary's symbols, as the raw probe's row shows). A lookup parses only \
         the compilation units that define the names it asks for; before this index, every \
         run parsed all of the DWARF.\n",
        gen_dwarf::Shape::BENCH,
        all as f64 / 1e6,
        info as f64 / 1e6,
        crate::bench::verdict(lookups_ok),
        crate::bench::verdict(typed_attach_ok),
        crate::bench::verdict(typed_ok),
    ))
}

/// Runs only this section and writes bench/RESULTS-dwarf.md
/// (`cargo xtask bench --dwarf`).
pub fn run_alone() -> Result<()> {
    let section = run()?;
    let report = format!(
        "# ri DWARF load benchmark\n\n\
         Written by `cargo xtask bench --dwarf` (the same section as in RESULTS.md, alone).\n\n{section}"
    );
    crate::bench::write_report("RESULTS-dwarf.md", &report)
}
