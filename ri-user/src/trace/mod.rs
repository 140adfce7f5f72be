//! `ri trace`: attach probes, stream decoded events to a sink until the
//! duration ends, the `-c` command exits, or Ctrl-C; then print a summary of
//! events per probe and events lost.

use std::{io::Write, time::Duration};

use aya::maps::{MapData, RingBuf};

use crate::{
    Error,
    decode::{Value, decode, header},
    engine::Engine,
    launch::{self, Launched, Signals, Stop, Tick},
    probe::ProbeKind,
    session::ProbeSet,
    sink::{JsonSink, Sink, SiteInfo, TextSink},
    stack::{Stacks, late::SiteFile},
    target,
    text::counted,
};

mod printf;
pub(crate) use printf::read_str;
pub use printf::{PrintfSpec, format_c};

/// What to trace and how.
#[derive(Clone, Debug, Default)]
pub struct TraceOptions {
    /// Probe strings.
    pub probes: Vec<String>,
    /// Only these processes (empty: all, unless `command` or `select`).
    pub pids: Vec<u32>,
    /// Also every process chosen by name, now and later.
    pub select: crate::select::Selection,
    /// Run this command with the probes attached; stop when it exits.
    pub command: Option<String>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// JSON lines instead of text.
    pub json: bool,
    /// Ring buffer size in bytes.
    pub ring_bytes: u32,
    /// Stacks the kernel's stack map holds (`--stack-map`).
    pub stack_entries: u32,
    /// Attach the empty program instead of the interpreter (benchmarks).
    pub bare: bool,
    /// No attach message and no summary.
    pub quiet: bool,
    /// Which types print through which formatter (`--format`).
    pub formatters: crate::dwarf::value::Formatters,
    /// Fields formatted like printf from other captures.
    pub printf: Vec<PrintfSpec>,
    /// `--text`: text lines laid out from the fields.
    pub text: Option<crate::sink::Template>,
    /// Show only events during a call of this entry probe's function on
    /// the same thread, with its captures added (see [`Within`]).
    pub within: Option<String>,
    /// `--max-overhead`: the overhead budget.
    pub max_overhead: crate::budget::MaxOverhead,
}

/// `--within`: the calls of one function as a per-thread context. Its entry
/// probe (with the user's captures and filter) and a bare return probe are
/// attached after the user's probes, both also capturing the stack pointer
/// (hidden). Their events, in ring-buffer order (one ring, so in program
/// order per thread), push and pop each thread's calls by frame: a return
/// pops the call whose entry had its `rsp - 8`, so nesting, recursion and
/// calls the filter left out stay apart, and a lost return is cleared by
/// the next entry at the same depth. Every other event is shown with the
/// innermost open call's fields first, or not at all.
struct Within {
    /// Plan id of the entry probe (the return probe's is the next).
    entry: usize,
    /// Fields of each user probe, the context's first.
    fields: Vec<Vec<crate::plan::Field>>,
    /// Each thread's open calls, outermost first: the stack pointer at the
    /// entry and the entry's record.
    calls: std::collections::HashMap<u32, Vec<(u64, Vec<u8>)>>,
    /// Events outside every call, not shown.
    outside: u64,
}

/// The hidden capture of the `--within` probes: the stack pointer.
const WITHIN_SP: &str = "ri_within_sp";

impl Within {
    /// The entry probe and its return, checked: one function, entry only;
    /// each captures the stack pointer last.
    fn probes(text: &str) -> Result<[String; 2], Error> {
        let spec = crate::probe::parse_probe(text)?;
        if spec.kind != crate::probe::ProbeKind::Uprobe || spec.offset != 0 {
            return Err(Error::Usage(format!(
                "--within needs a function entry probe (u:TARGET:FUNC(...)), not '{text}'"
            )));
        }
        if spec.func.contains(['*', '?']) {
            return Err(Error::Usage(format!(
                "--within needs one function, not the pattern '{}'",
                spec.func
            )));
        }
        let sp = format!("{WITHIN_SP}=sp");
        Ok([
            crate::probe::add_capture(text, &sp),
            format!("ur:{}:{}({sp})", spec.target, spec.func),
        ])
    }

