//! Names for key values (`--by NAME=EXPR`, `--label KEY=EXPR`): a label is a
//! hidden key word, the address of a C string (a fop type's `ft_name`),
//! captured beside the key and read from the traced process once per
//! distinct address, so `opcode=41` prints as `opcode=41 (read)`.

use std::collections::HashMap;

use super::{
    AggError, AggKind, AggPlan,
    read::{Cell, Snapshot},
};
use crate::session::ProbeSet;

/// How often names are read while the run goes on (a `-c` command may
/// exit before the final print).
pub const READ_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Longest name kept, in bytes.
const NAME_MAX: usize = 64;

/// A `--label KEY=EXPR`: KEY's values are named by the C string at EXPR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSpec {
    /// The key it names (a `--by` name or a begin capture).
    pub key: String,
    /// The address of the name, evaluated where the key is.
    pub expr: String,
}

impl LabelSpec {
    /// Parses `KEY=EXPR`.
    pub fn parse(s: &str) -> Result<LabelSpec, AggError> {
        match split_name(s) {
            Some((key, expr)) if !expr.trim().is_empty() => Ok(LabelSpec {
                key: key.to_string(),
                expr: expr.trim().to_string(),
            }),
            _ => Err(AggError::Label(format!(
                "--label '{s}': expected KEY=EXPR (KEY a --by NAME or a begin capture, EXPR a char *)"
            ))),
        }
    }

    /// The hidden capture of label `i`.
    pub fn capture(&self, i: usize) -> String {
        // As a number: a `char *` capture would copy the string each time.
        format!("{}=(u64)({})", hidden_name(i), self.expr)
    }
}

/// The capture name of hidden label word `i`.
pub fn hidden_name(i: usize) -> String {
    format!("ri_label{i}")
}

/// `NAME=EXPR` split at the first `=` when NAME is an identifier and the
/// `=` is not part of `==`; `None` for a plain expression.
pub fn split_name(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    let (name, rest) = s.split_at(end);
    let rest = rest.trim_start();
    let starts_ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    (starts_ok && rest.starts_with('=') && !rest.starts_with("==")).then(|| (name, &rest[1..]))
}

/// A `--by` argument: its label (NAME, or the expression's text) and its
/// expression; an empty NAME or expression is refused.
pub fn by_key(s: &str) -> Result<(String, String), AggError> {
    if let Some((name, expr)) = split_name(s) {
        if expr.trim().is_empty() {
            return Err(AggError::Label(format!(
                "--by '{s}': expected NAME=EXPR, the expression is empty"
            )));
        }
        return Ok((name.to_string(), expr.trim().to_string()));
    }
    if s.trim_start().starts_with('=') {
        return Err(AggError::Label(format!(
            "--by '{s}': expected NAME=EXPR or EXPR, the name is empty"
        )));
    }
    Ok((s.to_string(), s.to_string()))
}

/// The `--by` arguments' labels and expressions; two keys with one name
/// are refused.
pub fn by_keys(by: &[String]) -> Result<(Vec<String>, Vec<String>), AggError> {
    let mut names: Vec<String> = Vec::new();
    let mut exprs = Vec::new();
    for b in by {
        let (name, expr) = by_key(b)?;
        if names.contains(&name) {
            return Err(AggError::Label(format!("--by: two keys named '{name}'")));
        }
        names.push(name);
        exprs.push(expr);
    }
    Ok((names, exprs))
}

/// Places each label in the shown plans: the key it names, its hidden word
/// and where that word is in the aggregation key.
pub(super) fn locate(
    set: &ProbeSet,
    plans: &mut [AggPlan],
    specs: &[LabelSpec],
    kind: &AggKind,
) -> Result<(), AggError> {
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.key == s.key) {
            return Err(AggError::Label(format!("--label {}: given twice", s.key)));
        }
    }
    for (id, plan) in plans.iter_mut().enumerate() {
        if specs.is_empty() || !plan.shown {
            continue;
        }
        // An inflight entry's `key` is its identity, not a shown key.
        let inflight = matches!(kind, AggKind::Inflight(..));
        let shown: Vec<&str> = (plan.keys.iter())
            .map(|k| k.name.as_str())
            .filter(|n| !(n.starts_with("ri_label") || (inflight && *n == "key")))
            .collect();
        for (i, spec) in specs.iter().enumerate() {
            let hidden_name = hidden_name(i);
            let find = |n: &str| plan.keys.iter().position(|k| k.name == n);
            let Some(key) = find(&spec.key).filter(|_| shown.contains(&spec.key.as_str())) else {
                return Err(AggError::Label(format!(
                    "--label {}: no key named '{}' (keys: {})",
                    spec.key,
                    spec.key,
                    if shown.is_empty() {
                        "none".into()
                    } else {
                        shown.join(", ")
                    }
                )));
            };
            let (Some(hidden), Some(word)) = (
                find(&hidden_name),
                super::field_word(&set.probes[id].plan, &hidden_name),
            ) else {
                return Err(AggError::Label(format!(
                    "--label {}={}: the name's address must be a pointer or an integer",
                    spec.key, spec.expr
                )));
            };
            // A span's key leaves out the payload's first word (its `key`).
            let skip = usize::from(matches!(kind, AggKind::Span(_)));
            plan.labels.push(KeyLabel {
                key,
                hidden,
                at: (word as usize).saturating_sub(skip) * 8,
            });
        }
    }
    Ok(())
}

