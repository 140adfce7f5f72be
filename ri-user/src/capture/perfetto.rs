//! `ri session export --perfetto`: a bundle as a Perfetto trace. One track
//! per host, process and thread; a function's entry and return on a thread
//! become a slice on that thread's track (nested as the calls were); a
//! begin and end sharing a `key` (a FOM from queue to fini) become a slice
//! on a lane of its process, with both events' fields as arguments; other
//! events are instants; aggregation prints become counters over time.
//! The messages are `perfetto-trace-proto`'s, generated from Perfetto's own
//! `.proto` files.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use perfetto_trace_proto::{
    CounterDescriptor, DebugAnnotation, ProcessDescriptor, ThreadDescriptor, Trace, TracePacket,
    TrackDescriptor, TrackEvent, debug_annotation,
    trace_packet::{Data, OptionalTrustedPacketSequenceId, SequenceFlags},
    track_descriptor::StaticOrDynamicName,
    track_event::{CounterValueField, NameField, Type},
};
use prost::Message as _;
use serde_json::Value;

use super::{Bundle, CaptureError, instrument::Kind};

/// Event fields that are not arguments.
const HEADER: &[&str] = &["probe", "pid", "tid", "cpu", "ts_ns", "host"];

/// The packets being built, with their tracks.
#[derive(Default)]
struct Builder {
    /// Descriptors, first in the file.
    tracks: Vec<TracePacket>,
    /// Events: (timestamp, order written, packet).
    events: Vec<(u64, usize, TracePacket)>,
    next_uuid: u64,
    /// The bundle's first host: lines that name none are its.
    first_host: String,
    /// More than one host: track names say which.
    fleet: bool,
    hosts: HashMap<String, u64>,
    procs: HashMap<(String, u32), u64>,
    threads: HashMap<(String, u32, u32), u64>,
    counters: HashMap<String, u64>,
    /// Per process and lane name: each lane's uuid and when it is free.
    lanes: HashMap<(String, u32, String), Vec<(u64, u64)>>,
    names: BTreeMap<(String, u32), (String, BTreeMap<u32, String>)>,
}

/// A keyed begin waiting for its end: its function, time, thread and
/// arguments.
type Begun = (String, u64, u32, Vec<DebugAnnotation>);

/// The host of a line (an event's or a print's `host`), else the first.
fn host_of<'a>(bld: &'a Builder, v: &'a Value) -> String {
    v["host"].as_str().unwrap_or(&bld.first_host).to_string()
}

/// A slice waiting for its end.
struct Open {
    name: String,
    ts: u64,
    args: Vec<DebugAnnotation>,
}

impl Builder {
    fn uuid(&mut self) -> u64 {
        self.next_uuid += 1;
        self.next_uuid
    }

    fn track(&mut self, d: TrackDescriptor) {
        self.tracks.push(packet(Data::TrackDescriptor(d)));
    }

    /// The host's track.
    fn host(&mut self, host: &str) -> u64 {
        if let Some(&u) = self.hosts.get(host) {
            return u;
        }
        let u = self.uuid();
        self.track(TrackDescriptor {
            uuid: Some(u),
            static_or_dynamic_name: named(format!("host {host}")),
            ..Default::default()
        });
        self.hosts.insert(host.to_string(), u);
        u
    }

    /// ` (HOST)` after a track's name in a bundle of several hosts.
    fn on(&self, host: &str) -> String {
        match self.fleet {
            true => format!(" ({host})"),
            false => String::new(),
        }
    }

    fn process(&mut self, host: &str, pid: u32) -> u64 {
        let key = (host.to_string(), pid);
        if let Some(&u) = self.procs.get(&key) {
            return u;
        }
        self.host(host);
        let u = self.uuid();
        let comm = self.names.get(&key).map_or(String::new(), |n| n.0.clone());
        self.track(TrackDescriptor {
            uuid: Some(u),
            static_or_dynamic_name: named(format!("{comm} {pid}{}", self.on(host))),
            process: Some(ProcessDescriptor {
                pid: Some(pid as i32),
                process_name: Some(comm),
                ..Default::default()
            }),
            ..Default::default()
        });
        self.procs.insert(key, u);
        u
    }

    fn thread(&mut self, host: &str, pid: u32, tid: u32) -> u64 {
        let key = (host.to_string(), pid, tid);
        if let Some(&u) = self.threads.get(&key) {
            return u;
        }
        self.process(host, pid);
        let u = self.uuid();
        let name = self
            .names
            .get(&(host.to_string(), pid))
            .and_then(|n| n.1.get(&tid).cloned())
            .unwrap_or_else(|| format!("thread {tid}"));
        self.track(TrackDescriptor {
            uuid: Some(u),
            static_or_dynamic_name: named(format!("{name} {tid}{}", self.on(host))),
            thread: Some(ThreadDescriptor {
                pid: Some(pid as i32),
                tid: Some(tid as i32),
                thread_name: Some(name),
                ..Default::default()
            }),
            ..Default::default()
        });
        self.threads.insert(key, u);
        u
    }

