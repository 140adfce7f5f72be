//! USDT probes of a session: TARGET resolved (per traced pid for library
//! names), notes selected, one plan per distinct argument-spec list and one
//! site per note.

use std::{collections::HashMap, path::PathBuf};

use super::{Probe, Site};
use crate::{
    Error,
    plan::{compile, needs_types},
    probe::{ParseError, ProbeSpec},
    target,
    usdt::{UsdtError, read_notes, select, subst_args},
};

/// The file of a USDT target: a path, or a library or program name that
/// each traced process must map.
fn resolve(spec: &ProbeSpec, scope: &target::Scope) -> Result<PathBuf, Error> {
    if spec.target.contains('/') || scope.pids.is_empty() {
        return Ok(target::resolve(&spec.target, scope)?);
    }
    let mut found: Option<PathBuf> = None;
    for &pid in &scope.pids {
        let path = target::resolve(&spec.target, &target::Scope::pids(&[pid]))?;
        let mapped = target::mapped_files(pid)?;
        let canon = |p: &PathBuf| p.canonicalize().unwrap_or_else(|_| p.clone());
        if !mapped.iter().any(|m| canon(m) == canon(&path)) {
            return Err(UsdtError::LibNotMapped {
                name: spec.target.clone(),
                pid,
                path,
            }
            .into());
        }
        found.get_or_insert(path);
    }
    Ok(found.unwrap_or_default())
}

/// Adds the probes and sites of one `usdt:` spec.
pub(super) fn build(
    spec: ProbeSpec,
    scope: &target::Scope,
    probes: &mut Vec<Probe>,
    sites: &mut Vec<Site>,
) -> Result<(), Error> {
    if needs_types(&spec) {
        return Err(UsdtError::Arg(ParseError::new(
            &spec.text,
            spec.func_span,
            "USDT arguments have no names or types: use arg0..argN, casts and str()".into(),
        ))
        .into());
    }
    let path = resolve(&spec, scope)?;
    let notes = read_notes(&path)?;
    let hits = select(&path, &notes, spec.provider.as_deref(), &spec.func)?;
    // Notes with the same argument specs share a plan.
    let mut plans: HashMap<&str, usize> = HashMap::new();
    for note in hits {
        let id = match plans.get(note.arg_text.as_str()) {
            Some(id) => *id,
            None => {
                let mut s = spec.clone();
                subst_args(&mut s, &note.args)?;
                let plan = compile(&s, None)?;
                probes.push(Probe { spec: s, plan });
                plans.insert(&note.arg_text, probes.len() - 1);
                probes.len() - 1
            }
        };
        sites.push(Site {
            probe: id,
            path: path.clone(),
            func: note.name.clone(),
            offset: 0,
            file_offset: note.offset,
            semaphore: note.sem_offset,
            name: format!("usdt:{}:{}:{}", path.display(), note.provider, note.name),
            short: format!("usdt:{}:{}", note.provider, note.name),
        });
    }
    Ok(())
}
