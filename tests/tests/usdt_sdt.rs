//! A program built with `<sys/sdt.h>` (tests/fixtures/sdt.c), traced live: each argument form gcc
//! emitted at -O2 decodes to the value the program passed, and the probe
//! (guarded by its semaphore) fires only because ri raised it.

use ri_tests::{events, fixture, of_probe, require_bpf, ri};

#[test]
fn every_argument_form_decodes_to_what_the_program_passed() {
    require_bpf();
    let bin = fixture("sdt");
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
