//! The type database against the typed fixture (tests/fixtures/typed.c),
//! compiled here with gcc at -O0, -O2 and as DWARF 4.

use std::{path::PathBuf, process::Command, sync::OnceLock};

use super::*;
use crate::dwarf::value::{self, NoMemory, Options, Value};

/// The fixture variants: name and gcc flags.
const VARIANTS: [(&str, &[&str]); 4] = [
    ("O0", &["-O0"]),
    ("O2", &["-O2"]),
    ("dwarf4", &["-O2", "-gdwarf-4"]),
    ("zlib", &["-O0", "-gz=zlib"]),
];

/// Compiles the typed fixture into `dir/name`; `None` when gcc is missing.
fn compile(dir: &std::path::Path, name: &str, flags: &[&str]) -> Option<PathBuf> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let bin = dir.join(name);
    let status = Command::new("gcc")
        .args(["-g", "-fno-omit-frame-pointer"])
        .args(flags)
        .arg(src.join("typed.c"))
        .arg(src.join("typed_decl.c"))
        .arg(src.join("typedlib.c"))
        .arg("-o")
        .arg(&bin)
        .status()
        .ok()?;
    assert!(status.success(), "gcc failed for {name}");
    Some(bin)
}

/// Builds the fixture variants once; `None` when gcc is missing.
fn builds() -> Option<&'static [(String, DebugInfo)]> {
    static BUILDS: OnceLock<Option<Vec<(String, DebugInfo)>>> = OnceLock::new();
    BUILDS
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("ri-dwarf-unit-{}", std::process::id()));
            std::fs::create_dir_all(&dir).ok()?;
            let mut out = Vec::new();
            for (name, flags) in VARIANTS {
                let bin = compile(&dir, name, flags)?;
                // The mapping outlives the file removed below.
                let info = DebugInfo::load(&bin).expect("load fixture DWARF");
                out.push((name.to_string(), info));
            }
            let _ = std::fs::remove_dir_all(&dir);
            Some(out)
        })
        .as_deref()
}

#[test]
fn names_and_spellings() {
    let Some(builds) = builds() else { return };
    for (build, info) in builds {
        let all = info.type_by_name("struct all").expect(build);
        assert_eq!(info.type_by_name("all"), Some(all), "{build}");
        assert_eq!(info.size_of(all), Some(696), "{build}");
        let ul = info.type_by_name("unsigned long").expect(build);
        assert_eq!(info.type_name(ul), "long unsigned int");
        assert_eq!(info.type_by_name("long unsigned int"), Some(ul));
        assert!(info.type_by_name("char").is_some());
        let id = info.type_by_name("node_id_t").expect(build);
        assert_eq!(info.type_name(id), "node_id_t");
        assert!(matches!(
            info.ty(info.strip(id)),
            Type::Base {
                size: 4,
                encoding: Encoding::Unsigned,
                ..
            }
        ));
        let np = info.type_by_name("struct node *").expect(build);
        assert_eq!(info.type_name(np), "struct node *");
        let spell = |m: &str| info.type_name(info.member(all, m).unwrap().ty);
        assert_eq!(spell("grid"), "struct point[2][3]");
        assert_eq!(spell("pp"), "struct node **");
        assert_eq!(spell("callback"), "int (*)(int, const char *)");
        assert_eq!(spell("label"), "const char *");
        assert_eq!(spell("cv"), "volatile const uint32_t");
        assert_eq!(
            info.declaration(info.member(all, "name").unwrap().ty, "name"),
            "char name[16]"
        );
        assert!(
            info.type_names("m0_*")
                .contains(&"struct m0_fid".to_string())
        );
        assert_eq!(info.close_type_names("struct nod"), vec!["struct node"]);
    }
}

#[test]
fn members_bitfields_and_declarations() {
    let Some(builds) = builds() else { return };
    for (build, info) in builds {
        let all = info.type_by_name("struct all").unwrap();
        // Through anonymous unions and structs.
        let m = info.member(all, "anon_f").expect(build);
        assert_eq!((m.offset, info.type_name(m.ty).as_str()), (672, "float"));
        assert_eq!(info.member(all, "hidden_b").unwrap().offset, 686);
        let flags = info.type_by_name("struct flags").unwrap();
        let bits = |n: &str| {
            let m = info.member(flags, n).unwrap();
            (m.offset, m.bit_offset, m.bit_size)
        };
        assert_eq!(bits("a"), (0, Some(0), Some(3)), "{build}");
        assert_eq!(bits("b"), (0, Some(3), Some(5)), "{build}");
        assert_eq!(bits("c"), (1, Some(0), Some(12)), "{build}");
        assert_eq!(bits("d"), (2, Some(4), Some(7)), "{build}");
        assert_eq!(bits("big"), (8, Some(0), Some(40)), "{build}");
        match info.member(all, "nosuch") {
            Err(DwarfError::UnknownMember { members, .. }) => {
                assert!(members.contains(&"anon_i".to_string()));
            }
            other => panic!("{other:?}"),
        }
        // `struct opaque` is only declared in typed.c's unit.
        let decl = info.member(all, "decl").unwrap().ty;
        let Type::Pointer { pointee: Some(p) } = info.ty(decl) else {
            panic!("decl is a pointer")
        };
        assert!(!info.is_incomplete(*p), "{build}");
        assert_eq!(info.member(*p, "what").unwrap().offset, 8);
        let flex = info.type_by_name("struct flex").unwrap();
        let items = info.member(flex, "items").unwrap().ty;
        let Type::Array { elem, count: None } = info.ty(items) else {
            panic!("{build}: items is a flexible array")
        };
        assert_eq!(info.type_name(*elem), "int");
        assert_eq!(info.size_of(items), None);
        let temp = info.type_by_name("enum temp").unwrap();
        let Type::Enum {
            signed, variants, ..
        } = info.ty(temp)
        else {
            panic!()
        };
        assert!(*signed);
        assert_eq!(variants[0], ("FREEZING".to_string(), -40));
    }
}

