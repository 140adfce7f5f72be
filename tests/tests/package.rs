//! The Debian package from `cargo xtask dist`: it installs with dpkg, the
//! installed ri runs, `man ri` finds its page, ri finds the packs under
//! /usr/share/ri/probes, the bash, zsh and fish completions and the example
//! sessions are in place; then it is removed, leaving the machine as it was.

use std::{path::PathBuf, process::Command};

/// The newest `ri_*.deb` in target/dist (or `$RI_DEB`).
fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("RI_DEB") {
        return PathBuf::from(p);
    }
    let dist = ri_tests::ri_bin()
        .parent()
        .and_then(|r| r.parent())
        .map(|t| t.join("dist"))
        .expect("ri's target folder");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dist)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    debs.retain(|p| p.extension().is_some_and(|x| x == "deb"));
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no ri_*.deb in {}: run `cargo xtask dist` first (or set RI_DEB)",
            dist.display()
        )
    })
}

fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Removes the package when dropped, even if an assertion failed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let (ok, text) = sh("dpkg -r ri");
        assert!(ok || std::thread::panicking(), "dpkg -r ri: {text}");
    }
}

#[test]
fn the_package_installs_runs_and_finds_its_pages_and_packs() {
    let deb = deb();
    let (was, _) = sh("dpkg -s ri");
    assert!(
        !was,
        "a ri package is installed already: this test would remove it"
    );
    let (ok, text) = sh(&format!("dpkg -i {}", deb.display()));
    assert!(ok, "dpkg -i: {text}");
    let _installed = Installed;
    let (ok, version) = sh("/usr/bin/ri --version");
    assert!(ok && version.starts_with("ri "), "{version}");
    let (ok, page) = sh("man -w ri && man -w ri-trace && MANPAGER=cat man ri | head -20");
    assert!(ok, "man: {page}");
    assert!(page.contains("/usr/share/man/man1/ri.1.gz"), "{page}");
    // man justifies its lines: words may stand two spaces apart.
    let words = page.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("Run-time instruments"), "{page}");
    let (ok, packs) = sh("/usr/bin/ri packs");
    assert!(ok, "{packs}");
    for pack in ["motr", "postgres", "libc", "python"] {
        assert!(
            packs.contains(&format!("from /usr/share/ri/probes/{pack}.toml")),
            "{pack} not from the package:\n{packs}"
        );
    }
    let (ok, comp) = sh("bash -c '. /usr/share/bash-completion/completions/ri && complete -p ri'");
    assert!(ok && comp.contains("_ri"), "{comp}");
    // zsh and fish read their vendor folders (neither shell is needed to
    // check the scripts are the ones `ri completions` writes).
    for (shell, path) in [
        ("zsh", "/usr/share/zsh/vendor-completions/_ri"),
        ("fish", "/usr/share/fish/vendor_completions.d/ri.fish"),
    ] {
        let installed = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (ok, fresh) = sh(&format!("/usr/bin/ri completions {shell}"));
        assert!(ok, "{fresh}");
        assert_eq!(installed, fresh, "{path} is not ri's {shell} completion");
        assert!(
            installed.contains("shell"),
            "{path} lacks the shell command"
        );
    }
    // The example sessions, as in the source tree.
    let sessions = concat!(env!("CARGO_MANIFEST_DIR"), "/../sessions");
    let mut names = Vec::new();
    for e in std::fs::read_dir(sessions).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let installed = format!("/usr/share/ri/sessions/{name}");
        assert_eq!(
            std::fs::read_to_string(&installed).unwrap_or_else(|e| panic!("{installed}: {e}")),
            std::fs::read_to_string(&p).unwrap(),
            "{installed}"
        );
        names.push(name);
    }
    assert!(
        names.iter().any(|n| n == "motr-slow-requests.toml"),
        "{names:?}"
    );
    // The ri serve unit, where systemd looks for packaged units, and valid.
    let unit = "/lib/systemd/system/ri-serve.service";
    assert!(std::path::Path::new(unit).is_file(), "{unit} not installed");
    let (ok, text) = sh(&format!("systemd-analyze verify {unit}"));
    assert!(ok, "systemd-analyze verify {unit}: {text}");
}
