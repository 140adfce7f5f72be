//! Tab completion for `ri shell`: commands and flags from the clap
//! definitions, pack instruments and views, job names, probe points from the target's
//! ELF symbols and USDT notes, struct members from DWARF after `->`/`.`,
//! and `ctl` commands and argument names from the target's own schema.

use std::{
    cell::RefCell,
    collections::HashMap,
    path::{Path, PathBuf},
    rc::Rc,
};

use rustyline::{
    Context, Helper,
    completion::{Completer, Pair},
    highlight::Highlighter,
    hint::Hinter,
    validate::{ValidationContext, ValidationResult, Validator},
};

use crate::dwarf::{DebugInfo, Type, TypeId};

/// What completion knows about the session.
pub struct Completion {
    /// The shell's processes.
    pub pids: Vec<u32>,
    /// Names of the background jobs, kept current by the shell.
    pub jobs: Rc<RefCell<Vec<String>>>,
    /// Debug info by file, loaded on first use (`None`: the file has none).
    dwarf: RefCell<HashMap<PathBuf, Option<Rc<DebugInfo>>>>,
    /// `-H`: probe points, members and `ctl` names come from the hosts'
    /// processes (commands, flags and packs stay this machine's).
    pub hosts: Option<crate::remote::HostCompletion>,
}

impl Completion {
    /// Completion for a shell over `pids`.
    pub fn new(pids: Vec<u32>, jobs: Rc<RefCell<Vec<String>>>) -> Completion {
        Completion {
            pids,
            jobs,
            dwarf: RefCell::new(HashMap::new()),
            hosts: None,
        }
    }

    fn debug_info(&self, path: &Path) -> Option<Rc<DebugInfo>> {
        self.dwarf
            .borrow_mut()
            .entry(path.to_path_buf())
            .or_insert_with(|| DebugInfo::load(path).ok().map(Rc::new))
            .clone()
    }

    fn target(&self, name: &str) -> Option<PathBuf> {
        crate::target::resolve(name, &crate::target::Scope::pids(&self.pids)).ok()
    }
}

/// Where the word under the cursor starts: after the last blank that is not
/// inside quotes.
fn word_start(line: &str) -> usize {
    let mut start = 0;
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, c) if c.is_whitespace() => start = i + c.len_utf8(),
            _ => {}
        }
    }
    start
}

