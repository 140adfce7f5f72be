//! The files a process maps, as gdb searches them: the executable first,
//! then every library in map order, each with its debug info (when it has
//! any) and its load bias.

use std::path::{Path, PathBuf};

use super::process;
use crate::{Error, dwarf::DebugInfo, target};

/// One mapped file with debug info.
#[derive(Debug)]
pub struct Loaded {
    /// The file as mapped.
    pub path: PathBuf,
    /// Add to a file virtual address to get the process's address (`None`
    /// when the process does not map it: see [`Loaded::bias`]).
    bias: Option<u64>,
    /// Its debug info.
    pub info: DebugInfo,
}

impl Loaded {
    /// The load bias, or why there is none (the file is not mapped, the
    /// process cannot be read): asked only once a name was found, so a
    /// name missing from the DWARF is said first.
    pub fn bias(&self, pid: u32) -> Result<u64, Error> {
        match self.bias {
            Some(b) => Ok(b),
            None => process::load_bias(pid, &self.path),
        }
    }

    /// The file's name, for messages (`libmotr.so.2`).
    pub fn name(&self) -> String {
        short(&self.path)
    }
}

/// A path's file name.
pub fn short(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The files `pid` maps, executable first, each once, in map order.
pub fn mapped_files(pid: u32) -> Result<Vec<PathBuf>, Error> {
    // The executable's link first: it says when ri may not read the pid.
    let mut files = vec![process::exe_of(pid)?];
    for path in target::mapped_files(pid)? {
        if !files.contains(&path) {
            files.push(path);
        }
    }
    Ok(files)
}

/// Every file in `files` that has debug info, with its bias in `pid`.
/// The first file's errors count (it is the executable or the chosen
/// target); other files that are not ELF or have no DWARF are skipped.
pub fn load(pid: u32, files: &[PathBuf]) -> Result<Vec<Loaded>, Error> {
    let mut out = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let info = match DebugInfo::load_if_any(path) {
            Ok(Some(info)) => info,
            Ok(None) => continue,
            Err(e) if i == 0 => return Err(e.into()),
            Err(_) => continue,
        };
        let bias = process::load_bias(pid, path).ok();
        out.push(Loaded {
            path: path.clone(),
            bias,
            info,
        });
    }
    Ok(out)
}

/// Whether `path` is the library a `LIB:` prefix names: its file name, the
/// name up to a `.so` version (`libmotr` for `libmotr.so.2`), or the path.
pub fn is_named(path: &Path, lib: &str) -> bool {
    path == Path::new(lib) || target::is_library(&short(path), lib)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::is_named;

    #[test]
    fn library_names() {
        let p = Path::new("/usr/lib64/libmotr.so.2");
        assert!(is_named(p, "libmotr"));
        assert!(is_named(p, "libmotr.so.2"));
        assert!(is_named(p, "/usr/lib64/libmotr.so.2"));
        assert!(!is_named(p, "libmo"));
        assert!(!is_named(Path::new("/lib/libcrypto.so.3"), "libc"));
        assert!(is_named(Path::new("/usr/sbin/m0d"), "m0d"));
    }
}