    /// Checks the user's probes against the context (no shared capture
    /// names, none on the function itself: a wildcard's match of it is
    /// left out, with a note) and lays out their fields.
    fn new(set: &mut ProbeSet, entry: usize) -> Result<Self, Error> {
        let within_fns: Vec<(std::path::PathBuf, String)> = set
            .sites
            .iter()
            .filter(|s| s.probe == entry)
            .map(|s| (s.path.clone(), s.func.clone()))
            .collect();
        let is_within =
            |s: &crate::session::Site| within_fns.iter().any(|(p, f)| *p == s.path && *f == s.func);
        for site in set.sites.iter().filter(|s| s.probe < entry && is_within(s)) {
            let spec = &set.probes[site.probe].spec;
            if !spec.func.contains(['*', '?']) {
                return Err(Error::Usage(format!(
                    "{} probes the --within function itself; capture what it needs in --within's captures, or trace it without --within (return probes see the call's arguments)",
                    spec.text
                )));
            }
            eprintln!(
                "ri: --within: {} leaves out {}, the --within function itself",
                spec.text, site.short
            );
        }
        set.sites.retain(|s| s.probe >= entry || !is_within(s));
        let all = &set.probes[entry].plan.fields;
        let ctx = &all[..all.len() - 1];
        let mut fields = Vec::new();
        for p in &set.probes[..entry] {
            if let Some(f) = p
                .plan
                .fields
                .iter()
                .find(|f| ctx.iter().any(|c| c.name == f.name))
            {
                return Err(Error::Usage(format!(
                    "capture '{}' of {} is also a capture of --within; rename one",
                    f.name, p.spec.text
                )));
            }
            fields.push(ctx.iter().chain(&p.plan.fields).cloned().collect());
        }
        Ok(Within {
            entry,
            fields,
            calls: Default::default(),
            outside: 0,
        })
    }

    /// Takes one event in ring order: the `--within` probes' own open or
    /// close a call; any other is shown (true) when its thread is inside
    /// one, else counted as outside. Undecodable records are `Err`.
    fn admit(&mut self, h: &ri_common::EventHeader, item: &[u8]) -> Result<bool, ()> {
        let plan = h.plan as usize;
        if plan != self.entry && plan != self.entry + 1 {
            let inside = self.calls.contains_key(&h.tid);
            self.outside += u64::from(!inside);
            return Ok(inside);
        }
        let sp = last_word(item, h).ok_or(())?;
        let calls = self.calls.entry(h.tid).or_default();
        if plan == self.entry {
            // Calls at this depth or shallower have returned (their return
            // was lost if they are still here).
            calls.retain(|(at, _)| *at > sp);
            calls.push((sp, item.to_vec()));
        } else {
            // The stack grows down: this call and deeper ones end.
            let entry_sp = sp.wrapping_sub(8);
            calls.retain(|(at, _)| *at > entry_sp);
            if calls.is_empty() {
                self.calls.remove(&h.tid);
            }
        }
        Ok(false)
    }

    /// The entry record of the thread's innermost open call.
    fn innermost(&self, tid: u32) -> Option<&[u8]> {
        self.calls.get(&tid)?.last().map(|(_, rec)| rec.as_slice())
    }
}

/// The last payload word of a record (the `--within` probes' stack pointer).
fn last_word(item: &[u8], h: &ri_common::EventHeader) -> Option<u64> {
    let end = ri_common::HEADER_LEN + h.payload_len as usize;
    let w = item.get(end.checked_sub(8)?..end)?;
    Some(u64::from_le_bytes(w.try_into().ok()?))
}

impl TraceOptions {
    /// The flags the launch core takes.
    pub(crate) fn launching(&self) -> launch::Options<'_> {
        launch::Options {
            pids: &self.pids,
            select: &self.select,
            command: self.command.as_deref(),
            duration: self.duration,
            ring_bytes: self.ring_bytes,
            stack_entries: self.stack_entries,
            bare: self.bare,
            quiet: self.quiet,
            max_overhead: self.max_overhead,
        }
    }
}

