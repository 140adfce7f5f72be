//! The dynamic loader's search, emulated: the files a program maps at start
//! (`DT_NEEDED` followed with `DT_RPATH`/`DT_RUNPATH`, `LD_LIBRARY_PATH`, the
//! ld.so cache and the default directories), and where `dlopen` finds a name.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use object::{
    Endianness, ReadCache, ReadRef,
    elf::{DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME, FileHeader32, FileHeader64},
    read::elf::{Dyn, FileHeader},
};

/// What the loader reads from an ELF object's dynamic section.
#[derive(Debug, Default, Clone)]
struct Dynamic {
    /// 64-bit and the machine: a library must match the program.
    kind: (bool, u16),
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
    soname: Option<String>,
}

/// Reads the dynamic section of `path` (None: not an ELF file), through a
/// read cache: only the headers and the dynamic section are read, not the
/// whole file (a library with its debug info can be hundreds of MB).
fn read_dynamic(path: &Path) -> Option<Dynamic> {
    let cache = ReadCache::new(std::fs::File::open(path).ok()?);
    let data = &cache;
    let ident = data.read_bytes_at(0, 16).ok()?;
    if !ident.starts_with(b"\x7fELF") {
        return None;
    }
    match ident[4] {
        2 => parse::<FileHeader64<Endianness>, _>(data, true),
        1 => parse::<FileHeader32<Endianness>, _>(data, false),
        _ => None,
    }
}