/// Where one label lives in a plan's keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLabel {
    /// Index of the key it names.
    pub key: usize,
    /// Index of its hidden word among the keys.
    pub hidden: usize,
    /// Byte offset of the hidden word in the aggregation key.
    pub at: usize,
}

/// Names read from the traced processes, by address, cached.
#[derive(Debug, Default)]
pub struct Names {
    /// Processes to read from, in order.
    pids: Vec<u32>,
    /// Address → name (`None`: unreadable, not asked again).
    cache: HashMap<u64, Option<String>>,
    /// Name → the first address seen with it (rows of one name merge).
    first: HashMap<String, u64>,
}

impl Names {
    /// Names read from `pids`.
    pub fn new(pids: Vec<u32>) -> Self {
        Names {
            pids,
            ..Default::default()
        }
    }

    /// Reads names from `pid` too (a process that started meanwhile).
    pub fn add(&mut self, pid: u32) {
        if !self.pids.contains(&pid) {
            self.pids.push(pid);
        }
    }

    /// The name at `addr`, read once.
    pub fn name(&mut self, addr: u64) -> Option<String> {
        if addr == 0 {
            return None;
        }
        if let Some(n) = self.cache.get(&addr) {
            return n.clone();
        }
        let found = self.pids.iter().find_map(|&pid| read_name(pid, addr));
        if let Some(n) = &found {
            self.first.entry(n.clone()).or_insert(addr);
        }
        self.cache.insert(addr, found.clone());
        found
    }

    /// The address standing for every address with `addr`'s name (0 when
    /// it has none), so that keys differing only there merge.
    fn canonical(&mut self, addr: u64) -> u64 {
        match self.name(addr) {
            Some(n) => self.first[&n],
            None => 0,
        }
    }

    /// `snap` with each plan's label words made canonical (names read now
    /// for addresses not seen before), cells that then match merged.
    pub fn fold(&mut self, snap: Snapshot, plans: &[AggPlan]) -> Snapshot {
        if plans.iter().all(|p| p.labels.is_empty()) {
            return snap;
        }
        let mut out = Snapshot::default();
        for ((plan, site, mut key), cell) in snap.cells {
            let labels = plans.get(plan as usize).map(|p| p.labels.as_slice());
            for l in labels.into_iter().flatten() {
                if let Some(w) = key.get_mut(l.at..l.at + 8) {
                    let addr = u64::from_ne_bytes(w.try_into().unwrap_or_default());
                    w.copy_from_slice(&self.canonical(addr).to_ne_bytes());
                }
            }
            merge(out.cells.entry((plan, site, key)).or_default(), &cell);
        }
        out
    }
}

/// Adds `from`'s hits to `into`.
fn merge(into: &mut Cell, from: &Cell) {
    for (bucket, v) in &from.buckets {
        into.add(*bucket, v);
    }
}

/// A printable name at `addr` in `pid`'s memory.
fn read_name(pid: u32, addr: u64) -> Option<String> {
    let mem = crate::peek::process::ProcessMemory::new(pid);
    let mut bytes = crate::trace::read_str(&mem, addr)?;
    bytes.truncate(NAME_MAX);
    let ok = !bytes.is_empty() && bytes.iter().all(|c| (0x20..0x7f).contains(c));
    ok.then(|| String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_keys() {
        assert_eq!(split_name("opcode=a->b"), Some(("opcode", "a->b")));
        assert_eq!(split_name(" op_1 = arg0 % 4"), Some(("op_1", " arg0 % 4")));
        assert_eq!(split_name("arg0 == 1"), None);
        assert_eq!(split_name("arg0 >= 1"), None);
        assert_eq!(split_name("1=2"), None);
        assert_eq!(split_name("str(arg0, 8)"), None);
        assert_eq!(
            by_key("arg0 % 4").unwrap(),
            ("arg0 % 4".into(), "arg0 % 4".into())
        );
        assert_eq!(by_key("n=arg0").unwrap(), ("n".into(), "arg0".into()));
        assert!(by_key("n=").is_err());
        assert!(by_key("=arg0").is_err());
        assert!(LabelSpec::parse("opcode").is_err());
        assert!(LabelSpec::parse("opcode= ").is_err());
        assert_eq!(
            LabelSpec::parse("opcode=f->ft_name").unwrap().capture(1),
            "ri_label1=(u64)(f->ft_name)"
        );
    }

    #[test]
    fn unreadable_names_merge_under_zero() {
        let mut names = Names::new(Vec::new());
        let mut snap = Snapshot::default();
        // A count's hits are in bucket 0 (rows merge bucket by bucket).
        let cell = |n| {
            let mut c = Cell::default();
            c.add(
                0,
                &ri_common::AggValue {
                    count: n,
                    ..Default::default()
                },
            );
            c
        };
        let key = |w: u64| [7u64.to_ne_bytes(), w.to_ne_bytes()].concat();
        snap.cells.insert((0, 0, key(0x1000)), cell(2));
        snap.cells.insert((0, 0, key(0x2000)), cell(3));
        let plans = [AggPlan {
            keys: Vec::new(),
            hist: false,
            signed: false,
            shown: true,
            labels: vec![KeyLabel {
                key: 0,
                hidden: 1,
                at: 8,
            }],
        }];
        let out = names.fold(snap, &plans);
        assert_eq!(out.cells.len(), 1);
        assert_eq!(out.cells[&(0, 0, key(0))].count, 5);
    }
}
