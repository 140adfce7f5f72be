//! A session: probe strings parsed, compiled to plans and resolved to
//! attachment sites, then loaded into the kernel for some processes.

pub mod child;
pub mod early;
mod usdt;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    Error,
    dwarf::DebugInfo,
    elf::ElfFile,
    engine::{Engine, MapSizes, Program},
    plan::{CompiledPlan, TypeContext, compile, needs_types, wants_types},
    probe::{ProbeKind, ProbeSpec, parse_probe},
    target,
};

/// Whether a `-c` command is worth starting to wait for a library it may
/// map later: its own libraries are all found (it will start).
fn waits(scope: &target::Scope) -> bool {
    scope.command.is_some() && scope.command_load().is_none_or(|l| l.missing.is_empty())
}

/// One attachment point: a function (or function + offset) in a file.
#[derive(Clone, Debug)]
pub struct Site {
    /// Index of the probe (plan id) it belongs to.
    pub probe: usize,
    /// Resolved file.
    pub path: PathBuf,
    /// Function name.
    pub func: String,
    /// Offset from the function start.
    pub offset: u64,
    /// File offset the uprobe attaches at.
    pub file_offset: u64,
    /// File offset of a USDT probe's semaphore.
    pub semaphore: Option<u64>,
    /// Full name: `uprobe:/path:func[+off]`.
    pub name: String,
    /// Short name for text output: `u:func` or `ur:func`.
    pub short: String,
}

/// A parsed and compiled probe with its sites.
#[derive(Debug)]
pub struct Probe {
    /// The parsed probe string.
    pub spec: ProbeSpec,
    /// Its plan and fields.
    pub plan: CompiledPlan,
}

/// All probes of a session and their sites.
#[derive(Debug)]
pub struct ProbeSet {
    /// Probes by plan id.
    pub probes: Vec<Probe>,
    /// Sites by site id.
    pub sites: Vec<Site>,
}

impl ProbeSet {
    /// True when a probe captures a user stack.
    pub fn has_stacks(&self) -> bool {
        self.probes
            .iter()
            .any(|p| p.plan.plan.flags & ri_common::plan_flags::STACK != 0)
    }

    /// Whether any probe captures a string or bytes (`str()`, `buf()`).
    pub fn has_reads(&self) -> bool {
        self.probes.iter().any(|p| {
            p.plan.fields.iter().any(|f| {
                matches!(
                    f.kind,
                    crate::plan::FieldKind::Str | crate::plan::FieldKind::Buf
                )
            })
        })
    }

    /// Parses, compiles and resolves probe strings; `scope` (the traced
    /// processes or the `-c` command) resolves library names.
    pub fn build(texts: &[String], scope: &target::Scope) -> Result<Self, Error> {
        let mut probes = Vec::new();
        let mut sites = Vec::new();
        let mut debug: HashMap<PathBuf, Arc<DebugInfo>> = HashMap::new();
        for text in texts {
            let spec = parse_probe(text)?;
            if spec.kind == ProbeKind::Usdt {
                usdt::build(spec, scope, &mut probes, &mut sites)?;
                continue;
            }
            if !needs_types(&spec) {
                // Syntax and semantic errors first, before touching any file.
                compile(&spec, None)?;
            }
            let path = match target::resolve_waiting(&spec.target, scope) {
                Err(target::TargetError::NotFound { .. })
                    if waits(scope) && target::waitable(&spec.target) =>
                {
                    early::wait_for(scope.command.as_deref().unwrap_or(""), &spec.target)?
                }
                r => r?,
            };
            let elf = ElfFile::open(&path)?;
            let matches = if spec.func.contains(['*', '?']) {
                let m = elf.matching(&spec.func);
                if m.is_empty() {
                    return Err(Error::NoMatch {
                        pattern: spec.func.clone(),
                        path: elf.path.display().to_string(),
                    });
                }
                m
            } else {
                vec![elf.function(&spec.func)?]
            };
            let dbg = if wants_types(&spec) {
                match debug.get(&elf.path) {
                    Some(d) => Some(d.clone()),
                    None => match DebugInfo::load(&elf.path) {
                        Ok(d) => {
                            let d = Arc::new(d);
                            debug.insert(elf.path.clone(), d.clone());
                            Some(d)
                        }
                        Err(e) if needs_types(&spec) => return Err(e.into()),
                        Err(_) => None,
                    },
                }
            } else {
                None
            };
            // Parameter names are per function: a wildcard must match one.
            let ctx = dbg.map(|dbg| TypeContext {
                dbg,
                func: (matches.len() == 1).then(|| matches[0].name.clone()),
            });
            let plan = compile(&spec, ctx.as_ref())?;
            let (prefix, short) = match spec.kind {
                ProbeKind::Uprobe => ("uprobe", "u"),
                ProbeKind::Uretprobe => ("uretprobe", "ur"),
                ProbeKind::Usdt => ("usdt", "usdt"),
            };
            for f in matches {
                if spec.offset != 0 && f.size != 0 && spec.offset >= f.size {
                    return Err(Error::BadOffset {
                        func: f.name.clone(),
                        offset: spec.offset,
                        size: f.size,
                    });
                }
                let file_offset = elf.file_offset(&f.name, f.addr + spec.offset)?;
                let off = if spec.offset != 0 {
                    format!("+{:#x}", spec.offset)
                } else {
                    String::new()
                };
                sites.push(Site {
                    probe: probes.len(),
                    path: elf.path.clone(),
                    func: f.name.clone(),
                    offset: spec.offset,
                    file_offset,
                    semaphore: None,
                    name: format!("{prefix}:{}:{}{off}", elf.path.display(), f.name),
                    short: format!("{short}:{}{off}", f.name),
                });
            }
            probes.push(Probe { spec, plan });
        }
        Ok(ProbeSet { probes, sites })
    }

