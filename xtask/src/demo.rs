//! The main job's demo: start the bundled sample target, trace it with ri
//! for a few seconds, print what was seen.

use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::{fixtures, ri_bin};

/// Runs the demo.
pub fn run() -> Result<()> {
    let fx = fixtures()?;
    let calls = fx.join("calls");
    println!("== starting the sample target: {} slow 40", calls.display());
    let mut target = Command::new(&calls)
        .args(["slow", "40"])
        .stdout(Stdio::null())
        .spawn()
        .context("start the sample target")?;
    let pid = target.id().to_string();
    let c = calls.display();
    let probes = [
        format!(
            "u:{c}:touch_item(id=*(s32*)arg0, size=*(s64*)(arg0+8), name=str(*(u64*)(arg0+16)))"
        ),
        format!("ur:{c}:work_int3(ret=retval)"),
        format!("ur:{c}:signed_ret(ret=(s32)retval) if (s32)retval < 0"),
    ];
    println!("== ri list {c} 'work_*'");
    crate::run(Command::new(ri_bin()).args(["list", &c.to_string(), "work_*"]))?;
    println!("== ri trace -p {pid} --duration 3 (the three probes below)");
    for p in &probes {
        println!("   {p}");
    }
    let status = Command::new(ri_bin())
        .args(["trace", "-p", &pid, "--duration", "3"])
        .args(&probes)
        .status();
    let _ = target.kill();
    let _ = target.wait();
    let status = status.context("run ri")?;
    anyhow::ensure!(status.success(), "ri trace failed: {status}");
    println!("== done: the target kept running while traced and was left as it was");
    Ok(())
}
