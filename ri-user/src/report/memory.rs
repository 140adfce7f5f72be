//! The `memory` section: totals from `status` and `smaps_rollup`, and the
//! mappings summed per file (or per kind of anonymous memory) from `smaps`.

use std::collections::HashMap;

use serde::Serialize;

use super::{procfs, read_proc, unwind, why};

/// Memory use.
#[derive(Debug, Default, Serialize)]
pub struct MemorySection {
    /// Virtual size, KiB.
    pub vm_size_kb: Option<u64>,
    /// Resident set, KiB.
    pub rss_kb: Option<u64>,
    /// Peak resident set, KiB.
    pub rss_peak_kb: Option<u64>,
    /// Resident anonymous memory, KiB.
    pub rss_anon_kb: Option<u64>,
    /// Resident file-backed memory, KiB.
    pub rss_file_kb: Option<u64>,
    /// Resident shared memory, KiB.
    pub rss_shmem_kb: Option<u64>,
    /// Proportional set size (shared pages divided among sharers), KiB.
    pub pss_kb: Option<u64>,
    /// Swapped out, KiB.
    pub swap_kb: Option<u64>,
    /// Mappings summed by file, largest resident first.
    pub mappings: Vec<MappingSummary>,
    /// What could not be read, and why.
    pub notes: Vec<String>,
}

/// The mappings of one file (or one kind of anonymous memory).
#[derive(Debug, Clone, Serialize)]
pub struct MappingSummary {
    /// Path, `[heap]`, `[stack]`, `[anon]`, ...
    pub name: String,
    /// Number of mappings.
    pub count: u64,
    /// Total size, KiB.
    pub size_kb: u64,
    /// Resident, KiB (when `smaps` is readable).
    pub rss_kb: Option<u64>,
    /// Proportional set size, KiB (when `smaps` is readable).
    pub pss_kb: Option<u64>,
}

/// `Key:   N kB` values of a status-like file.
fn kb_fields(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let n = v.split_whitespace().next()?.parse().ok()?;
            Some((k.trim().to_string(), n))
        })
        .collect()
}

/// Sums `smaps` by mapping name.
pub fn summarize_smaps(text: &str) -> Vec<MappingSummary> {
    let mut by: HashMap<String, MappingSummary> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(m) = unwind::parse_maps(line).pop()
            && line
                .split_whitespace()
                .next()
                .is_some_and(|r| r.contains('-'))
        {
            let name = if m.name.is_empty() {
                "[anon]".into()
            } else {
                m.name
            };
            let e = by.entry(name.clone()).or_insert(MappingSummary {
                name: name.clone(),
                count: 0,
                size_kb: 0,
                rss_kb: Some(0),
                pss_kb: Some(0),
            });
            e.count += 1;
            current = Some(name);
            continue;
        }
        let (Some(name), Some((k, v))) = (&current, line.split_once(':')) else {
            continue;
        };
        let Some(n) = v
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let Some(e) = by.get_mut(name) else { continue };
        match k {
            "Size" => e.size_kb += n,
            "Rss" => *e.rss_kb.get_or_insert(0) += n,
            "Pss" => *e.pss_kb.get_or_insert(0) += n,
            _ => {}
        }
    }
    let mut v: Vec<MappingSummary> = by.into_values().collect();
    v.sort_by(|a, b| b.rss_kb.cmp(&a.rss_kb).then(a.name.cmp(&b.name)));
    v
}

/// Sums `maps` by name (sizes only).
fn summarize_maps(text: &str) -> Vec<MappingSummary> {
    let mut by: HashMap<String, MappingSummary> = HashMap::new();
    for m in unwind::parse_maps(text) {
        let name = if m.name.is_empty() {
            "[anon]".into()
        } else {
            m.name
        };
        let e = by.entry(name.clone()).or_insert(MappingSummary {
            name,
            count: 0,
            size_kb: 0,
            rss_kb: None,
            pss_kb: None,
        });
        e.count += 1;
        e.size_kb += (m.end - m.start) / 1024;
    }
    let mut v: Vec<MappingSummary> = by.into_values().collect();
    v.sort_by(|a, b| b.size_kb.cmp(&a.size_kb).then(a.name.cmp(&b.name)));
    v
}

/// Builds the `memory` section.
pub fn section(pid: u32) -> MemorySection {
    let mut s = MemorySection::default();
    match procfs::status(pid) {
        Ok(st) => {
            let kb = |k: &str| {
                st.get(k)
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
            };
            s.vm_size_kb = kb("VmSize");
            s.rss_kb = kb("VmRSS");
            s.rss_peak_kb = kb("VmHWM");
            s.rss_anon_kb = kb("RssAnon");
            s.rss_file_kb = kb("RssFile");
            s.rss_shmem_kb = kb("RssShmem");
            s.swap_kb = kb("VmSwap");
        }
        Err(e) => s.notes.push(why("status", &e)),
    }
    match read_proc(format!("/proc/{pid}/smaps_rollup")) {
        Ok(t) => s.pss_kb = kb_fields(&t).get("Pss").copied(),
        Err(e) => s.notes.push(why("smaps_rollup (PSS)", &e)),
    }
    match read_proc(format!("/proc/{pid}/smaps")) {
        Ok(t) => s.mappings = summarize_smaps(&t),
        Err(e) => {
            s.notes.push(why("smaps (resident size per mapping)", &e));
            if let Ok(t) = read_proc(format!("/proc/{pid}/maps")) {
                s.mappings = summarize_maps(&t);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_by_file() {
        let t = "\
55d0c0a00000-55d0c0a21000 r-xp 00002000 08:01 1234  /usr/bin/a
Size:                132 kB
Rss:                 100 kB
Pss:                  50 kB
VmFlags: rd ex mr mw me
55d0c0c00000-55d0c0c01000 rw-p 00020000 08:01 1234  /usr/bin/a
Size:                  4 kB
Rss:                   4 kB
Pss:                   4 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Size:               1024 kB
Rss:                 512 kB
Pss:                 512 kB
";
        let v = summarize_smaps(t);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "[anon]");
        assert_eq!(v[0].rss_kb, Some(512));
        assert_eq!(v[1].name, "/usr/bin/a");
        assert_eq!((v[1].count, v[1].size_kb), (2, 136));
        assert_eq!((v[1].rss_kb, v[1].pss_kb), (Some(104), Some(54)));
    }
}