    /// The attach cookie of a set of one site whose plan saves no arguments
    /// for a return: every attachment has it, so the programs need not ask
    /// the kernel for it (a helper call a hit).
    pub fn only_cookie(&self) -> Option<u64> {
        let [site] = self.sites.as_slice() else {
            return None;
        };
        let flags = self.probes[site.probe].plan.plan.flags;
        (flags & ri_common::plan_flags::ENTRY_ARGS == 0)
            .then(|| ri_common::cookie(site.probe as u32, 0))
    }

    /// True when some probe string matched more than one site (the overhead
    /// budget is on by default then).
    pub fn has_wildcard(&self) -> bool {
        let mut per_probe = vec![0usize; self.probes.len()];
        for s in &self.sites {
            per_probe[s.probe] += 1;
        }
        per_probe.iter().any(|&n| n > 1)
    }

    /// What the overhead budget of `pct` percent watches: each site's name
    /// and the kind of trap it costs (a return probe, a 5-byte nop, or
    /// int3).
    pub fn budget_config(&self, pct: f64) -> crate::engine::BudgetConfig {
        use crate::engine::SiteKind;
        let mut files: HashMap<&Path, Option<std::fs::File>> = HashMap::new();
        let kinds = self
            .sites
            .iter()
            .map(|s| {
                let file = files
                    .entry(&s.path)
                    .or_insert_with(|| std::fs::File::open(&s.path).ok());
                match self.probes[s.probe].spec.kind {
                    ProbeKind::Uretprobe => SiteKind::Return,
                    _ if file
                        .as_ref()
                        .is_some_and(|f| crate::engine::sites::is_nop5(f, s.file_offset)) =>
                    {
                        SiteKind::Nop5
                    }
                    _ => SiteKind::Int3,
                }
            })
            .collect();
        crate::engine::BudgetConfig {
            pct,
            names: self.sites.iter().map(|s| s.short.clone()).collect(),
            kinds,
        }
    }

    /// Flags the plans that are only `REG r, EMIT` pairs (events of raw
    /// registers), which the kernel runs without its interpreter.
    pub fn mark_regs_only(&mut self) {
        for probe in &mut self.probes {
            let plan = &mut probe.plan.plan;
            let insns = &plan.insns[..plan.n_insns as usize];
            let pairs = !insns.is_empty()
                && insns.len() % 2 == 0
                && insns
                    .chunks(2)
                    .all(|c| c[0].op == ri_common::op::REG && c[1].op == ri_common::op::EMIT);
            if pairs && plan.flags & ri_common::plan_flags::AGGREGATE == 0 {
                plan.flags |= ri_common::plan_flags::REGS_ONLY;
            }
        }
    }

    /// Slots the kernel's `FAST` array needs for the plans flagged
    /// `COUNT_FAST` (one per site) or `HIST_FAST` (one per site and bucket);
    /// at least one.
    pub fn fast_slots(&self) -> u32 {
        let flags = self.probes.iter().fold(0, |f, p| f | p.plan.plan.flags);
        let sites = self.sites.len() as u32;
        if flags & ri_common::plan_flags::HIST_FAST != 0 {
            sites.saturating_mul(ri_common::HIST_BUCKETS).max(1)
        } else if flags & ri_common::plan_flags::COUNT_FAST != 0 {
            sites.max(1)
        } else {
            1
        }
    }