fn parse<'d, H: FileHeader<Endian = Endianness>, R: ReadRef<'d>>(
    data: R,
    is64: bool,
) -> Option<Dynamic> {
    let header = H::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let mut out = Dynamic {
        kind: (is64, header.e_machine(endian)),
        ..Dynamic::default()
    };
    let sections = header.sections(endian, data).ok()?;
    let Some((entries, link)) = sections.dynamic(endian, data).ok()? else {
        return Some(out);
    };
    let strings = sections.strings(endian, data, link).ok()?;
    let split = |s: String| -> Vec<String> {
        s.split(':')
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect()
    };
    for d in entries {
        let Some(tag) = d.tag32(endian) else { continue };
        if ![DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME].contains(&tag) {
            continue;
        }
        let Some(Ok(value)) = d.val32(endian).map(|off| strings.get(off)) else {
            continue;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match tag {
            DT_NEEDED => out.needed.push(value),
            DT_RPATH => out.rpath.extend(split(value)),
            DT_RUNPATH => out.runpath.extend(split(value)),
            DT_SONAME => out.soname = Some(value),
            _ => {}
        }
    }
    Some(out)
}

/// The GNU multiarch triple of this machine's libraries.
fn triple() -> String {
    format!("{}-linux-gnu", std::env::consts::ARCH)
}

/// The loader's default directories, after the cache.
pub(crate) fn default_dirs() -> Vec<PathBuf> {
    let t = triple();
    [
        format!("/lib/{t}"),
        format!("/usr/lib/{t}"),
        "/lib64".into(),
        "/usr/lib64".into(),
        "/lib".into(),
        "/usr/lib".into(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// Expands `$ORIGIN`, `$LIB` and `$PLATFORM` (also in `${...}` form) in a
/// path list entry of the object in `origin`.
fn expand(entry: &str, origin: &Path) -> PathBuf {
    let lib = if Path::new(&format!("/lib/{}", triple())).is_dir() {
        format!("lib/{}", triple())
    } else {
        "lib64".into()
    };
    let mut s = entry.to_string();
    for (name, value) in [
        ("ORIGIN", origin.display().to_string()),
        ("LIB", lib),
        ("PLATFORM", std::env::consts::ARCH.to_string()),
    ] {
        s = s
            .replace(&format!("${{{name}}}"), &value)
            .replace(&format!("${name}"), &value);
    }
    PathBuf::from(s)
}

/// The ld.so cache (`/etc/ld.so.cache`): library names to paths, in the
/// cache's order of preference, read once.
fn cache() -> &'static [(String, PathBuf)] {
    static CACHE: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    CACHE.get_or_init(|| {
        std::fs::read("/etc/ld.so.cache")
            .map(|d| parse_cache(&d))
            .unwrap_or_default()
    })
}

/// Parses the glibc cache format (`glibc-ld.so.cache1.1`, possibly after an
/// old-format part); key and value are string offsets from the new header.
fn parse_cache(data: &[u8]) -> Vec<(String, PathBuf)> {
    const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
    let Some(start) = data.windows(MAGIC.len()).position(|w| w == MAGIC) else {
        return Vec::new();
    };
    let d = &data[start..];
    let u32_at =
        |o: usize| -> Option<u32> { Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?)) };
    let cstr = |o: usize| -> Option<String> {
        let rest = d.get(o..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    let Some(n) = u32_at(20) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for i in 0..n as usize {
        let e = 48 + i * 24;
        let (Some(key), Some(value)) = (u32_at(e + 4), u32_at(e + 8)) else {
            break;
        };
        if let (Some(k), Some(v)) = (cstr(key as usize), cstr(value as usize)) {
            out.push((k, PathBuf::from(v)));
        }
    }
    out
}

/// The environment a program is loaded in: what the loader reads from it.
#[derive(Debug, Clone, Default)]
pub struct LoadEnv {
    /// `LD_LIBRARY_PATH`, unsplit.
    pub ld_library_path: Option<String>,
    /// The working directory (relative paths and empty list entries).
    pub cwd: PathBuf,
}

impl LoadEnv {
    fn library_path(&self) -> Vec<PathBuf> {
        let Some(llp) = &self.ld_library_path else {
            return Vec::new();
        };
        llp.split([':', ';'])
            .map(|d| {
                if d.is_empty() {
                    self.cwd.clone()
                } else {
                    self.cwd.join(d)
                }
            })
            .collect()
    }

    /// A short description of the search, for error messages.
    pub fn describe(&self) -> String {
        match &self.ld_library_path {
            Some(p) => format!("LD_LIBRARY_PATH={p}"),
            None => "no LD_LIBRARY_PATH".into(),
        }
    }
}

/// One object the loader has loaded.
#[derive(Debug)]
struct Obj {
    path: PathBuf,
    dynamic: Dynamic,
    loader: Option<usize>,
}

/// A program as the loader loads it: the executable and its libraries in
/// load order, and the names it could not find.
#[derive(Debug)]
pub struct Loaded {
    objs: Vec<Obj>,
    env: LoadEnv,
    /// `DT_NEEDED` names found nowhere (the program would not start).
    pub missing: Vec<String>,
}

impl Loaded {
    /// Loads `exe` as ld.so would in `env`: breadth-first over `DT_NEEDED`,
    /// a name already loaded (by name or soname) loaded once.
    pub fn load(exe: &Path, env: LoadEnv) -> Option<Self> {
        let exe = exe.canonicalize().ok()?;
        let dynamic = read_dynamic(&exe)?;
        let mut loaded = Loaded {
            objs: vec![Obj {
                path: exe,
                dynamic,
                loader: None,
            }],
            env,
            missing: Vec::new(),
        };
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut i = 0;
        while i < loaded.objs.len() {
            for name in loaded.objs[i].dynamic.needed.clone() {
                if names.contains_key(&name) {
                    continue;
                }
                let Some((path, dynamic)) = loaded.find(&name, i) else {
                    loaded.missing.push(name);
                    continue;
                };
                let canon = path.canonicalize().unwrap_or_else(|_| path.clone());
                let known = loaded
                    .objs
                    .iter()
                    .position(|o| o.path.canonicalize().ok().as_ref() == Some(&canon));
                let id = known.unwrap_or_else(|| {
                    if let Some(s) = &dynamic.soname {
                        names.entry(s.clone()).or_insert(loaded.objs.len());
                    }
                    loaded.objs.push(Obj {
                        path,
                        dynamic,
                        loader: Some(i),
                    });
                    loaded.objs.len() - 1
                });
                names.insert(name, id);
            }
            i += 1;
        }
        Some(loaded)
    }

    /// The executable and the libraries, in load order.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.objs.iter().map(|o| o.path.as_path())
    }

    /// What the loader reads from the environment, for messages.
    pub fn env_text(&self) -> String {
        self.env.describe()
    }

    /// Where `dlopen` called from the executable would find `name`, or a
    /// file named loosely like it (`libfoo` for `libfoo.so.1`) in the
    /// directories searched before the cache.
    pub fn lookup(&self, name: &str) -> Option<PathBuf> {
        self.find(name, 0)
            .map(|(p, _)| p)
            .or_else(|| self.lookup_in_path(name))
    }

    /// `name`, exactly or loosely, in the directories searched before the
    /// cache (RPATH, `LD_LIBRARY_PATH`, RUNPATH).
    pub fn lookup_in_path(&self, name: &str) -> Option<PathBuf> {
        let want = self.objs[0].dynamic.kind;
        let fits = |p: &Path| p.is_file() && read_dynamic(p).is_some_and(|d| d.kind == want);
        for dir in self.dirs(0) {
            let exact = dir.join(name);
            if fits(&exact) {
                return Some(exact);
            }
            let files = super::files_named(&dir, |n| super::is_library(n, name));
            if let Some(f) = files.into_iter().find(|f| fits(f)) {
                return Some(f);
            }
        }
        None
    }

    /// The directories searched for a name needed by object `by`, in order.
    fn dirs(&self, by: usize) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        let origin = |o: &Obj| o.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let obj = &self.objs[by];
        if obj.dynamic.runpath.is_empty() {
            // DT_RPATH of the requester and of each object that loaded it,
            // up to the executable; an object with DT_RUNPATH has none.
            let mut at = Some(by);
            while let Some(k) = at {
                let o = &self.objs[k];
                if o.dynamic.runpath.is_empty() {
                    dirs.extend(o.dynamic.rpath.iter().map(|e| expand(e, &origin(o))));
                }
                at = o.loader;
            }
        }
        dirs.extend(self.env.library_path());
        dirs.extend(obj.dynamic.runpath.iter().map(|e| expand(e, &origin(obj))));
        dirs
    }

    /// Finds `name` needed by object `by`: a path, or the search directories,
    /// the cache and the default directories; only objects of the
    /// executable's class and machine count.
    fn find(&self, name: &str, by: usize) -> Option<(PathBuf, Dynamic)> {
        let want = self.objs[0].dynamic.kind;
        let fits = |p: PathBuf| -> Option<(PathBuf, Dynamic)> {
            if !p.is_file() {
                return None;
            }
            let d = read_dynamic(&p)?;
            (d.kind == want).then_some((p, d))
        };
        if name.contains('/') {
            return fits(self.env.cwd.join(name));
        }
        self.dirs(by)
            .into_iter()
            .map(|d| d.join(name))
            .chain(
                cache()
                    .iter()
                    .filter(|(k, _)| k == name)
                    .map(|(_, p)| p.clone()),
            )
            .chain(default_dirs().into_iter().map(|d| d.join(name)))
            .find_map(fits)
    }
}

/// Looks a loose library name up in the ld.so cache (`is_library` rules).
pub(crate) fn cache_lookup(name: &str) -> Option<PathBuf> {
    cache()
        .iter()
        .find(|(k, p)| super::is_library(k, name) && compatible(p))
        .map(|(_, p)| p.clone())
}

/// True when `p` is an ELF object ri's own kind of process could map: the
/// cache lists other architectures' libraries too.
fn compatible(p: &Path) -> bool {
    static OWN: OnceLock<Option<(bool, u16)>> = OnceLock::new();
    let own = OWN.get_or_init(|| read_dynamic(Path::new("/proc/self/exe")).map(|d| d.kind));
    read_dynamic(p).is_some_and(|d| Some(d.kind) == *own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_has_libc() {
        assert!(cache().iter().any(|(k, _)| k == "libc.so.6"));
        assert!(cache_lookup("libc").is_some());
    }

    #[test]
    fn own_libraries_load_like_ld_so() {
        let l = Loaded::load(Path::new("/proc/self/exe"), LoadEnv::default()).unwrap();
        assert!(l.missing.is_empty(), "{:?}", l.missing);
        let files: Vec<_> = l.files().collect();
        assert!(
            files
                .iter()
                .any(|f| f.to_string_lossy().contains("libc.so")),
            "{files:?}"
        );
    }

    /// A chain exe -> a -> b with the given (rpath, runpath) each.
    fn chain(paths: [(&str, &str); 3]) -> Loaded {
        let names = ["/x/exe", "/x/a/liba.so", "/x/b/libb.so"];
        let objs = names
            .iter()
            .zip(paths)
            .enumerate()
            .map(|(i, (n, (rpath, runpath)))| Obj {
                path: PathBuf::from(n),
                dynamic: Dynamic {
                    rpath: (!rpath.is_empty())
                        .then(|| rpath.to_string())
                        .into_iter()
                        .collect(),
                    runpath: (!runpath.is_empty())
                        .then(|| runpath.to_string())
                        .into_iter()
                        .collect(),
                    ..Dynamic::default()
                },
                loader: i.checked_sub(1),
            })
            .collect();
        Loaded {
            objs,
            env: LoadEnv {
                ld_library_path: Some("/llp".into()),
                cwd: PathBuf::from("/"),
            },
            missing: Vec::new(),
        }
    }

    #[test]
    fn rpath_is_inherited_runpath_is_not() {
        let p = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        // RPATH: the requester's, then its loaders' up to the executable,
        // then LD_LIBRARY_PATH.
        let l = chain([("$ORIGIN/r0", ""), ("/r1", ""), ("", "")]);
        assert_eq!(l.dirs(2), p(&["/r1", "/x/r0", "/llp"]));
        // RUNPATH: after LD_LIBRARY_PATH, for the object's own needs only;
        // an object with RUNPATH ignores its RPATH and gives none to others.
        let l = chain([("", "$ORIGIN/run0"), ("/r1", "/run1"), ("", "")]);
        assert_eq!(l.dirs(0), p(&["/llp", "/x/run0"]));
        assert_eq!(l.dirs(1), p(&["/llp", "/run1"]));
        assert_eq!(l.dirs(2), p(&["/llp"]));
    }

    #[test]
    fn origin_expands() {
        assert_eq!(
            expand("${ORIGIN}/../lib:x", Path::new("/a/b")),
            PathBuf::from("/a/b/../lib:x")
        );
        assert_eq!(
            expand("$ORIGIN/lib", Path::new("/a")),
            PathBuf::from("/a/lib")
        );
    }
}
