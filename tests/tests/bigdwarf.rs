//! Lazy DWARF loading and its index cache, on the generated program of many
//! compilation units (`bigdwarf`): a typed probe, `peek` and `types` answer
//! the same cold (no index yet) and warm, the same as when every unit is
//! loaded; a corrupt index or one of another build is rebuilt, not
//! trusted; ri processes writing the index at once leave one whole file.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use ri_tests::{fixture, fixtures, require_bpf, ri_bin};
use serde_json::Value;

fn bigdwarf() -> PathBuf {
    fixtures().join("bigdwarf").join("bigdwarf")
}

/// Runs ri with its index cache under `cache`; fails the test unless it
/// succeeds, returning stdout.
fn ri_in(cache: &Path, args: &[&str]) -> String {
    let out: Output = Command::new(ri_bin())
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("run ri");
    assert!(
        out.status.success(),
        "ri {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The index files (and any temporary leftovers) in a cache.
fn index_files(cache: &Path) -> Vec<PathBuf> {
    let dir = cache.join("ri").join("dwarf");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// `ri types --json` as (name → type) pairs.
fn types_json(cache: &Path, bin: &Path, pattern: &str) -> Vec<Value> {
    let out = ri_in(
        cache,
        &["types", "--json", &bin.display().to_string(), pattern],
    );
    let v: Value = serde_json::from_str(&out).expect("types --json is JSON");
    v.as_array().expect("an array").clone()
}

/// The program in `wait` mode (for peek), killed when dropped.
struct Waiting(Child);

impl Waiting {
    fn start() -> Self {
        let mut child = Command::new(bigdwarf())
            .arg("wait")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start bigdwarf");
        let out = child.stdout.take().unwrap();
        let w = Waiting(child);
        let ready = BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .any(|l| l == "ready");
        assert!(ready, "bigdwarf exited before 'ready'");
        w
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A typed probe's event fields (without time, pid, cpu).
fn typed_event(cache: &Path) -> Value {
    let b = bigdwarf().display().to_string();
    let out = ri_in(
        cache,
        &[
            "trace",
            "--json",
            "-c",
            &b,
            &format!("u:{b}:gs_fn_3_0(c=a->count, s=a->state, id=a->gs_3_0_id)"),
        ],
    );
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no event in {out}"));
    let mut v: Value = serde_json::from_str(line).unwrap();
    for k in ["pid", "tid", "cpu", "ts_ns"] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

#[test]
fn cold_and_warm_answer_alike() {
    require_bpf();
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let bin = bigdwarf();
    // Cold: no index yet; the run writes it.
    let cold_types = types_json(c, &bin, "struct gs_3_*");
    assert_eq!(index_files(c).len(), 1, "one index file after a cold run");
    let cold_event = typed_event(c);
    assert_eq!(cold_event["c"], 4, "gs_var_3_0.count is 4: {cold_event}");
    assert_eq!(cold_event["s"], "GS_3_0_IDLE", "{cold_event}");
    let proc = Waiting::start();
    let pid = proc.0.id().to_string();
    let cold_peek = ri_in(c, &["peek", "-p", &pid, "gs_var_5_0"]);
    assert!(cold_peek.contains("count = 6,"), "{cold_peek}");
    // Warm: the index is read, not rebuilt.
    let before = std::fs::read(&index_files(c)[0]).unwrap();
    assert_eq!(types_json(c, &bin, "struct gs_3_*"), cold_types);
    assert_eq!(typed_event(c), cold_event);
    assert_eq!(ri_in(c, &["peek", "-p", &pid, "gs_var_5_0"]), cold_peek);
    assert!(
        std::fs::read(&index_files(c)[0]).unwrap() == before,
        "index unchanged"
    );
    drop(proc);
    // Every unit loaded ('*') gives the same layouts as the lazy lookups.
    let all = types_json(c, &bin, "*");
    for t in &cold_types {
        let same = all.iter().find(|a| a["name"] == t["name"]);
        assert_eq!(
            same,
            Some(t),
            "{} differs when every unit is loaded",
            t["name"]
        );
    }
    assert!(cold_types.len() >= 12, "{} types", cold_types.len());
}

#[test]
fn corrupt_or_foreign_index_is_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let big = bigdwarf();
    let other = fixture("typed-O0");
    let want_big = types_json(c, &big, "struct gs_2_1");
    let want_other = types_json(c, &other, "struct node");
    let files = index_files(c);
    assert_eq!(files.len(), 2, "one index per build: {files:?}");
    let good: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    // Both builds answer as before and their index files are whole again.
    let check = || {
        assert_eq!(types_json(c, &big, "struct gs_2_1"), want_big);
        assert_eq!(types_json(c, &other, "struct node"), want_other);
        for (f, g) in files.iter().zip(&good) {
            let now = std::fs::read(f).unwrap();
            assert!(&now == g, "{} not rebuilt", f.display());
        }
    };
    // Garbage, a torn file, one flipped byte: each is rebuilt.
    let mut flipped = good[0].clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    let torn = good[0][..good[0].len() / 3].to_vec();
    for bad in [b"not an index".to_vec(), torn, flipped] {
        std::fs::write(&files[0], &bad).unwrap();
        std::fs::write(&files[1], &bad).unwrap();
        check();
    }
    // Another build's index under this build-id: rejected and rebuilt.
    std::fs::write(&files[0], &good[1]).unwrap();
    std::fs::write(&files[1], &good[0]).unwrap();
    check();
}

#[test]
fn writers_at_once_leave_one_whole_index() {
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let b = bigdwarf().display().to_string();
    for round in 0..3 {
        let _ = std::fs::remove_dir_all(c.join("ri"));
        let children: Vec<Child> = (0..4)
            .map(|_| {
                Command::new(ri_bin())
                    .args(["types", "--json", &b, "struct gs_4_*"])
                    .env("XDG_CACHE_HOME", c)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn ri")
            })
            .collect();
        let outs: Vec<Output> = children
            .into_iter()
            .map(|ch| ch.wait_with_output().unwrap())
            .collect();
        for o in &outs {
            assert!(
                o.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(o.stdout, outs[0].stdout, "round {round}: same answers");
        }
        let files = index_files(c);
        assert_eq!(
            files.len(),
            1,
            "round {round}: one file, no leftovers: {files:?}"
        );
        let warm = ri_in(c, &["types", "--json", &b, "struct gs_4_*"]);
        assert_eq!(warm.as_bytes(), &outs[0].stdout[..]);
        assert_eq!(index_files(c), files, "the whole index was used as is");
    }
}

#[test]
fn a_name_leads_to_the_first_units_type_whatever_loads_first() {
    // Every unit has its own `struct gs_unit`; the typedefs sorted first
    // load units 1.. before unit 0. The struct shown is unit 0's, as when
    // the whole DWARF was parsed at once.
    let cache = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let types = types_json(cache.path(), &bigdwarf(), "*gs_unit*");
        let s = types
            .iter()
            .find(|t| t["kind"] == "struct" && t["name"] == "gs_unit")
            .unwrap_or_else(|| panic!("no struct gs_unit in {types:?}"));
        assert_eq!(s["members"][0]["name"], "unit_0", "{s}");
        assert!(types.len() >= 3, "typedefs too: {types:?}");
    }
}