    /// The map sizes these plans need: `agg_entries` keys in each
    /// aggregation map a plan updates, `stacks` stacks, `ring_bytes` of ring
    /// when a plan sends events; every map no plan touches gets one entry
    /// (hash maps are allocated in full when created, 5–8 ms apiece at
    /// 10,240 keys).
    pub fn map_sizes(&self, ring_bytes: u32, agg_entries: u32, stacks: u32) -> MapSizes {
        use ri_common::{op, plan_flags as f};
        let mut sizes = MapSizes {
            ring_bytes: 4096,
            agg: 1,
            agg_small: 1,
            inflight: 1,
            fast: self.fast_slots(),
            stacks,
            kept: 1,
            saved_args: 1,
            batch_events: 1,
            timestamps: true,
            only_cookie: self.only_cookie(),
            sites: 0,
            selecting: Default::default(),
        };
        for p in &self.probes {
            let plan = &p.plan.plan;
            if plan.flags & f::AGGREGATE == 0 {
                sizes.ring_bytes = ring_bytes;
            }
            if plan.flags & f::ENTRY_ARGS != 0 {
                sizes.saved_args = ri_common::FRAME_ENTRIES;
            }
            if plan.flags & (f::COUNT_FAST | f::HIST_FAST) != 0 {
                continue;
            }
            let n = (plan.n_insns as usize).min(plan.insns.len());
            for insn in &plan.insns[..n] {
                match insn.op {
                    op::COUNT | op::HIST if plan.flags & f::SMALL_KEY != 0 => {
                        sizes.agg_small = agg_entries
                    }
                    op::COUNT | op::HIST => sizes.agg = agg_entries,
                    op::SPAN => {
                        (sizes.agg, sizes.agg_small, sizes.inflight) =
                            (agg_entries, agg_entries, agg_entries)
                    }
                    op::BEGIN | op::END_FLIGHT | op::UPDATE => sizes.inflight = agg_entries,
                    op::KEEP | op::TAKE => sizes.kept = ri_common::FRAME_ENTRIES,
                    _ => {}
                }
            }
        }
        sizes
    }

    /// Writes the plans and attaches every site, once per pid (or once for
    /// all processes when `pids` is empty). `program` overrides the
    /// interpreter (benchmarks attach the bare program).
    pub fn attach(
        &self,
        engine: &mut Engine,
        pids: &[u32],
        program: Option<Program>,
    ) -> Result<usize, Error> {
        for (id, p) in self.probes.iter().enumerate() {
            engine.set_plan(id as u32, &crate::plan::fuse_constants(&p.plan.plan))?;
        }
        let scopes: Vec<Option<u32>> = if pids.is_empty() {
            vec![None]
        } else {
            pids.iter().map(|p| Some(*p)).collect()
        };
        // Sites grouped by (entry side first, program, file, pid): each
        // group attaches at once. Entries go first, so no return finds its
        // ENTRY_ARGS companion missing.
        type Group<'a> = Vec<(u64, u64, &'a str)>;
        let mut groups: BTreeMap<(u8, Program, &Path, Option<u32>), Group<'_>> = BTreeMap::new();
        let mut n = 0;
        for (sid, site) in self.sites.iter().enumerate() {
            if self.probes[site.probe].spec.kind == ProbeKind::Usdt {
                let cookie = ri_common::cookie(site.probe as u32, sid as u32);
                for pid in &scopes {
                    engine.attach_usdt(
                        &site.path,
                        site.file_offset,
                        site.semaphore,
                        cookie,
                        *pid,
                        &site.name,
                    )?;
                    n += 1;
                }
                continue;
            }
            // Plans without interpreter work get the small programs, which
            // the verifier checks in a fraction of the time.
            let fast = Program::runs_fast(&self.probes[site.probe].plan.plan);
            let which = program.unwrap_or(match (self.probes[site.probe].spec.kind, fast) {
                (ProbeKind::Uretprobe, false) => Program::Return,
                (ProbeKind::Uretprobe, true) => Program::FastReturn,
                (_, false) => Program::Entry,
                (_, true) => Program::FastEntry,
            });
            let cookie = ri_common::cookie(site.probe as u32, sid as u32);
            let flags = self.probes[site.probe].plan.plan.flags;
            let save_args = program.is_none() && flags & ri_common::plan_flags::ENTRY_ARGS != 0;
            for pid in &scopes {
                if save_args {
                    // Saving arguments is no interpreter work: the fast
                    // program does it (beside fast entry plans, in one link).
                    let save =
                        ri_common::cookie(site.probe as u32 | ri_common::SAVE_ARGS, sid as u32);
                    groups
                        .entry((0, Program::FastEntry, &site.path, *pid))
                        .or_default()
                        .push((site.file_offset, save, &site.name));
                }
                let side = u8::from(which.at_return());
                groups
                    .entry((side, which, &site.path, *pid))
                    .or_default()
                    .push((site.file_offset, cookie, &site.name));
            }
        }
        let mut programs: Vec<Program> = groups.keys().map(|k| k.1).collect();
        programs.sort();
        programs.dedup();
        engine.preload(&programs);
        for ((_, which, path, pid), sites) in &groups {
            engine.attach_sites(*which, path, sites, *pid)?;
            n += sites.len();
        }
        Ok(n)
    }
}