/// What a trace saw.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// (site name, events) per site.
    pub per_site: Vec<(String, u64)>,
    /// Events lost to a full ring buffer.
    pub lost: u64,
    /// Records that could not be decoded.
    pub undecodable: u64,
    /// Returns skipped because nothing was saved at their call's entry.
    pub no_entry: u64,
    /// Events outside a `--within` call, not shown.
    pub outside: u64,
    /// Exit status of the `-c` command.
    pub child_status: Option<i32>,
    /// Sites the overhead budget detached (their events stop there).
    pub dropped: Vec<String>,
}

impl Summary {
    /// Writes the summary, as printed on stderr at exit.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let total: u64 = self.per_site.iter().map(|s| s.1).sum();
        writeln!(w, "ri: {total} events, {} lost", self.lost)?;
        for (name, n) in &self.per_site {
            let partial = if self.dropped.contains(name) {
                "  (partial: detached by the overhead budget)"
            } else {
                ""
            };
            writeln!(w, "  {n:>10}  {name}{partial}")?;
        }
        if self.lost > 0 {
            writeln!(
                w,
                "ri: {} events were lost because the ring buffer was full (try a larger --buffer-size)",
                self.lost
            )?;
        }
        if self.undecodable > 0 {
            writeln!(w, "ri: {} events could not be decoded", self.undecodable)?;
        }
        skipped_returns(w, self.no_entry)?;
        if self.outside > 0 {
            writeln!(
                w,
                "ri: {} outside a --within call, not shown",
                counted(self.outside, "event")
            )?;
        }
        Ok(())
    }
}

/// The line about returns skipped because their call's entry could not
/// save what the return needs (the per-call map was full), if any.
pub fn skipped_returns(w: &mut impl Write, n: u64) -> std::io::Result<()> {
    if n > 0 {
        writeln!(
            w,
            "ri: {} skipped: their call's entry found the per-call map full ({} calls in flight at once)",
            counted(n, "return"),
            ri_common::FRAME_ENTRIES
        )?;
    }
    Ok(())
}

