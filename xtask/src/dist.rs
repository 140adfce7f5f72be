//! `cargo xtask dist`: a Debian package of ri built with `dpkg-deb`: the
//! binary, the packs under /usr/share/ri/probes, completions, man pages,
//! example sessions and the `ri serve` systemd unit, laid out in a staging
//! folder under target/dist.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::{ri_bin, root, run, target_dir};

/// Copies `src` to `dst` (creating its folder) with `mode`.
fn install(src: &Path, dst: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::create_dir_all(dst.parent().expect("a file in a folder"))?;
    fs::copy(src, dst).with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Writes what `ri ARGS` prints to `dst`.
fn ri_output(args: &[&str], dst: &Path) -> Result<()> {
    let out = Command::new(ri_bin()).args(args).output()?;
    if !out.status.success() {
        bail!(
            "ri {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::create_dir_all(dst.parent().expect("a file in a folder"))?;
    fs::write(dst, out.stdout)?;
    Ok(())
}

/// The `.toml` files of `dir`, sorted.
fn tomls(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut v: Vec<_> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    Ok(v)
}

/// Builds `target/dist/ri_VERSION_ARCH.deb` from the release build; returns
/// its path.
pub fn run_dist() -> Result<std::path::PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let name = format!("ri_{version}_{arch}");
    let dist = target_dir().join("dist");
    let stage = dist.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    let usr = stage.join("usr");
    install(&ri_bin(), &usr.join("bin/ri"), 0o755)?;
    let share = usr.join("share");
    for p in tomls(&root().join("probes"))? {
        install(
            &p,
            &share.join("ri/probes").join(p.file_name().unwrap()),
            0o644,
        )?;
    }
    for p in tomls(&root().join("sessions"))? {
        install(
            &p,
            &share.join("ri/sessions").join(p.file_name().unwrap()),
            0o644,
        )?;
    }
    ri_output(
        &["completions", "bash"],
        &share.join("bash-completion/completions/ri"),
    )?;
    ri_output(
        &["completions", "zsh"],
        &share.join("zsh/vendor-completions/_ri"),
    )?;
    ri_output(
        &["completions", "fish"],
        &share.join("fish/vendor_completions.d/ri.fish"),
    )?;
    let man = share.join("man/man1");
    run(Command::new(ri_bin()).arg("manpages").arg(&man))?;
    let mut pages: Vec<_> = fs::read_dir(&man)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pages.sort();
    // Debian policy: man pages compressed with gzip -9, without a timestamp.
    run(Command::new("gzip").args(["-9n", "-f"]).args(&pages))?;
    let doc = share.join("doc/ri");
    install(&root().join("README.md"), &doc.join("README.md"), 0o644)?;
    fs::write(
        doc.join("copyright"),
        format!("ri {version}\nLicense: {}\n", env!("CARGO_PKG_LICENSE")),
    )?;
    // The unit stays disabled until the administrator enables it.
    install(
        &root().join("dist/ri-serve.service"),
        &stage.join("lib/systemd/system/ri-serve.service"),
        0o644,
    )?;
    let size_kib = du_kib(&usr)? + du_kib(&stage.join("lib"))?;
    let control = format!(
        "Package: ri\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: ri developers <ri@localhost>\n\
         Depends: libc6 (>= 2.34), libgcc-s1\n\
         Installed-Size: {size_kib}\n\
         Section: devel\n\
         Priority: optional\n\
         Description: run-time instruments for live services (eBPF)\n \
         ri traces, counts and times functions of running processes with\n \
         uprobes and USDT probes, reads their memory by DWARF type and talks\n \
         to their control sockets. Probe packs for Motr, PostgreSQL, libc and\n \
         Python are under /usr/share/ri/probes.\n"
    );
    fs::create_dir_all(stage.join("DEBIAN"))?;
    fs::write(stage.join("DEBIAN/control"), control)?;
    let deb = dist.join(format!("{name}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    eprintln!("dist: {}", deb.display());
    Ok(deb)
}

/// Disk use of a folder in KiB, as dpkg counts Installed-Size.
fn du_kib(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        total += if meta.is_dir() {
            du_kib(&e.path())?
        } else {
            meta.len().div_ceil(1024)
        };
    }
    Ok(total)
}
