//! A bundle read back after the target and ri are gone: `ri session show`
//! prints each aggregation's last print as the live command printed the
//! same data, and `ri session export --perfetto` decodes with Perfetto's own
//! definitions into host, process and thread tracks, nested slices equal to
//! the begin/end events, instants and counters.

use std::{collections::BTreeMap, process::Command, time::Duration};

use ri_tests::{
    Reader, require_bpf, ri, ri_bin,
    session::{ONE_AT_A_TIME, manifest, start},
    sigint, start_waiting,
};
use serde_json::Value;

/// The opcode of a queued request: a value both instruments see alike.
const OPCODE: &str = "fom->fo_fop->f_type->ft_rpc_item_type.rit_opcode";

/// Starts `ri ARGS` and returns once its probes are attached.
fn attached(args: &[&str]) -> (std::process::Child, Reader, Reader) {
    let mut cmd = Command::new(ri_bin());
    cmd.args(args);
    start_waiting(cmd, "attached", true)
}

/// Stops a command from [`attached`] with Ctrl-C; its stdout.
fn stopped((mut child, out, err): (std::process::Child, Reader, Reader)) -> String {
    sigint(&mut child);
    let _ = err.join();
    String::from_utf8_lossy(&out.join().unwrap()).into_owned()
}

/// The lines of `text` under the line `head` up to the next section (a
/// line ending in `):`), without trailing blank lines.
fn section<'a>(text: &'a str, head: &str) -> Vec<&'a str> {
    let mut lines: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != head)
        .skip(1)
        .take_while(|l| !l.ends_with("):"))
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