    fn event(&mut self, ts: u64, e: TrackEvent) {
        let n = self.events.len();
        let mut p = packet(Data::TrackEvent(e));
        p.timestamp = Some(ts);
        self.events.push((ts, n, p));
    }

    fn slice(&mut self, track: u64, name: &str, (b, e): (u64, u64), args: Vec<DebugAnnotation>) {
        self.event(
            b,
            TrackEvent {
                r#type: Some(Type::SliceBegin.into()),
                track_uuid: Some(track),
                name_field: Some(NameField::Name(name.to_string())),
                debug_annotations: args,
                ..Default::default()
            },
        );
        self.event(
            e,
            TrackEvent {
                r#type: Some(Type::SliceEnd.into()),
                track_uuid: Some(track),
                ..Default::default()
            },
        );
    }

    /// A lane of process `pid` named `name` free at `from`, taken until `to`.
    fn lane(&mut self, host: &str, pid: u32, name: &str, (from, to): (u64, u64)) -> u64 {
        let parent = self.process(host, pid);
        let key = (host.to_string(), pid, name.to_string());
        if let Some(l) = self
            .lanes
            .get_mut(&key)
            .and_then(|ls| ls.iter_mut().find(|l| l.1 <= from))
        {
            l.1 = to;
            return l.0;
        }
        let u = self.uuid();
        self.track(TrackDescriptor {
            uuid: Some(u),
            static_or_dynamic_name: named(name.to_string()),
            parent_uuid: Some(parent),
            ..Default::default()
        });
        self.lanes.entry(key).or_default().push((u, to));
        u
    }

