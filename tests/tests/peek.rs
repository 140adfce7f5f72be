//! `ri peek` on live processes: the typed fixture (tests/fixtures/typed.c)
//! writes its own JSON view of its globals, and what ri reads from its
//! memory must agree field by field, for the -O0, -O2 and DWARF 4 builds.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Output, Stdio},
};

use ri_tests::{fixture, fixtures, ri, ri_bin};
use serde_json::Value;

/// A typed fixture in `peek` mode: its globals' addresses and own view.
struct Typed {
    child: Child,
    stdin: Option<ChildStdin>,
    addrs: HashMap<String, u64>,
    view: Value,
    view_path: PathBuf,
}

impl Typed {
    fn start(name: &str) -> Self {
        let view_path =
            std::env::temp_dir().join(format!("ri-peek-{name}-{}.json", std::process::id()));
        let mut child = Command::new(fixture(name))
            .arg("peek")
            .arg(&view_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addrs = line
            .split_whitespace()
            .skip(1)
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                let v = u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap();
                (k.to_string(), v)
            })
            .collect();
        let view = std::fs::read_to_string(&view_path)
            .map(|t| serde_json::from_str(&t).expect("fixture view is JSON"))
            .unwrap_or(Value::Null);
        let stdin = child.stdin.take();
        Typed {
            child,
            stdin,
            addrs,
            view,
            view_path,
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// `ri peek -p PID ARGS...`.
    fn peek(&self, args: &[&str]) -> Output {
        let pid = self.pid();
        let mut all = vec!["peek", "-p", pid.as_str()];
        all.extend_from_slice(args);
        ri(&all)
    }

    /// `ri peek --json`'s value, failing on any error.
    fn peek_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.peek(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ri peek {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_str(stdout.trim()).expect("ri peek --json is JSON");
        v["value"].clone()
    }

    fn text(&self, args: &[&str]) -> String {
        let out = self.peek(args);
        assert!(
            out.status.success(),
            "ri peek {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Typed {
    fn drop(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"\n");
        }
        if self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.view_path);
    }
}

fn num_eq(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
        (Some(x), Some(y), _, _) => x == y,
        (_, _, Some(x), Some(y)) => x == y,
        _ => a.as_f64() == b.as_f64(),
    }
}

/// Every field of `want` is in `got` with the same value (objects may have
/// more keys; arrays match element by element; 2 equals 2.0).
fn subset(want: &Value, got: &Value, path: &str, errors: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => subset(wv, gv, &format!("{path}.{k}"), errors),
                    None => errors.push(format!("{path}.{k}: missing in ri's output")),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                subset(wv, gv, &format!("{path}[{i}]"), errors);
            }
        }
        (Value::Number(a), Value::Number(b)) if num_eq(a, b) => {}
        (w, g) if w == g => {}
        (w, g) => errors.push(format!("{path}: fixture says {w}, ri says {g}")),
    }
}

/// ri's view of every global the fixture describes matches the fixture's.
fn values_match(name: &str) {
    let t = Typed::start(name);
    let view = t.view.as_object().expect("fixture view").clone();
    assert!(view.len() >= 10, "fixture view too small: {view:?}");
    let mut errors = Vec::new();
    for (var, want) in &view {
        let depth = if var == "tg_head" { "5" } else { "1" };
        let got = t.peek_json(&["--depth", depth, var]);
        subset(want, &got, var, &mut errors);
    }
    assert!(errors.is_empty(), "{name}:\n  {}", errors.join("\n  "));
}

#[test]
fn values_match_the_fixture_o0() {
    values_match("typed-O0");
}

#[test]
fn values_match_the_fixture_o2() {
    values_match("typed-O2");
}

#[test]
fn values_match_the_fixture_dwarf4() {
    values_match("typed-dwarf4");
}