#[test]
fn functions_and_variables() {
    let Some(builds) = builds() else { return };
    for (build, info) in builds {
        let f = info.function("visit_flags").expect(build);
        let params: Vec<(String, String)> = f
            .params
            .iter()
            .map(|p| (p.name.clone(), info.type_name(p.ty)))
            .collect();
        assert_eq!(
            params,
            vec![
                ("f".to_string(), "struct flags *".to_string()),
                ("v".to_string(), "union value *".to_string())
            ],
            "{build}"
        );
        assert_eq!(info.type_name(f.ret.unwrap()), "int");
        let t = info.function("visit_temp").unwrap();
        assert_eq!(info.type_name(t.params[1].ty), "struct point");
        assert_eq!(info.type_name(t.ret.unwrap()), "enum temp");
        let (addr, ty) = info.variable("tg_fid").expect(build);
        assert!(addr > 0);
        assert_eq!(info.type_name(ty), "struct m0_fid");
        assert!(info.variable("tg_static").is_some(), "{build}");
        assert!(info.variable("no_such_variable").is_none());
    }
}

#[test]
fn decode_without_memory() {
    let Some(builds) = builds() else { return };
    let info = &builds[0].1;
    let fid = info.type_by_name("struct m0_fid").unwrap();
    let mut bytes = 0x7200000000000001u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&5u64.to_le_bytes());
    let v = value::decode(info, fid, &bytes, None, &NoMemory, &Options::default());
    assert_eq!(v, Value::Formatted("<7200000000000001:5>".into()));
    // A node whose pointer cannot be followed, captured short.
    let node = info.type_by_name("struct node").unwrap();
    let mut b = vec![0u8; 32];
    b[0] = 9;
    b[4] = 5;
    b[8..11].copy_from_slice(b"abc");
    b[24..32].copy_from_slice(&0x1000u64.to_le_bytes());
    let v = value::decode(info, node, &b, None, &NoMemory, &Options::default());
    assert_eq!(
        v.to_text(),
        "{id = 9, color = GREEN, name = \"abc\", next = 0x1000}"
    );
    let v = value::decode(info, node, &b[..20], None, &NoMemory, &Options::default());
    assert_eq!(v.to_json()["next"], serde_json::Value::Null);
    assert_eq!(v.to_json()["color"], "GREEN");
}

#[test]
fn lazy_lookups_match_every_unit_loaded() {
    let dir = std::env::temp_dir().join(format!("ri-dwarf-lazy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (build, flags) in VARIANTS {
        let Some(bin) = compile(&dir, build, flags) else {
            break;
        };
        let full = DebugInfo::load(&bin).expect(build);
        full.load_all();
        let names = DebugInfo::load(&bin).unwrap().type_names("*");
        assert_eq!(names, full.type_names("*"), "{build}");
        for n in &names {
            // A fresh handle per name: only what that lookup needs is parsed.
            let lazy = DebugInfo::load(&bin).expect(build);
            let a = lazy.type_by_name(n).expect(n);
            let b = full.type_by_name(n).expect(n);
            assert_eq!(
                crate::types::layout(&lazy, a),
                crate::types::layout(&full, b),
                "{build}: {n}"
            );
        }
        let lazy = DebugInfo::load(&bin).expect(build);
        let spell = |i: &DebugInfo, f: &str| {
            let f = i.function(f).expect(f);
            let p: Vec<String> = f
                .params
                .iter()
                .map(|p| i.declaration(p.ty, &p.name))
                .collect();
            p.join(", ")
        };
        assert_eq!(spell(&lazy, "visit_all"), spell(&full, "visit_all"));
        let (addr, ty) = lazy.variable("tg_all").expect(build);
        assert_eq!(full.variable("tg_all").map(|v| v.0), Some(addr));
        assert_eq!(lazy.type_name(ty), "struct all");
        assert_eq!(lazy.variable_at(addr).map(|v| v.0), Some("tg_all"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