    fn counter(&mut self, host: &str, name: &str, unit: &str) -> u64 {
        let name = format!("{name}{}", self.on(host));
        if let Some(&u) = self.counters.get(&name) {
            return u;
        }
        let parent = self.host(host);
        let u = self.uuid();
        self.track(TrackDescriptor {
            uuid: Some(u),
            static_or_dynamic_name: named(name.clone()),
            parent_uuid: Some(parent),
            counter: Some(CounterDescriptor {
                unit_name: Some(unit.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        });
        self.counters.insert(name, u);
        u
    }
}

/// A debug annotation's value.
type Arg = debug_annotation::Value;

/// A packet of the one sequence ri writes.
fn packet(data: Data) -> TracePacket {
    TracePacket {
        data: Some(data),
        optional_trusted_packet_sequence_id: Some(
            OptionalTrustedPacketSequenceId::TrustedPacketSequenceId(1),
        ),
        ..Default::default()
    }
}

/// A track's name.
fn named(name: String) -> Option<StaticOrDynamicName> {
    Some(StaticOrDynamicName::Name(name))
}

/// An argument `name = v`.
fn annotation(name: &str, v: Arg) -> DebugAnnotation {
    DebugAnnotation {
        name_field: Some(debug_annotation::NameField::Name(name.to_string())),
        value: Some(v),
        ..Default::default()
    }
}

/// An event's fields as arguments.
fn args(ev: &Value) -> Vec<DebugAnnotation> {
    let Some(m) = ev.as_object() else {
        return Vec::new();
    };
    m.iter()
        .filter(|(k, _)| !HEADER.contains(&k.as_str()))
        .map(|(k, v)| {
            let v = match v {
                Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => Arg::IntValue(i),
                    (None, Some(u)) => Arg::UintValue(u),
                    _ => Arg::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
                },
                Value::String(s) => Arg::StringValue(s.clone()),
                v => Arg::StringValue(v.to_string()),
            };
            annotation(k, v)
        })
        .collect()
}

/// `uretprobe:PATH:FUNC` → (true, FUNC); other probes (false, FUNC).
fn probe_func(probe: &str) -> (bool, &str) {
    let ret = probe.starts_with("uretprobe:") || probe.starts_with("ur:");
    let func = probe.rsplit(':').next().unwrap_or(probe);
    (ret, func)
}

/// Every line of instrument `name`'s files of one kind (its own file and
/// its flight-recorder dumps), each once.
fn lines_of(b: &Bundle, name: &str) -> Result<Vec<Value>, CaptureError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let inst = b.manifest.instruments.iter().find(|i| i.name == name);
    for f in inst.map(|i| i.files.as_slice()).unwrap_or_default() {
        if !f.ends_with(".jsonl.zst") {
            continue;
        }
        for v in b.lines(f)? {
            if seen.insert(v.to_string()) {
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// A trace instrument's events: thread slices, keyed slices, instants.
fn trace_events(bld: &mut Builder, mut evs: Vec<Value>) {
    evs.sort_by_key(|e| e["ts_ns"].as_u64().unwrap_or(0));
    let returns: BTreeSet<String> = evs
        .iter()
        .filter_map(|e| e["probe"].as_str())
        .filter(|p| probe_func(p).0)
        .map(|p| probe_func(p).1.to_string())
        .collect();
    let mut stacks: HashMap<(String, u32, u32), Vec<Open>> = HashMap::new();
    let mut keyed: HashMap<(String, u32, String), Begun> = HashMap::new();
    let mut last_ts = 0;
    for e in &evs {
        let (Some(probe), Some(ts)) = (e["probe"].as_str(), e["ts_ns"].as_u64()) else {
            continue;
        };
        last_ts = ts;
        let pid = e["pid"].as_u64().unwrap_or(0) as u32;
        let tid = e["tid"].as_u64().unwrap_or(0) as u32;
        let host = host_of(bld, e);
        let (ret, func) = probe_func(probe);
        if returns.contains(func) {
            let stack = stacks.entry((host.clone(), pid, tid)).or_default();
            if !ret {
                stack.push(Open {
                    name: func.to_string(),
                    ts,
                    args: args(e),
                });
                continue;
            }
            // A return closes its call and any call inside it whose return
            // was not seen.
            let Some(at) = stack.iter().rposition(|o| o.name == func) else {
                continue;
            };
            let track = bld.thread(&host, pid, tid);
            for o in stack.drain(at..).rev() {
                bld.slice(track, &o.name, (o.ts, ts), o.args);
            }
            continue;
        }
        if let Some(k) = e.get("key").map(Value::to_string) {
            match keyed.remove(&(host.clone(), pid, k.clone())) {
                Some((begin, bts, btid, mut a)) if begin != func => {
                    a.extend(args(e).into_iter().filter(|x| {
                        x.name_field != Some(debug_annotation::NameField::Name("key".into()))
                    }));
                    a.push(annotation("begin_tid", Arg::IntValue(i64::from(btid))));
                    let name = format!("{begin} → {func}");
                    let lane = bld.lane(&host, pid, &name, (bts, ts));
                    bld.slice(lane, &name, (bts, ts), a);
                }
                _ => {
                    keyed.insert((host, pid, k), (func.to_string(), ts, tid, args(e)));
                }
            }
            continue;
        }
        let track = bld.thread(&host, pid, tid);
        bld.event(
            ts,
            TrackEvent {
                r#type: Some(Type::Instant.into()),
                track_uuid: Some(track),
                name_field: Some(NameField::Name(func.to_string())),
                debug_annotations: args(e),
                ..Default::default()
            },
        );
    }
    // Calls still open at the end of the capture end with it.
    for ((host, pid, tid), stack) in stacks {
        if stack.is_empty() {
            continue;
        }
        let track = bld.thread(&host, pid, tid);
        for mut o in stack.into_iter().rev() {
            o.args.push(annotation("unfinished", Arg::IntValue(1)));
            bld.slice(track, &o.name, (o.ts, last_ts.max(o.ts)), o.args);
        }
    }
}

/// An aggregation's prints: a counter per key and value over time.
fn counters(bld: &mut Builder, inst: &str, prints: &[Value]) {
    for p in prints {
        let (Some(ts), print) = (p["mono_ns"].as_u64(), &p["print"]) else {
            continue;
        };
        if print["type"] == "final" {
            continue;
        }
        let host = host_of(bld, print);
        let entries = print["entries"].as_array().cloned().unwrap_or_default();
        if print["kind"] == "inflight" {
            let u = bld.counter(&host, &format!("{inst} in flight"), "count");
            bld.event(ts, counter_event(u, entries.len() as f64));
            continue;
        }
        for e in &entries {
            let key = super::show::key_text(e);
            for (field, unit) in [("count", "count"), ("p99", "ns"), ("bytes", "bytes")] {
                if let Some(v) = e.get(field).and_then(Value::as_f64) {
                    let u = bld.counter(&host, &format!("{inst} {field} {key}"), unit);
                    bld.event(ts, counter_event(u, v));
                }
            }
        }
    }
}

fn counter_event(track: u64, v: f64) -> TrackEvent {
    TrackEvent {
        r#type: Some(Type::Counter.into()),
        track_uuid: Some(track),
        counter_value_field: Some(CounterValueField::DoubleCounterValue(v)),
        ..Default::default()
    }
}

/// The Perfetto trace of a bundle, encoded.
pub fn trace(b: &Bundle) -> Result<Vec<u8>, CaptureError> {
    let mut bld = Builder {
        first_host: b.manifest.hosts.first().cloned().unwrap_or_default(),
        fleet: b.manifest.hosts.len() > 1,
        ..Default::default()
    };
    for t in &b.manifest.targets {
        let host = match t.host.is_empty() {
            true => bld.first_host.clone(),
            false => t.host.clone(),
        };
        bld.names.insert(
            (host, t.pid),
            (t.comm.clone(), t.threads.clone().into_iter().collect()),
        );
    }
    for h in &b.manifest.hosts {
        bld.host(h);
    }
    for i in &b.manifest.instruments {
        let lines = lines_of(b, &i.name)?;
        match i.kind {
            Kind::Trace => trace_events(&mut bld, lines),
            Kind::Aggregation => counters(&mut bld, &i.name, &lines),
        }
    }
    bld.events.sort_by_key(|(ts, n, _)| (*ts, *n));
    let mut packet = bld.tracks;
    packet.extend(bld.events.into_iter().map(|(_, _, p)| p));
    if let Some(first) = packet.first_mut() {
        first.sequence_flags = Some(SequenceFlags::SeqIncrementalStateCleared as u32);
    }
    Ok(Trace { packet }.encode_to_vec())
}