/// Candidates from `names` that start with `prefix`, sorted, unique.
fn matching(names: impl IntoIterator<Item = String>, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The probe kinds a probe string starts with.
const KINDS: &[&str] = &["uprobe:", "uretprobe:", "u:", "ur:", "usdt:"];

impl Completion {
    /// Candidates for the text before the cursor: where the replaced part
    /// starts, and the replacements.
    pub fn candidates(&self, before: &str) -> (usize, Vec<String>) {
        use clap::CommandFactory as _;
        let start = word_start(before);
        let quoted = before[start..].starts_with(['\'', '"']);
        let word_at = start + usize::from(quoted);
        let word = &before[word_at..];
        let prior = super::line::words(&before[..start]).unwrap_or_default();
        let root = super::line::ShellLine::command();
        let Some(cmd) = prior.first() else {
            let names = root
                .get_subcommands()
                .filter(|s| !s.is_hide_set())
                .flat_map(|s| {
                    std::iter::once(s.get_name().to_string())
                        .chain(s.get_all_aliases().map(String::from))
                });
            return (word_at, matching(names, word));
        };
        if let Some(i) = KINDS.iter().find_map(|k| word.find(k)) {
            return (self.on_hosts(before, word_at))
                .unwrap_or_else(|| self.probe(before, word_at + i));
        }
        if word.starts_with('-') {
            // `start` takes `ri run`'s flags.
            let name = if cmd == "start" { "run" } else { cmd.as_str() };
            let sub = root.find_subcommand(name).cloned().unwrap_or_default();
            let flags = sub.get_arguments().flat_map(|a| {
                a.get_long()
                    .map(|l| format!("--{l}"))
                    .into_iter()
                    .chain(a.get_short().map(|s| format!("-{s}")))
            });
            return (word_at, matching(flags, word));
        }
        let positional = prior.len() == 1;
        match cmd.as_str() {
            "run" | "start" if positional => (word_at, matching(instruments(), word)),
            "view" if positional => (word_at, matching(views(), word)),
            "top" | "packs" if positional => (word_at, matching(packs(), word)),
            "show" | "stop" => (word_at, matching(self.jobs.borrow().iter().cloned(), word)),
            "ctl" => {
                (self.on_hosts(before, word_at)).unwrap_or_else(|| self.ctl(&prior, word_at, word))
            }
            _ if word.contains("->") || word.contains('.') => (self.on_hosts(before, word_at))
                .or_else(|| self.members(before, None))
                .unwrap_or((word_at, Vec::new())),
            _ => (word_at, Vec::new()),
        }
    }

    /// Over `-H`, the hosts' answer for `before` (none when no host
    /// answered); `None` on this machine.
    fn on_hosts(&self, before: &str, word_at: usize) -> Option<(usize, Vec<String>)> {
        let h = self.hosts.as_ref()?;
        Some(h.candidates(before).unwrap_or((word_at, Vec::new())))
    }

    /// `u:TARGET:FUNC` names, then struct members inside the probe's
    /// captures and filter.
    fn probe(&self, before: &str, at: usize) -> (usize, Vec<String>) {
        let text = &before[at..];
        let (kind, rest) = text.split_once(':').unwrap_or((text, ""));
        let Some((target, func)) = rest.split_once(':') else {
            return (before.len(), Vec::new());
        };
        let Some(path) = self.target(target) else {
            return (before.len(), Vec::new());
        };
        let head = !func.contains(['(', ' ']);
        if !head {
            let name = func.split(['(', ' ', '+']).next().unwrap_or("");
            return self
                .members(before, Some((&path, name)))
                .unwrap_or((before.len(), Vec::new()));
        }
        let from = before.len() - func.len();
        let names: Vec<String> = if kind == "usdt" {
            // `NAME`, or `PROVIDER:NAME` once a provider is typed.
            let (provider, name) = func.rsplit_once(':').unwrap_or(("", func));
            crate::usdt::matching(&path, &format!("{name}*"))
                .map(|v| {
                    v.into_iter()
                        .map(|(full, _)| match provider {
                            "" => full
                                .split_once(':')
                                .map_or(full.clone(), |(_, n)| n.to_string()),
                            _ => full,
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            crate::elf::ElfFile::open(&path)
                .map(|e| {
                    e.matching(&format!("{func}*"))
                        .into_iter()
                        .map(|f| f.name.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        (from, matching(names, func))
    }

    /// Members after `a->b.` at the end of `before`: the root is a
    /// parameter of `func` in `file`, or a global of the shell's process.
    fn members(&self, before: &str, func: Option<(&Path, &str)>) -> Option<(usize, Vec<String>)> {
        let tail_at = before
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || "_.->".contains(*c)))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let tail = &before[tail_at..];
        if !tail.contains("->") && !tail.contains('.') {
            return None;
        }
        let parts: Vec<&str> = tail.split("->").flat_map(|p| p.split('.')).collect();
        let (root, path) = parts.split_first()?;
        let (partial, through) = path.split_last()?;
        let (info, mut ty) = match func {
            Some((file, name)) => {
                let info = self.debug_info(file)?;
                let ty = info
                    .function(name)?
                    .params
                    .iter()
                    .find(|p| p.name == *root)?
                    .ty;
                (info, ty)
            }
            None => {
                let exe = crate::target::exe_of(*self.pids.first()?).ok()?;
                let info = self.debug_info(&exe)?;
                let ty = info.variable(root)?.1;
                (info, ty)
            }
        };
        for m in through {
            ty = info.member(pointee(&info, ty), m).ok()?.ty;
        }
        let names = info.member_names(pointee(&info, ty));
        Some((before.len() - partial.len(), matching(names, partial)))
    }

    /// `ctl` command names, then their argument names (`name=`), from the
    /// process's own schema.
    fn ctl(&self, prior: &[String], at: usize, word: &str) -> (usize, Vec<String>) {
        let Some(&pid) = self.pids.first() else {
            return (at, Vec::new());
        };
        let Ok(cmds) = crate::ctl::commands(pid as i32) else {
            return (at, Vec::new());
        };
        let given: Vec<&String> = prior[1..].iter().filter(|w| !w.starts_with('-')).collect();
        match given.first() {
            None => (at, matching(cmds.into_iter().map(|c| c.name), word)),
            Some(name) => {
                let args = cmds
                    .iter()
                    .find(|c| &c.name == *name)
                    .and_then(|c| c.args["properties"].as_object().cloned())
                    .unwrap_or_default();
                (at, matching(args.keys().map(|k| format!("{k}=")), word))
            }
        }
    }
}

/// What a pointer points to (the type itself otherwise), typedefs stripped.
fn pointee(info: &DebugInfo, ty: TypeId) -> TypeId {
    let s = info.strip(ty);
    match info.ty(s) {
        Type::Pointer { pointee: Some(p) } => info.strip(*p),
        _ => s,
    }
}

/// Every `PACK.INSTRUMENT`.
fn instruments() -> Vec<String> {
    qualified(|f| f.instruments.keys().cloned().collect())
}

/// Every `PACK.VIEW`.
fn views() -> Vec<String> {
    qualified(|f| f.views.keys().cloned().collect())
}

/// `PACK.NAME` for the names `of` each pack.
fn qualified(of: impl Fn(&crate::pack::PackFile) -> Vec<String>) -> Vec<String> {
    crate::pack::load_all(&[])
        .map(|packs| {
            packs
                .iter()
                .flat_map(|l| {
                    of(&l.file)
                        .into_iter()
                        .map(|n| format!("{}.{n}", l.file.pack.name))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every pack name.
fn packs() -> Vec<String> {
    crate::pack::load_all(&[])
        .map(|p| p.into_iter().map(|l| l.file.pack.name).collect())
        .unwrap_or_default()
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (at, names) = self.candidates(&line[..pos]);
        Ok((
            at,
            names
                .into_iter()
                .map(|n| Pair {
                    display: n.clone(),
                    replacement: n,
                })
                .collect(),
        ))
    }
}

impl Hinter for Completion {
    type Hint = String;
}

impl Highlighter for Completion {}

impl Validator for Completion {
    /// A line with an open quote or parenthesis, or ending in `\`, goes on.
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if super::line::incomplete(ctx.input()) {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

impl Helper for Completion {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_flags_and_words() {
        let c = Completion::new(
            Vec::new(),
            Rc::new(RefCell::new(vec!["ops".into(), "q".into()])),
        );
        assert_eq!(c.candidates("jo"), (0, vec!["jobs".to_string()]));
        assert!(c.candidates("co").1.contains(&"count".to_string()));
        assert!(c.candidates("count --b").1.contains(&"--by".to_string()));
        assert_eq!(c.candidates("show o"), (5, vec!["ops".to_string()]));
        assert!(
            c.candidates("start motr.q")
                .1
                .contains(&"motr.queue".to_string())
        );
        assert!(
            c.candidates("start motr.queue --inter")
                .1
                .contains(&"--interval".to_string())
        );
        assert!(
            c.candidates("view motr.r")
                .1
                .contains(&"motr.runq".to_string())
        );
        assert_eq!(word_start("trace 'u:x:f(a) if"), 6);
    }
}
