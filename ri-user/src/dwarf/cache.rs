//! The name index on disk, one file per build-id under
//! `$XDG_CACHE_HOME/ri/dwarf` (else `~/.cache/ri/dwarf`): checked by magic,
//! format version, build-id, `.debug_info` size and a checksum, rebuilt when
//! any differs; written to a temporary file then renamed, so two ri
//! processes writing at once each leave a whole file.

use std::{io::Write as _, path::PathBuf};

use super::index::{FunctionEntry, Index, Kind, TypeEntry, VariableEntry};

const MAGIC: &[u8; 8] = b"RIDWIDX\0";
/// Bump when the layout or the index's rules change.
const VERSION: u32 = 1;

/// Index files kept; past this the least recently written go.
const KEEP: usize = 256;

/// The cache directory, or `None` when neither `XDG_CACHE_HOME` nor `HOME`
/// is set (and in unit tests, whose fixtures are fresh builds each run: they
/// would only leave files behind).
#[cfg(test)]
fn dir() -> Option<PathBuf> {
    None
}

#[cfg(not(test))]
fn dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(base.join("ri").join("dwarf"))
}

/// The index file of a build-id.
pub(super) fn path(build_id: &[u8]) -> Option<PathBuf> {
    let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    Some(dir()?.join(format!("{hex}.idx")))
}

/// FNV-1a, enough to tell a torn or damaged file.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The saved index of this build, if a valid one is there.
pub(super) fn read(build_id: &[u8], info_size: u64) -> Option<Index> {
    let bytes = std::fs::read(path(build_id)?).ok()?;
    decode(&bytes, build_id, info_size)
}

/// Saves the index; failures (read-only home, full disk) only cost the
/// next run a rescan.
pub(super) fn write(build_id: &[u8], info_size: u64, index: &Index) {
    let Some(path) = path(build_id) else { return };
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let bytes = encode(index, build_id, info_size);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(
        ".{}.{}.{nanos}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("idx"),
        std::process::id()
    ));
    let ok = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&bytes))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if ok.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    prune(dir);
}

/// Removes the oldest index files past [`KEEP`], and temporary files a
/// killed ri left more than an hour ago.
fn prune(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        let Some(modified) = e.metadata().ok().and_then(|m| m.modified().ok()) else {
            continue;
        };
        match path.extension().and_then(|x| x.to_str()) {
            Some("idx") => files.push((modified, path)),
            Some("tmp") if modified < hour_ago => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
    if files.len() <= KEEP {
        return;
    }
    files.sort();
    for (_, path) in &files[..files.len() - KEEP] {
        let _ = std::fs::remove_file(path);
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

/// Entries sorted by name, so one build's index is always the same bytes.
fn sorted<V>(map: &std::collections::HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut v: Vec<_> = map.iter().collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    v
}

/// The file's bytes: header, units, types, functions, variables, checksum.
pub(super) fn encode(index: &Index, build_id: &[u8], info_size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + index.types.len() * 24);
    out.extend_from_slice(MAGIC);
    put_u32(&mut out, VERSION);
    put_u32(&mut out, build_id.len() as u32);
    out.extend_from_slice(build_id);
    put_u64(&mut out, info_size);
    put_u64(&mut out, index.pointer_size);
    put_u32(&mut out, index.units.len() as u32);
    for &u in &index.units {
        put_u64(&mut out, u as u64);
    }
    put_u32(&mut out, index.types.len() as u32);
    for (k, e) in sorted(&index.types) {
        put_str(&mut out, k);
        put_u32(&mut out, e.unit);
        out.push(e.kind as u8);
        out.push(u8::from(e.complete));
    }
    put_u32(&mut out, index.functions.len() as u32);
    for (k, e) in sorted(&index.functions) {
        put_str(&mut out, k);
        put_u32(&mut out, e.unit);
        out.push(u8::from(e.definition));
    }
    put_u32(&mut out, index.variables.len() as u32);
    for (k, e) in sorted(&index.variables) {
        put_str(&mut out, k);
        put_u32(&mut out, e.unit);
        out.push(e.rank);
        put_u64(&mut out, e.addr);
    }
    let sum = checksum(&out);
    put_u64(&mut out, sum);
    out
}

/// A cursor over the file's bytes; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn count(&mut self, min_item: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.saturating_mul(min_item) <= self.0.len()).then_some(n)
    }
}

/// The index in `bytes` if they are a whole, valid file for this build.
pub(super) fn decode(bytes: &[u8], build_id: &[u8], info_size: u64) -> Option<Index> {
    let body_len = bytes.len().checked_sub(8)?;
    let (body, sum) = bytes.split_at(body_len);
    if u64::from_le_bytes(sum.try_into().ok()?) != checksum(body) {
        return None;
    }
    let mut r = Reader(body);
    if r.take(8)? != MAGIC || r.u32()? != VERSION {
        return None;
    }
    let id_len = r.u32()? as usize;
    if r.take(id_len)? != build_id || r.u64()? != info_size {
        return None;
    }
    let mut index = Index {
        pointer_size: r.u64()?,
        ..Index::default()
    };
    let units = r.count(8)?;
    for _ in 0..units {
        let u = r.u64()?;
        if u >= info_size || index.units.last().is_some_and(|&l| l as u64 >= u) {
            return None;
        }
        index.units.push(u as usize);
    }
    let unit = |r: &mut Reader<'_>| r.u32().filter(|&u| (u as usize) < units);
    for _ in 0..r.count(10)? {
        let k = r.string()?;
        let e = TypeEntry {
            unit: unit(&mut r)?,
            kind: Kind::from_u8(r.u8()?)?,
            complete: r.u8()? != 0,
        };
        index.types.insert(k, e);
    }
    for _ in 0..r.count(9)? {
        let k = r.string()?;
        let e = FunctionEntry {
            unit: unit(&mut r)?,
            definition: r.u8()? != 0,
        };
        index.functions.insert(k, e);
    }
    for _ in 0..r.count(17)? {
        let k = r.string()?;
        let e = VariableEntry {
            unit: unit(&mut r)?,
            rank: r.u8()?,
            addr: r.u64()?,
        };
        index.variables.insert(k, e);
    }
    r.0.is_empty().then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        let mut index = Index {
            units: vec![0, 0x40, 0x1000],
            pointer_size: 8,
            ..Index::default()
        };
        index.types.insert(
            "struct a".into(),
            TypeEntry {
                unit: 1,
                kind: Kind::Tag,
                complete: true,
            },
        );
        index.functions.insert(
            "f".into(),
            FunctionEntry {
                unit: 2,
                definition: true,
            },
        );
        index.variables.insert(
            "v".into(),
            VariableEntry {
                unit: 0,
                rank: 1,
                addr: 0x4010,
            },
        );
        index
    }

    #[test]
    fn round_trip_and_rejections() {
        let index = sample();
        let bytes = encode(&index, b"id", 0x2000);
        assert_eq!(decode(&bytes, b"id", 0x2000), Some(sample()));
        assert_eq!(encode(&index, b"id", 0x2000), bytes, "deterministic");
        // Another build, another .debug_info size, any damaged byte, torn.
        assert_eq!(decode(&bytes, b"other", 0x2000), None);
        assert_eq!(decode(&bytes, b"id", 0x2001), None);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert_eq!(decode(&bad, b"id", 0x2000), None, "byte {i}");
        }
        for n in 0..bytes.len() {
            assert_eq!(decode(&bytes[..n], b"id", 0x2000), None, "{n} bytes");
        }
    }
}
