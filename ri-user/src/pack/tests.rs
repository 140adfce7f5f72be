//! Pack parsing, validation and parameter filling, without a kernel.

use std::collections::BTreeMap;

use super::{BUILTIN, expand::fill_params, format::probe_ref, parse};

#[test]
fn built_in_packs_parse() {
    for (name, text) in BUILTIN {
        let p = parse(text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&p.pack.name, name);
        assert!(!p.instruments.is_empty());
    }
}

#[test]
fn motr_pack_has_the_issue_instruments() {
    let motr = parse(BUILTIN[0].1, "motr").unwrap();
    for i in [
        "queue", "fops", "allocs", "sessions", "blocks", "cobs", "trace", "addb2",
    ] {
        assert!(motr.instruments.contains_key(i), "motr.{i}");
    }
    assert!(motr.probes["balloc_alloc"].optional);
}

#[test]
fn motr_allocs_follows_every_allocator_and_release_function() {
    let motr = parse(BUILTIN[0].1, "motr").unwrap();
    let allocs = &motr.instruments["allocs"];
    let at = |names: &[String]| -> Vec<String> {
        names.iter().map(|n| motr.probes[n].at.clone()).collect()
    };
    assert_eq!(
        at(&allocs.alloc),
        ["u:m0_alloc", "u:m0_alloc_nz", "u:m0_alloc_aligned"]
    );
    assert_eq!(at(&allocs.free), ["u:m0_free", "u:m0_free_aligned"]);
}

#[test]
fn probe_references() {
    assert_eq!(probe_ref("fom_queue(key=fom)"), "fom_queue");
    assert_eq!(probe_ref("  line if 0"), "line");
    assert_eq!(probe_ref("socket-calls"), "socket-calls");
}

fn cobs() -> super::Instrument {
    parse(BUILTIN[0].1, "motr").unwrap().instruments["cobs"].clone()
}

#[test]
fn fid_parameters_from_names_and_fids() {
    let inst = cobs();
    let with = |v: &str| {
        let mut m = BTreeMap::new();
        m.insert("object".to_string(), v.to_string());
        fill_params("{object.container}/{object.key}", &inst, Some(&m)).unwrap()
    };
    // `ri fid of foo`: <470000003298beac:dcb27518fed9d577>.
    assert_eq!(with("foo"), "0x470000003298beac/0xdcb27518fed9d577");
    assert_eq!(with("<4700000000000001:2a>"), "0x4700000000000001/0x2a");
    assert_eq!(
        fill_params("{object.key}", &inst, Some(&BTreeMap::new())).unwrap(),
        "0x0"
    );
    assert!(fill_params("{nope}", &inst, None).is_err());
    assert!(fill_params("{object.bits}", &inst, Some(&BTreeMap::new())).is_err());
}

#[test]
fn a_required_parameter_must_be_given() {
    let mut inst = cobs();
    inst.params.get_mut("object").unwrap().default = None;
    let e = fill_params("{object.key}", &inst, Some(&BTreeMap::new())).unwrap_err();
    assert!(e.starts_with("needs object=VALUE"), "{e}");
}

fn pack(instrument: &str, probes: &str) -> String {
    format!(
        "[pack]\nname = \"t\"\nhelp = \"h\"\ntargets = [\"x\"]\n[probes]\n{probes}\n[instruments.i]\nhelp = \"h\"\n{instrument}\n"
    )
}

#[test]
fn validation_names_pack_instrument_and_field() {
    let cases = [
        (
            pack("kind = \"trace\"\nprobes = [\"a\"]", "a = { at = \"k:f\" }"),
            "pack t (test), probe a: at = 'k:f': unknown probe kind",
        ),
        (
            pack(
                "kind = \"trace\"\nprobes = [\"a\"]",
                "a = { at = \"u:bin:f\" }",
            ),
            "probe a: at = 'u:bin:f': expected u:FUNC or ur:FUNC",
        ),
        (
            pack("kind = \"latency\"", "a = { at = \"u:f\" }"),
            "instrument i: kind latency needs field probe (or begin and end)",
        ),
        (
            pack(
                "kind = \"inflight\"\nbegin = \"a(key=arg0)\"",
                "a = { at = \"u:f\" }",
            ),
            "instrument i: kind inflight needs field end",
        ),
        (
            pack(
                "kind = \"trace\"\nprobes = [\"a(s=str(arg0))\"]\nprintf = [{ name = \"m\", format = \"f\", args = \"s\" }]",
                "a = { at = \"u:f\" }",
            ),
            "instrument i: printf m: format = 'f' is not a capture of its probes",
        ),
        (
            pack(
                "kind = \"count\"\nprobes = [\"a\"]\ninterval = 0",
                "a = { at = \"u:f\" }",
            ),
            "instrument i: interval must be a positive number of seconds, not 0",
        ),
        (
            pack(
                "kind = \"trace\"\nprobes = [\"a({x})\"]",
                "a = { at = \"u:f\" }",
            ),
            "instrument i: probes: unknown parameter {x}",
        ),
        (
            pack(
                "kind = \"leaks\"\nalloc = []\nfree = \"a\"",
                "a = { at = \"u:f\" }",
            ),
            "instrument i: kind leaks needs field alloc",
        ),
        (
            pack(
                "kind = \"leaks\"\nalloc = [\"a\", \"b\"]\nfree = \"a\"",
                "a = { at = \"u:f\" }",
            ),
            "instrument i: alloc: unknown probe 'b' (the pack's probes: a)",
        ),
        (
            pack(
                "kind = \"leaks\"\nalloc = 3\nfree = \"a\"",
                "a = { at = \"u:f\" }",
            ),
            "expected a probe name or a list of probe names",
        ),
        (
            pack("kind = \"trace\"\nprobes = [\"a\"]", "a = { at = \"u:f\" }")
                .replace("[formatters]", "")
                + "[formatters]\nm0_fid = \"fancy\"\n",
            "formatter for 'm0_fid': unknown formatter 'fancy'",
        ),
    ];
    for (text, want) in cases {
        let e = parse(&text, "test").unwrap_err().to_string();
        assert!(e.contains(want), "{e}\n  wanted: {want}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

#[test]
fn shown_command_lines_are_quoted_for_a_shell() {
    let argv: Vec<String> = ["count", "u:/bin/x:f", "--by", "a->b", "it's"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        super::shell_words(&argv),
        r"count u:/bin/x:f --by 'a->b' 'it'\''s'"
    );
}
