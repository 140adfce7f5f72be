//! Finding a binary's DWARF: in the file itself, in its `.gnu_debuglink`
//! file, or in the build-id tree under `/usr/lib/debug`.

use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

use super::DwarfError;

/// Where debug files live when they are not next to the binary.
const DEBUG_ROOT: &str = "/usr/lib/debug";

/// A DWARF file's bytes.
pub(super) type Data = crate::elf::Mapped;

/// The file holding `binary`'s DWARF and its bytes.
pub(super) fn find(binary: &Path) -> Result<(PathBuf, Data), DwarfError> {
    locate(binary)?.map_err(|tried| DwarfError::NoDebugInfo {
        path: binary.to_path_buf(),
        hint: hint(binary, &tried),
    })
}

/// A debug file and its bytes, or the files tried when there is none.
pub(super) type Located = Result<(PathBuf, Data), Vec<PathBuf>>;

/// Like [`find`], but a binary without DWARF anywhere is `Err(tried)`, the
/// files tried, with no advice looked up (that asks dpkg): cheap enough to
/// ask of every library a process maps.
pub(super) fn locate(binary: &Path) -> Result<Located, DwarfError> {
    let data = read(binary)?;
    let file = parse(binary, &data)?;
    if has_dwarf(&file) {
        return Ok(Ok((binary.to_path_buf(), data)));
    }
    let build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec);
    let mut tried = Vec::new();
    for candidate in candidates(binary, &file, build_id.as_deref()) {
        if !candidate.is_file() {
            tried.push(candidate);
            continue;
        }
        let Ok(bytes) = crate::elf::map_file(&candidate) else {
            tried.push(candidate);
            continue;
        };
        let Ok(debug) = object::File::parse(&*bytes) else {
            tried.push(candidate);
            continue;
        };
        // A stale debug file describes another build: skip it.
        let matches = match (&build_id, debug.build_id().ok().flatten()) {
            (Some(a), Some(b)) => a.as_slice() == b,
            _ => true,
        };
        if matches && has_dwarf(&debug) {
            drop(debug);
            return Ok(Ok((candidate, bytes)));
        }
        tried.push(candidate);
    }
    Ok(Err(tried))
}

fn read(path: &Path) -> Result<Data, DwarfError> {
    Ok(crate::elf::read_elf(path)?)
}

fn parse<'d>(path: &Path, data: &'d [u8]) -> Result<object::File<'d>, DwarfError> {
    Ok(crate::elf::parse_elf(path, data)?)
}

/// True when the file has a non-empty `.debug_info` (possibly compressed).
fn has_dwarf(file: &object::File<'_>) -> bool {
    file.section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0 && s.kind() != object::SectionKind::UninitializedData)
}

/// Separate debug files to try, in gdb's order.
fn candidates(binary: &Path, file: &object::File<'_>, build_id: Option<&[u8]>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let real = binary
        .canonicalize()
        .unwrap_or_else(|_| binary.to_path_buf());
    let dir = real.parent().unwrap_or(Path::new("/")).to_path_buf();
    if let Ok(Some((name, _crc))) = file.gnu_debuglink() {
        let name = String::from_utf8_lossy(name).to_string();
        out.push(dir.join(&name));
        out.push(dir.join(".debug").join(&name));
        let rel = dir.strip_prefix("/").unwrap_or(&dir);
        out.push(Path::new(DEBUG_ROOT).join(rel).join(&name));
    }
    if let Some(id) = build_id
        && id.len() > 1
    {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        out.push(
            Path::new(DEBUG_ROOT)
                .join(".build-id")
                .join(&hex[..2])
                .join(format!("{}.debug", &hex[2..])),
        );
    }
    out
}

/// How to get debug info for `binary`, naming where ri looked.
fn hint(binary: &Path, tried: &[PathBuf]) -> String {
    let mut s = String::from("it has no .debug_info");
    if tried.is_empty() {
        s.push_str(" and no .gnu_debuglink or build-id to find a separate debug file");
    } else {
        let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        s.push_str(&format!(
            " and no debug file was found ({})",
            list.join(", ")
        ));
    }
    match package_of(binary) {
        Some(pkg) => {
            let dbg = if pkg == "libc6" {
                "libc6-dbg".to_string()
            } else {
                format!("{pkg}-dbgsym")
            };
            s.push_str(&format!("; install its debug symbols: apt install {dbg}"));
        }
        None => s.push_str("; rebuild it with -g, or install its debug symbols"),
    }
    s
}

/// The Debian package that owns a file, when dpkg knows it (under the
/// path before /usr was merged too: dpkg knows `/bin/ls`, not `/usr/bin/ls`).
fn package_of(binary: &Path) -> Option<String> {
    let real = binary.canonicalize().ok()?;
    let mut paths = vec![real.clone()];
    if let Ok(rest) = real.strip_prefix("/usr")
        && ["bin", "sbin", "lib", "lib32", "lib64", "libx32"]
            .iter()
            .any(|d| rest.starts_with(d))
    {
        paths.push(Path::new("/").join(rest));
    }
    paths.into_iter().find_map(|p| dpkg_owner(&p))
}

fn dpkg_owner(path: &Path) -> Option<String> {
    let out = std::process::Command::new("dpkg")
        .arg("-S")
        .arg(path)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next()?;
    let pkg = first.split(':').next()?.trim();
    (!pkg.is_empty() && !pkg.contains(' ')).then(|| pkg.to_string())
}