#[test]
fn text_like_gdb_print() {
    let t = Typed::start("typed-O0");
    let all = t.text(&["tg_all"]);
    let addr = t.addrs["tg_all"];
    for want in [
        format!("tg_all (struct all @ {addr:#x} in typed-O0) = {{\n"),
        "  c = 65 'A',\n".to_string(),
        "  color = GREEN,\n".into(),
        "  bad_color = 7,\n".into(),
        "    b = -7,\n".into(),
        "    col = BLUE,\n".into(),
        "  nums = {10, 20, 30, 40, 50},\n".into(),
        "3969, ...36 more\n".into(),
        "  name = \"typed-all\",\n".into(),
        "\"label text\",\n".into(),
        "  null_label = 0x0,\n".into(),
        "  fid = <1234abcd:ff>,\n".into(),
        "  bad_pt = 0x10 <unreadable 0x10>,\n".into(),
        "{secret = 1234, what = 0x".into(),
        "  anon_f = 1.5,\n".into(),
        "  anon_s = {ax = 7, ay = -7},\n".into(),
    ] {
        assert!(all.contains(&want), "ri peek tg_all lacks {want:?}:\n{all}");
    }
    let nodes = t.addrs["tg_nodes"];
    let head = t.text(&["--depth", "5", "tg_head"]);
    let cycle = format!("next = {nodes:#x} <cycle: already shown at {nodes:#x}>");
    assert!(head.contains(&cycle), "no {cycle:?} in:\n{head}");
    assert!(head.contains("name = \"third\""), "{head}");
    // The default depth follows one pointer.
    let head = t.text(&["tg_head"]);
    assert!(
        head.contains("name = \"first\"") && !head.contains("\"second\""),
        "{head}"
    );
    let fid = t.text(&["tg_fid"]);
    assert!(fid.ends_with("= <7200000000000001:5>\n"), "{fid}");
}

#[test]
fn address_and_type() {
    let t = Typed::start("typed-O2");
    let nodes = format!("{:#x}", t.addrs["tg_nodes"]);
    let first = &t.view["tg_nodes"][0];
    let mut errors = Vec::new();
    let got = t.peek_json(&[&nodes, "struct node"]);
    subset(first, &got, "struct node", &mut errors);
    // The type may also come as several words.
    let got = t.peek_json(&[&nodes, "struct", "node"]);
    subset(first, &got, "struct node", &mut errors);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let text = t.text(&[&nodes, "struct node"]);
    assert!(
        text.starts_with(&format!("*(struct node *){nodes} (in typed-O2) = {{")),
        "{text}"
    );
    let fid = format!("{:#x}", t.addrs["tg_fid"]);
    assert_eq!(
        t.peek_json(&[&fid, "struct m0_fid"]),
        "<7200000000000001:5>"
    );
    assert_eq!(t.peek_json(&[&fid, "uint64_t"]), 0x7200000000000001u64);
}

#[test]
fn member_paths() {
    let t = Typed::start("typed-dwarf4");
    for (path, want) in [
        ("tg_all.flags.b", serde_json::json!(-7)),
        ("tg_all.flags.big", serde_json::json!(-123456789012i64)),
        ("tg_all.flags.col", serde_json::json!("BLUE")),
        ("tg_all.inner.pts[1].y", serde_json::json!(40)),
        ("tg_all.many[99]", serde_json::json!(9801)),
        ("tg_nodes[2].color", serde_json::json!("BLUE")),
        ("tg_head->next->name", serde_json::json!("second")),
        ("tg_all.list->id", serde_json::json!(2)),
        ("tg_all.anon_s.ay", serde_json::json!(-7)),
        ("tg_all.hidden_b", serde_json::json!(-11)),
        ("tg_all.decl->secret", serde_json::json!(1234)),
        ("tg_static", serde_json::json!(99)),
        ("tg_matrix[1]", serde_json::json!([4, 5, 6])),
    ] {
        assert_eq!(t.peek_json(&[path]), want, "ri peek {path}");
    }
}