#[test]
fn session_show_prints_each_aggregation_as_its_live_command_printed_the_same_data() {
    require_bpf();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let live = start(
        &format!(
            r#"
interval = "1s"
[instruments.ops]
run = "motr.ops"
[instruments.opcodes]
cmd = "hist u:m0d:m0_fom_queue --value '{OPCODE}'"
"#
        ),
        &[],
    );
    let pid = live.m0d.pid.to_string();
    // The same instruments as live commands, attached before the load and
    // stopped after it: every request is in both.
    let ops = attached(&["run", "motr.ops", "-p", &pid]);
    let hist = attached(&["hist", "u:m0d:m0_fom_queue", "--value", OPCODE, "-p", &pid]);
    let load = live
        .m0d
        .load(15, 3.0, "show")
        .finish(Duration::from_secs(60));
    assert_eq!(load["total_errors"], 0, "{load}");
    std::thread::sleep(Duration::from_millis(1500));
    let (ops, hist) = (stopped(ops), stopped(hist));
    let (_dir, bundle, err) = live.finish();

    // m0d and the session are gone: show reads the bundle alone.
    let out = ri(&["session", "show", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let shown = section(&text, "ops (last print):");
    let live_ops: Vec<&str> = ops.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        live_ops.len() >= 2
            && live_ops
                .iter()
                .all(|l| l.starts_with("u:m0_fom_fini[opcode=")),
        "live ri run motr.ops:\n{ops}"
    );
    assert_eq!(shown, live_ops, "show:\n{text}\nlive:\n{ops}\n{err}");
    let shown = section(&text, "opcodes (last print):");
    let live_hist: Vec<&str> = hist.trim_end().lines().collect();
    assert!(
        live_hist.iter().any(|l| l.starts_with("count "))
            && live_hist.iter().any(|l| l.contains("|@")),
        "live ri hist:\n{hist}"
    );
    assert_eq!(shown, live_hist, "show:\n{text}\nlive:\n{hist}");
}

/// The export read with Perfetto's own definitions (`perfetto-trace-proto`
/// generates them from Perfetto's `.proto` files).
mod perfetto {
    pub use perfetto_trace_proto::{
        DebugAnnotation, Trace, TrackDescriptor, TrackEvent, debug_annotation, trace_packet::Data,
        track_descriptor::StaticOrDynamicName, track_event::NameField, track_event::Type,
    };

    /// A track's name.
    pub fn track_name(t: &TrackDescriptor) -> Option<&str> {
        match &t.static_or_dynamic_name {
            Some(StaticOrDynamicName::Name(n)) => Some(n),
            _ => None,
        }
    }

    /// An event's name.
    pub fn event_name(e: &TrackEvent) -> Option<&str> {
        match &e.name_field {
            Some(NameField::Name(n)) => Some(n),
            _ => None,
        }
    }

    /// An argument's name.
    pub fn arg_name(a: &DebugAnnotation) -> Option<&str> {
        match &a.name_field {
            Some(debug_annotation::NameField::Name(n)) => Some(n),
            _ => None,
        }
    }
}

#[test]
fn the_perfetto_export_has_host_process_and_thread_tracks_nested_slices_and_counters() {
    use prost::Message as _;
    require_bpf();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let live = start(
        r#"
interval = "1s"
[instruments.fops]
run = "motr.fops"
[instruments.foms]
cmd = "trace 'u:m0d:m0_fom_queue(key=fom, opcode=fom->fo_fop->f_type->ft_rpc_item_type.rit_opcode, xid=fom->fo_fop->f_item.ri_header.osr_xid)' 'u:m0d:m0_fom_fini(key=fom)' u:m0d:fom_exec ur:m0d:fom_exec u:m0d:fom_tick ur:m0d:fom_tick 'u:m0d:m0_fom_phase_set(phase=phase)'"
[instruments.allocs]
cmd = "count u:m0d:m0_alloc --by comm"
start = false
[[triggers]]
name = "first-foms"
when = "fired foms"
actions = ["start allocs for 2s"]
[[triggers]]
name = "usr1"
when = "signal USR1"
actions = ["snapshot"]
"#,
        &[],
    );
    let pid = live.m0d.pid.to_string();
    let load = live.m0d.load(15, 4.0, "pf").finish(Duration::from_secs(60));
    assert_eq!(load["total_errors"], 0, "{load}");
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(live.session.id() as i32, libc::SIGUSR1) };
    std::thread::sleep(Duration::from_millis(1500));
    let (dir, bundle, err) = live.finish();

    // The other kinds of trigger: a trace instrument firing (sustained:
    // once) started an instrument for 2 s; a signal took a snapshot.
    let m = manifest(&bundle);
    let fired: Vec<&str> = m["fired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(fired, ["first-foms", "usr1"], "{}\n{err}", m["fired"]);
    let snap = m["fired"][1]["actions"][0]["files"][0].as_str().unwrap();
    let snap: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join(snap)).unwrap()).unwrap();
    assert!(snap["allocs"]["entries"].is_array(), "{snap}");
    let allocs = m["instruments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "allocs")
        .unwrap();
    let runs = allocs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{allocs}");
    let ran = runs[0][1].as_f64().unwrap() - runs[0][0].as_f64().unwrap();
    assert!((1.9..3.5).contains(&ran), "allocs ran {ran:.2}s: {allocs}");
    assert_eq!(allocs["exits"][0], 0, "{allocs}");

    let trace_file = dir.path().join("t.pftrace");
    let out = ri(&[
        "session",
        "export",
        bundle.to_str().unwrap(),
        "--perfetto",
        trace_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace = perfetto::Trace::decode(std::fs::read(&trace_file).unwrap().as_slice())
        .expect("the export decodes as a Perfetto Trace");
    let tracks: Vec<&perfetto::TrackDescriptor> = trace
        .packet
        .iter()
        .filter_map(|p| match &p.data {
            Some(perfetto::Data::TrackDescriptor(t)) => Some(t),
            _ => None,
        })
        .collect();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        tracks
            .iter()
            .any(|t| perfetto::track_name(t) == Some(&format!("host {}", host.trim()))),
        "no host track"
    );
    let pid_n: i32 = pid.parse().unwrap();
    let process = tracks
        .iter()
        .find(|t| t.process.as_ref().and_then(|p| p.pid) == Some(pid_n))
        .expect("a process track");
    assert_eq!(
        process.process.as_ref().unwrap().process_name.as_deref(),
        Some("m0d")
    );
    assert_eq!(perfetto::track_name(process), Some(&*format!("m0d {pid}")));
    let threads: Vec<_> = tracks.iter().filter(|t| t.thread.is_some()).collect();
    assert!(!threads.is_empty());
    for t in &threads {
        let d = t.thread.as_ref().unwrap();
        assert_eq!(d.pid, Some(pid_n));
        let name = format!("{} {}", d.thread_name.as_deref().unwrap(), d.tid.unwrap());
        assert_eq!(perfetto::track_name(t), Some(name.as_str()));
    }
    let thread_uuids: Vec<u64> = threads.iter().filter_map(|t| t.uuid).collect();

    // Slices nest on every track: in time order, each end closes the
    // innermost open slice (which began no later), and none is left open.
    let mut open: BTreeMap<u64, Vec<(String, u64)>> = BTreeMap::new();
    let mut slices: BTreeMap<String, usize> = BTreeMap::new();
    let mut deepest = 0;
    let mut fom_args = 0;
    let mut counters = 0;
    let mut instants = 0;
    let mut last_ts = 0;
    for p in &trace.packet {
        let Some(perfetto::Data::TrackEvent(e)) = &p.data else {
            continue;
        };
        let ts = p.timestamp.expect("events have timestamps");
        assert!(ts >= last_ts, "packets in time order");
        last_ts = ts;
        let track = e.track_uuid.unwrap();
        let stack = open.entry(track).or_default();
        match e.r#type.and_then(|t| perfetto::Type::try_from(t).ok()) {
            Some(perfetto::Type::SliceBegin) => {
                let name = perfetto::event_name(e).unwrap().to_string();
                if name == "fom_tick" || name == "fom_exec" {
                    assert!(thread_uuids.contains(&track), "{name} not on a thread");
                }
                stack.push((name.clone(), ts));
                deepest = deepest.max(stack.len());
                *slices.entry(name).or_default() += 1;
                let names: Vec<_> = e
                    .debug_annotations
                    .iter()
                    .filter_map(perfetto::arg_name)
                    .collect();
                if names.contains(&"opcode") && names.contains(&"xid") {
                    fom_args += 1;
                }
            }
            Some(perfetto::Type::SliceEnd) => {
                let (name, begin) = stack
                    .pop()
                    .unwrap_or_else(|| panic!("an end without a begin on track {track}"));
                assert!(begin <= ts, "{name} ends before it begins");
            }
            Some(perfetto::Type::Counter) => counters += 1,
            Some(perfetto::Type::Instant) => {
                assert_eq!(perfetto::event_name(e), Some("m0_fom_phase_set"), "{e:?}");
                instants += 1;
            }
            _ => {}
        }
    }
    assert!(
        open.values().all(Vec::is_empty),
        "slices left open: {open:?}"
    );
    // fom_exec calls fom_tick: slices inside slices on a thread.
    assert!(deepest >= 2, "no nested slice");

    // One slice per begin/end pair in the bundle's events.
    let lines = ri_tests::session_export(&bundle);
    let count = |suffix: &str| {
        lines
            .iter()
            .filter(|l| {
                l["line"]["probe"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(suffix))
            })
            .count()
    };
    // An instant for every event that is neither a call nor keyed.
    assert_eq!(instants, count(":m0_fom_phase_set"));
    assert!(instants > 0);
    let finis = count(":m0_fom_fini");
    assert!(finis > 30, "{finis} requests finished");
    assert_eq!(
        slices.get("m0_fom_queue → m0_fom_fini"),
        Some(&finis),
        "{slices:?}"
    );
    assert_eq!(fom_args, finis, "each FOM slice has opcode and xid");
    let tick_returns = lines
        .iter()
        .filter(|l| {
            l["line"]["probe"]
                .as_str()
                .is_some_and(|p| p.starts_with("uretprobe:") && p.ends_with(":fom_tick"))
        })
        .count();
    assert_eq!(slices.get("fom_tick"), Some(&tick_returns), "{slices:?}");
    assert!(slices.get("fom_exec").is_some_and(|n| *n > 0), "{slices:?}");
    assert!(counters > 0, "no counter values");
    assert!(
        tracks.iter().any(|t| t.counter.is_some()
            && perfetto::track_name(t).is_some_and(|n| n.starts_with("fops p99 [opcode="))),
        "no p99 counter track"
    );
}
