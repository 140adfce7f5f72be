//! The `package` section: which installed package owns the executable and
//! each loaded library, with versions. On Debian-like systems this reads
//! dpkg's database directly (one pass over `info/*.list`, stopping once
//! every file is found, and `status` for versions): the same answer as
//! `dpkg -S`, without a process per file.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{procfs, read_proc, unwind, why};

/// dpkg's database (under the target's root).
const DPKG_DIR: &str = "/var/lib/dpkg";

/// Package ownership of the process's files.
#[derive(Debug, Default, Serialize)]
pub struct PackageSection {
    /// The package manager consulted (`dpkg`), if any.
    pub manager: Option<String>,
    /// The executable.
    pub executable: Option<Owner>,
    /// Loaded shared objects (code mappings other than the executable).
    pub libraries: Vec<Owner>,
    /// What could not be determined, and why.
    pub notes: Vec<String>,
}

/// A file and the package that installed it.
#[derive(Debug, Clone, Serialize)]
pub struct Owner {
    /// The file as the process maps it.
    pub path: String,
    /// Owning package (`name` or `name:arch`), if any.
    pub package: Option<String>,
    /// Its installed version.
    pub version: Option<String>,
}

/// Names dpkg may list a file under: as mapped, resolved, and with or
/// without `/usr` (merged-/usr systems list `/lib/...` for `/usr/lib/...`).
fn aliases(path: &Path, root: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |p: &Path| {
        let s = p.display().to_string();
        if !out.contains(&s) {
            out.push(s);
        }
    };
    add(path);
    // Symlinks resolve only in ri's own file system view.
    if root.is_empty() {
        if let Ok(c) = path.canonicalize() {
            add(&c);
        }
        // The directory resolved, the file name kept (symlinked libraries).
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name())
            && let Ok(d) = dir.canonicalize()
        {
            add(&d.join(name));
        }
    }
    let mut more = Vec::new();
    for p in &out {
        for top in ["/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/"] {
            if let Some(rest) = p.strip_prefix("/usr").filter(|r| r.starts_with(top)) {
                more.push(rest.to_string());
            } else if p.starts_with(top) {
                more.push(format!("/usr{p}"));
            }
        }
    }
    for p in more {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Finds the owning package of each path: `owners[i]` for `paths[i]`.
fn dpkg_owners(db: &Path, root: &str, paths: &[PathBuf]) -> std::io::Result<Vec<Option<String>>> {
    let mut wanted: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in paths.iter().enumerate() {
        for a in aliases(p, root) {
            wanted.entry(a).or_default().push(i);
        }
    }
    let mut owners = vec![None; paths.len()];
    let mut left = paths.len();
    let mut lists: Vec<PathBuf> = std::fs::read_dir(db.join("info"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "list"))
        .collect();
    lists.sort();
    for list in lists {
        if left == 0 {
            break;
        }
        let Ok(text) = std::fs::read(&list) else {
            continue;
        };
        let pkg = list
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for line in text.split(|&b| b == b'\n') {
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            if let Some(idx) = wanted.get(line) {
                for &i in idx {
                    if owners[i].is_none() {
                        owners[i] = Some(pkg.clone());
                        left -= 1;
                    }
                }
            }
        }
    }
    Ok(owners)
}

/// Installed versions from dpkg's `status`, by `name` and `name:arch`.
fn dpkg_versions(db: &Path, wanted: &HashSet<&str>) -> std::io::Result<HashMap<String, String>> {
    let text = read_proc(db.join("status"))?;
    let mut out = HashMap::new();
    for stanza in text.split("\n\n") {
        let (mut name, mut arch, mut version, mut installed) = ("", "", "", false);
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = v.trim();
            } else if let Some(v) = line.strip_prefix("Architecture: ") {
                arch = v.trim();
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = v.trim();
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if name.is_empty() || version.is_empty() || !installed {
            continue;
        }
        let qualified = format!("{name}:{arch}");
        if wanted.contains(name) || wanted.contains(qualified.as_str()) {
            out.insert(qualified, version.to_string());
            out.insert(name.to_string(), version.to_string());
        }
    }
    Ok(out)
}

/// Builds the `package` section.
pub fn section(pid: u32) -> PackageSection {
    let mut s = PackageSection::default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
    let maps = read_proc(format!("/proc/{pid}/maps"));
    let exe = match exe {
        Ok(p) => Some(p),
        Err(e) => {
            s.notes.push(why("executable", &e));
            None
        }
    };
    let mut libs: Vec<PathBuf> = Vec::new();
    match maps {
        Ok(text) => {
            for m in unwind::parse_maps(&text) {
                let p = PathBuf::from(&m.name);
                if m.executable() && m.is_file() && Some(&p) != exe.as_ref() && !libs.contains(&p) {
                    libs.push(p);
                }
            }
            libs.sort();
        }
        Err(e) => s.notes.push(why("mapped libraries", &e)),
    }
    let mut paths: Vec<PathBuf> = exe.iter().cloned().collect();
    paths.extend(libs.iter().cloned());
    let mut owners = vec![None; paths.len()];
    let mut versions = HashMap::new();
    let root = procfs::root_prefix(pid);
    let db = PathBuf::from(format!("{root}{DPKG_DIR}"));
    if !root.is_empty() {
        s.notes.push(format!(
            "the target runs in another mount namespace (a container?): its own package \
             database is read, through {root}"
        ));
    }
    if db.join("info").is_dir() {
        s.manager = Some("dpkg".into());
        match dpkg_owners(&db, &root, &paths) {
            Ok(o) => owners = o,
            Err(e) => s.notes.push(format!("cannot read dpkg's file lists: {e}")),
        }
        let names: HashSet<&str> = owners.iter().flatten().map(String::as_str).collect();
        if !names.is_empty() {
            match dpkg_versions(&db, &names) {
                Ok(v) => versions = v,
                Err(e) => s.notes.push(format!("cannot read dpkg's status: {e}")),
            }
        }
    } else {
        s.notes.push(format!(
            "no dpkg database ({}): package ownership is not known on this system",
            db.display()
        ));
    }
    let owner = |i: usize| Owner {
        path: paths[i].display().to_string(),
        package: owners[i].clone(),
        version: owners[i].as_ref().and_then(|p| versions.get(p).cloned()),
    };
    let n_exe = usize::from(exe.is_some());
    if exe.is_some() {
        s.executable = Some(owner(0));
    }
    s.libraries = (n_exe..paths.len()).map(owner).collect();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usr_merge_aliases() {
        let a = aliases(Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6"), "");
        assert!(
            a.contains(&"/lib/x86_64-linux-gnu/libc.so.6".to_string()),
            "{a:?}"
        );
        let a = aliases(Path::new("/bin/sh"), "");
        assert!(a.contains(&"/usr/bin/sh".to_string()), "{a:?}");
        let a = aliases(Path::new("/usr/local/lib/x.so"), "");
        assert_eq!(
            a.iter().filter(|p| !p.starts_with("/usr/local")).count(),
            0,
            "{a:?}"
        );
    }
}