#[test]
fn library_variable() {
    let t = Typed::start("typed-O0");
    let want = serde_json::json!({"generation": 7, "tag": "libtag"});
    assert_eq!(t.peek_json(&["--target", "libtyped", "tl_state"]), want);
    let path = fixtures().join("libtyped.so").display().to_string();
    assert_eq!(t.peek_json(&["--target", &path, "tl_state"]), want);
    // Without --target: every mapped file is searched, and the output says
    // where the variable was found.
    assert_eq!(t.peek_json(&["tl_state"]), want);
    assert_eq!(t.peek_json(&["libtyped:tl_state"]), want);
    let out = t.peek(&["--json", "tl_ops"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("ri peek --json is JSON");
    assert_eq!(v["object"], path, "{v}");
    assert_eq!(v["value"]["name"]["to"], "node", "{v}");
    assert_eq!(v["value"]["create"]["symbol"], "conf_node_create", "{v}");
    // tl_other is copied into the executable, which set it to 43: the
    // library's pointer and ri both see that copy.
    assert_eq!(v["value"]["counter"]["to"], 43, "{v}");
    assert_eq!(t.peek_json(&["tl_other"]), 43);
    let text = t.text(&["tl_ops"]);
    assert!(text.starts_with("tl_ops (struct lib_ops @ 0x"), "{text}");
    assert!(text.contains(" in libtyped.so) = "), "{text}");
    assert!(
        text.contains("create = 0x") && text.contains(" <conf_node_create>"),
        "{text}"
    );
    // A pointer left unfollowed names the global it points at.
    let text = t.text(&["--depth", "0", "tl_ops"]);
    assert!(
        text.contains(" <tl_other>") && text.contains(" <tl_state>"),
        "{text}"
    );
    // A name in several files: the executable's, with a note; LIB: picks.
    let out = t.peek(&["dup_counter"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("= 1\n"),
        "{out:?}"
    );
    assert!(
        stderr.contains("dup_counter is also in libtyped.so; showing the one in typed-O0"),
        "{stderr}"
    );
    assert_eq!(t.peek_json(&["libtyped.so:dup_counter"]), 2);
    fails_with(
        &t.peek(&["libnosuch:tl_state"]),
        &format!("no file named 'libnosuch' is mapped by pid {}", t.pid()),
    );
    let out = t.peek(&["tl_stat"]);
    fails_with(&out, "unknown variable 'tl_stat' in typed-O0, ");
    fails_with(&out, "libtyped.so");
    fails_with(&out, "(did you mean tl_state?)");
    // ri types -p: the library's types too.
    let pid = t.pid();
    let out = ri(&["types", "-p", &pid, "struct lib_ops"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("int (*create)(int);"), "{text}");
}

/// Exit status 2, one line on stderr containing `want`, no panic.
fn fails_with(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(want), "stderr lacks {want:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "more than one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_input_on_a_live_process() {
    let t = Typed::start("typed-O0");
    let pid = t.pid();
    fails_with(
        &t.peek(&["tg_all.nosuch"]),
        "struct all has no member 'nosuch' (members: c, i64, u8,",
    );
    fails_with(
        &t.peek(&["tg_all.fid.f_kye"]),
        "struct m0_fid has no member 'f_kye' (members: f_container, f_key)",
    );
    fails_with(&t.peek(&["tg_all.c.x"]), "'char' is not a struct or union");
    fails_with(&t.peek(&["tg_all->c"]), "struct all is not a pointer");
    fails_with(&t.peek(&["tg_al"]), "unknown variable 'tg_al'");
    fails_with(
        &t.peek(&["0x1000", "struct nod"]),
        "unknown type 'struct nod'",
    );
    fails_with(
        &t.peek(&["0x10", "struct node"]),
        &format!("address 0x10 is not mapped in pid {pid}"),
    );
    let other = fixture("typed-O2").display().to_string();
    fails_with(
        &t.peek(&["--target", &other, "tg_all"]),
        &format!("{other} is not mapped by pid {pid}"),
    );
    // An unmapped pointer on the way is an error too; at the end it is shown.
    fails_with(
        &t.peek(&["tg_all.bad_pt->x"]),
        &format!("address 0x10 is not mapped in pid {pid}"),
    );
    let nobody = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(ri_bin())
        .args(["peek", "-p", &pid, "tg_all"])
        .output()
        .expect("run setpriv");
    fails_with(&nobody, &format!("permission denied reading pid {pid}"));
}

#[test]
fn no_debug_info() {
    let t = Typed::start("typed-stripped");
    let out = t.peek(&["tg_all"]);
    let path = fixture("typed-stripped").display().to_string();
    fails_with(&out, &format!("no debug info for {path}"));
    // Through .gnu_debuglink the same code is fine.
    let t = Typed::start("typed-linked");
    assert_eq!(t.peek_json(&["tg_fid"]), "<7200000000000001:5>");
}
