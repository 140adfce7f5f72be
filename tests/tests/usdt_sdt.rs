//! A program built with `<sys/sdt.h>`, traced live: each argument form gcc
//! emitted at -O2 decodes to the value the program passed, and the probe
//! (guarded by its semaphore) fires only because ri raised it.

use std::path::Path;

use ri_tests::{events, of_probe, require_bpf, ri};

const SOURCE: &str = "#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>
unsigned short fix_three_semaphore __attribute__((section(\".probes\")));
long g[4] = {10, 20, 30, 40};
__attribute__((noinline)) int f(int a, long *p, long i) {
    if (fix_three_semaphore)
        DTRACE_PROBE4(fix, three, a, p[i], g[2], (char)a);
    return a;
}
int main(int argc, char **argv) { return f(argc, g, argc - 1) == 0; }
";

#[test]
fn every_argument_form_decodes_to_what_the_program_passed() {
    require_bpf();
    let have_sdt = [
        "/usr/include/sys/sdt.h",
        "/usr/include/x86_64-linux-gnu/sys/sdt.h",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    if !have_sdt {
        eprintln!("skipped: no <sys/sdt.h> (cargo xtask setup installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("sdt.c");
    std::fs::write(&src, SOURCE).unwrap();
    let bin = dir.path().join("sdt");
    let st = std::process::Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let list = ri(&["list", &bin.display().to_string()]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains(&format!("usdt:{}:fix:three  ", bin.display())),
        "{listed}"
    );
    let out = ri(&[
        "trace",
        "--json",
        "-c",
        &format!("{} x", bin.display()),
        &format!(
            "usdt:{}:three(a=arg0, v=arg1, g2=arg2, c=arg3)",
            bin.display()
        ),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events(&out.stdout);
    let hits = of_probe(&evs, ":fix:three");
    assert_eq!(hits.len(), 1, "{evs:?}");
    let e = hits[0];
    assert_eq!(
        (&e["a"], &e["v"], &e["g2"], &e["c"]),
        (&2.into(), &20.into(), &30.into(), &2.into()),
        "{e}"
    );
}