/// Runs a trace to completion. Must be called before any other thread exists
/// (the `-c` child is forked first).
pub fn run(opts: &TraceOptions) -> Result<Summary, Error> {
    launch::check(&opts.launching())?;
    let mut texts = opts.probes.clone();
    if let Some(w) = &opts.within {
        texts.extend(Within::probes(w)?);
    }
    let scope = target::Scope::new(&opts.launching().resolving_pids(), opts.command.as_deref());
    let mut set = ProbeSet::build(&texts, &scope)?;
    set.mark_regs_only();
    let within = match opts.within {
        Some(_) => Some(Within::new(&mut set, opts.probes.len())?),
        None => None,
    };
    let fields: Vec<&[crate::plan::Field]> = set
        .probes
        .iter()
        .map(|p| p.plan.fields.as_slice())
        .collect();
    for spec in &opts.printf {
        spec.check(&fields).map_err(Error::Usage)?;
    }
    if let Some(t) = &opts.text {
        let added: Vec<&str> = opts.printf.iter().map(|p| p.name.as_str()).collect();
        t.check(&fields, &added).map_err(Error::Usage)?;
    }
    // Ctrl-C is ours from the attach line on: the signal streams exist
    // before anything is attached.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signals = Signals::new(&rt)?;
    let Launched {
        mut engine,
        child_pid,
        watcher,
    } = launch::start(
        Some(&rt),
        &opts.launching(),
        &set,
        ri_common::AGG_ENTRIES,
        launch::Delivery {
            batch_events: batch_events(opts),
            // Only JSON prints an event's time.
            timestamps: opts.json,
        },
    )?;
    let ring = engine.take_ring()?;
    let stop = {
        let _in = rt.enter();
        Stop::new(signals, &opts.launching(), child_pid)?
    };
    let (watcher, selected) = watcher.unzip();
    let mut d = Drain::new(&set, &engine, ring, opts, within);
    for &pid in opts
        .pids
        .iter()
        .chain(&child_pid)
        .chain(selected.iter().flatten())
    {
        d.watch(pid);
    }
    let child_status = launch::run(&rt, stop, watcher, &mut [&mut d])?;
    let mut summary = d.summary(opts.probes.len(), child_status);
    summary.lost = engine.lost()?;
    summary.no_entry = engine.no_entry()?;
    summary.dropped = (engine.dropped().iter())
        .filter_map(|d| set.sites.get(d.site as usize))
        .map(|s| s.name.clone())
        .collect();
    if opts.json && !summary.dropped.is_empty() {
        // The stream's last line names them, for readers of the JSON.
        let line = serde_json::json!({ "dropped": summary.dropped });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    if !opts.quiet {
        summary.write_to(&mut std::io::stderr())?;
        if opts.within.is_some() && summary.lost > 0 {
            eprintln!(
                "ri: with events lost, some events may show the wrong --within call (its entry or return was lost)"
            );
        }
        if set.has_stacks() {
            crate::stack::write_errors(
                &mut std::io::stderr(),
                crate::stack::errors(&engine)?,
                opts.stack_entries,
            )?;
        }
    }
    Ok(summary)
}

/// Set in the environment: events per ring record (1: each alone), to
/// compare batching with none.
pub const BATCH_ENV: &str = "RI_BATCH_EVENTS";

/// Events per ring record: batches spread the ring's cost over several
/// events. `--within` follows each thread's calls in the order its events
/// happened, across CPUs, so it sends each event alone; so does `--bare`,
/// which sends none.
fn batch_events(opts: &TraceOptions) -> u32 {
    if opts.within.is_some() || opts.bare {
        return 1;
    }
    std::env::var(BATCH_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ri_common::BATCH_EVENTS)
        .clamp(1, 1024)
}

/// The trace instrument: a sink over the ring buffer.
struct Drain<'a> {
    set: &'a ProbeSet,
    engine: &'a Engine,
    /// The ring, until the loop takes it.
    ring: Option<RingBuf<MapData>>,
    stacks: Stacks,
    sink: Box<dyn Sink>,
    printf: &'a [PrintfSpec],
    counts: Vec<u64>,
    undecodable: u64,
    closed: bool,
    within: Option<Within>,
    /// The probes read strings or bytes: failed reads are retried from files.
    late_reads: bool,
    /// Stacks or late reads: the processes' maps are kept, even after they
    /// exit.
    with_maps: bool,
}

impl<'a> Drain<'a> {
    /// The sink `opts` ask for, writing events of `set` read from `ring`.
    fn new(
        set: &'a ProbeSet,
        engine: &'a Engine,
        ring: RingBuf<MapData>,
        opts: &'a TraceOptions,
        within: Option<Within>,
    ) -> Self {
        let out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
        let sink: Box<dyn Sink> = if opts.json {
            Box::new(JsonSink::new(out, opts.formatters.clone()))
        } else {
            Box::new(TextSink::new(
                out,
                opts.formatters.clone(),
                opts.text.clone(),
            ))
        };
        let late_reads = set.has_reads();
        Drain {
            set,
            engine,
            ring: Some(ring),
            stacks: Stacks::new(),
            sink,
            printf: &opts.printf,
            counts: vec![0; set.sites.len()],
            undecodable: 0,
            closed: false,
            within,
            late_reads,
            with_maps: set.has_stacks() || late_reads,
        }
    }

    /// Keeps `pid`'s maps when stacks or late reads need them.
    fn watch(&mut self, pid: u32) {
        if self.with_maps {
            self.stacks.watch(pid);
        }
    }

    /// What it saw (the user's `probes` first: the `--within` probes are
    /// not the user's); the engine's counters are added after.
    fn summary(&self, probes: usize, child_status: Option<i32>) -> Summary {
        Summary {
            per_site: (self.set.sites.iter())
                .zip(&self.counts)
                .filter(|(s, _)| s.probe < probes)
                .map(|(s, n)| (s.name.clone(), *n))
                .collect(),
            outside: self.within.as_ref().map_or(0, |w| w.outside),
            undecodable: self.undecodable,
            child_status,
            ..Summary::default()
        }
    }

    /// Decodes and writes every record waiting in the ring buffer (a
    /// record is one event or a batch of them, back to back).
    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            let mut rest: &[u8] = &item;
            while !rest.is_empty() {
                let Some((h, end)) = header(rest)
                    .ok()
                    .map(|h| (h, ri_common::HEADER_LEN + h.payload_len as usize))
                    .filter(|(_, end)| *end <= rest.len())
                else {
                    self.undecodable += 1;
                    break;
                };
                self.event(&rest[..end], h);
                rest = &rest[end..];
            }
        }
        if !self.closed && self.sink.flush().is_err() {
            self.closed = true;
        }
    }

    /// Decodes and writes one event.
    fn event(&mut self, item: &[u8], h: ri_common::EventHeader) {
        let (Some(site), Some(probe)) = (
            self.set.sites.get(h.site as usize),
            self.set.probes.get(h.plan as usize),
        ) else {
            self.undecodable += 1;
            return;
        };
        match self.within.as_mut().map(|w| w.admit(&h, item)) {
            Some(Err(())) => {
                self.undecodable += 1;
                return;
            }
            Some(Ok(false)) => return,
            _ => {}
        }
        let (fields, context) = match &self.within {
            Some(w) => (w.fields[h.plan as usize].as_slice(), w.innermost(h.tid)),
            None => (probe.plan.fields.as_slice(), None),
        };
        self.counts[h.site as usize] += 1;
        if self.closed {
            return;
        }
        let decoded = decode(item, &probe.plan.fields).and_then(|mut ev| {
            if self.late_reads {
                // A return probe's ip is its caller's, not its site.
                let at_site = probe.spec.kind != ProbeKind::Uretprobe;
                let file = at_site.then_some(SiteFile {
                    path: &site.path,
                    file_offset: site.file_offset,
                });
                let (pid, fields) = (ev.header.pid, &probe.plan.fields);
                self.stacks
                    .read_late_values(pid, file, fields, &mut ev.values);
            }
            for spec in self.printf {
                if let Some(text) = spec.render(&probe.plan.fields, &ev.values, ev.header.pid) {
                    ev.extra.push((spec.name.clone(), text));
                }
            }
            if let (Some(rec), Some(w)) = (context, &self.within) {
                // The context's fields go first.
                let mut c = decode(rec, &self.set.probes[w.entry].plan.fields)?;
                c.values.pop();
                c.values.append(&mut ev.values);
                ev.values = c.values;
            }
            Ok(ev)
        });
        match decoded {
            Ok(ev) => {
                let mut resolved = Vec::new();
                for v in &ev.values {
                    if let Value::Stack(s, c) = v {
                        match self.stacks.resolve(self.engine, *s, *c) {
                            Ok(r) => resolved.push(r),
                            Err(_) => self.undecodable += 1,
                        }
                    }
                }
                let info = SiteInfo {
                    probe: &site.name,
                    short: &site.short,
                    fields,
                    stacks: &resolved,
                };
                if self.sink.event(&info, &ev).is_err() {
                    self.closed = true;
                }
            }
            Err(_) => self.undecodable += 1,
        }
    }
}

impl launch::Instrument for Drain<'_> {
    fn ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    fn batched(&self) -> bool {
        self.engine.batched()
    }

    fn flush(&mut self, all: bool) -> Result<(), Error> {
        let waited = if all { 0 } else { ri_common::BATCH_AGE_NS };
        Ok(self.engine.flush_waiting(waited)?)
    }

    fn on_ring(&mut self, ring: &mut RingBuf<MapData>) {
        self.drain(ring);
    }

    fn ticks(&self) -> Vec<(Tick, Duration)> {
        match self.with_maps {
            true => vec![(Tick::Maps, crate::stack::MAPS_REFRESH)],
            false => Vec::new(),
        }
    }

    fn on_tick(&mut self, _tick: Tick) -> Result<(), Error> {
        self.stacks.refresh();
        Ok(())
    }

    fn on_new_process(&mut self, pid: u32) {
        self.watch(pid);
    }
}
