//! `ri view PACK.VIEW`: a pack's nested walks, one row of fields per
//! element, markers in place; `--freeze` stops the threads for the walk,
//! otherwise the walk is read again until two reads agree (else "possibly
//! torn").

use std::{collections::BTreeMap, io::Write, path::PathBuf};

use serde_json::{Value as Json, json};

use super::{
    Item, Marker, Out, Source, Val, ViewError, eval::Eval, freeze::Frozen, marker_json, pause_line,
};
use crate::{
    Error,
    dwarf::value::Value,
    pack::{
        self,
        format::ViewDef,
        view_def::{Step, parse_field, parse_step},
    },
    probe::{Expr, parse_expr},
};

/// Reads of an unfrozen walk before it is called torn.
const ATTEMPTS: usize = 4;
/// Test hook: milliseconds to wait between two reads of a walk, so that a
/// test can make the process change it under ri.
pub const TEST_DELAY_ENV: &str = "RI_VIEW_TEST_DELAY_MS";

/// What `ri view` was asked.
#[derive(Clone, Debug, Default)]
pub struct ViewOptions {
    /// `PACK.VIEW`.
    pub view: String,
    /// Positional arguments.
    pub args: Vec<String>,
    /// Where to read.
    pub source: Source,
    /// JSON instead of a table.
    pub json: bool,
    /// Stop every thread for the walk.
    pub freeze: bool,
    /// Most elements per walk.
    pub max: usize,
    /// `--pack` files.
    pub packs: Vec<PathBuf>,
}

/// One output line: a row of fields or a marker.
#[derive(Clone, Debug, PartialEq)]
enum Row {
    Fields {
        /// Addresses of the bound elements: what two reads compare.
        key: Vec<u64>,
        cells: Vec<(String, Json)>,
    },
    Mark(String, Marker),
}

/// The rows of one read.
fn read(
    ev: &mut Eval,
    steps: &[Step],
    fields: &[(String, Expr)],
    errors: &mut BTreeMap<String, String>,
) -> Result<Vec<Row>, ViewError> {
    let mut rows = Vec::new();
    let mut key = Vec::new();
    walk(ev, steps, fields, &mut key, &mut rows, errors)?;
    Ok(rows)
}

fn walk(
    ev: &mut Eval,
    steps: &[Step],
    fields: &[(String, Expr)],
    key: &mut Vec<u64>,
    rows: &mut Vec<Row>,
    errors: &mut BTreeMap<String, String>,
) -> Result<(), ViewError> {
    let Some((step, rest)) = steps.split_first() else {
        let cells = fields
            .iter()
            .map(|(n, e)| {
                let v = cell(ev, e).unwrap_or_else(|err| {
                    errors.entry(n.clone()).or_insert_with(|| err.to_string());
                    Json::Null
                });
                (n.clone(), v)
            })
            .collect();
        rows.push(Row::Fields {
            key: key.clone(),
            cells,
        });
        return Ok(());
    };
    for (label, e) in &step.alts {
        let items = match ev.eval(e)? {
            Out::One(v) => vec![Item::Val(v)],
            Out::Many(items) => items,
        };
        for it in items {
            match it {
                Item::Val(v) => {
                    key.push(match &v {
                        Val::Loc { addr, .. } => *addr,
                        Val::Num { v, .. } => *v,
                        Val::Text(_) | Val::Json(_) => 0,
                    });
                    ev.vars.insert(step.name.clone(), v);
                    let var = format!("${}", step.name);
                    match label {
                        Some(l) => ev.vars.insert(var, Val::Text(l.clone())),
                        None => ev.vars.remove(&var),
                    };
                    walk(ev, rest, fields, key, rows, errors)?;
                    key.pop();
                }
                Item::Mark(m) => rows.push(Row::Mark(step.name.clone(), m)),
            }
        }
    }
    Ok(())
}

/// A field's value as JSON: numbers, strings (a `char *` is its string),
/// enums by name, anything else as ri prints values.
fn cell(ev: &Eval, e: &Expr) -> Result<Json, ViewError> {
    let v = match ev.eval(e)? {
        Out::One(v) => v,
        Out::Many(items) => {
            return Ok(Json::from(items.len()));
        }
    };
    if let Val::Json(j) = v {
        return Ok(j);
    }
    Ok(match ev.render(&v, 1) {
        Value::Int(i) | Value::Char(i) => json!(i),
        Value::Uint(u) => json!(u),
        Value::Bool(b) => json!(b),
        Value::Enum { name: Some(n), .. } => json!(n),
        Value::Enum { value, .. } => json!(value),
        Value::Str { bytes, .. } => json!(String::from_utf8_lossy(&bytes)),
        Value::Pointer { to: Some(to), addr } => match *to {
            Value::Str { bytes, .. } => json!(String::from_utf8_lossy(&bytes)),
            _ => json!(format!("{addr:#x}")),
        },
        Value::Pointer { addr, .. } => json!(format!("{addr:#x}")),
        Value::Unreadable(a) => return Err(ViewError::Unreadable(a)),
        other => other.to_json(),
    })
}

fn is_torn(rows: &[Row]) -> bool {
    rows.iter().any(|r| matches!(r, Row::Mark(_, m) if m.torn))
}

fn keys(rows: &[Row]) -> Vec<Option<&Vec<u64>>> {
    rows.iter()
        .map(|r| match r {
            Row::Fields { key, .. } => Some(key),
            Row::Mark(..) => None,
        })
        .collect()
}

/// Finds `PACK.VIEW`.
fn find(packs: &[pack::Loaded], full: &str) -> Result<ViewDef, Error> {
    let (p, v) = full
        .split_once('.')
        .filter(|(p, v)| !p.is_empty() && !v.is_empty())
        .ok_or_else(|| {
            Error::Usage(format!(
                "'{full}': expected PACK.VIEW, e.g. motr.runq (see ri packs)"
            ))
        })?;
    let pack = pack::find_pack(packs, p)?;
    pack.file.views.get(v).cloned().ok_or_else(|| {
        ViewError::UnknownView {
            pack: p.to_string(),
            name: v.to_string(),
            known: if pack.file.views.is_empty() {
                "none".to_string()
            } else {
                pack.file
                    .views
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }
        .into()
    })
}

/// `ri view PACK.VIEW`.
pub fn run_view(opts: &ViewOptions, out: &mut impl Write) -> Result<(), Error> {
    let packs = pack::load_all(&opts.packs)?;
    let def = find(&packs, &opts.view)?;
    if opts.args.len() != def.args.len() {
        let want: Vec<String> = def.args.iter().map(|a| a.to_uppercase()).collect();
        return Err(Error::Usage(format!(
            "{} takes {} argument{} ({}), got {}",
            opts.view,
            def.args.len(),
            if def.args.len() == 1 { "" } else { "s" },
            if want.is_empty() {
                "none".to_string()
            } else {
                want.join(" ")
            },
            opts.args.len()
        )));
    }
    let bad = |e: String| Error::Usage(format!("{}: {e}", opts.view));
    let steps: Vec<Step> = def
        .walk
        .iter()
        .map(|s| parse_step(s))
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    let fields: Vec<(String, Expr)> = def
        .fields
        .iter()
        .map(|s| parse_field(s))
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    let space = opts.source.open()?;
    let mut ev = Eval::new(&space, opts.max);
    for (name, text) in def.args.iter().zip(&opts.args) {
        let v = ev.one(&parse_expr(text)?)?;
        ev.vars.insert(name.clone(), v);
    }
    let mut errors = BTreeMap::new();
    let frozen = match (opts.freeze, opts.source.pid) {
        (true, Some(pid)) => Some(Frozen::all(pid)?),
        _ => None,
    };
    let mut attempts = 1;
    let mut rows = read(&mut ev, &steps, &fields, &mut errors)?;
    let mut torn = false;
    if frozen.is_none() && opts.source.pid.is_some() {
        let delay = std::env::var(TEST_DELAY_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_millis);
        loop {
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
            let again = read(&mut ev, &steps, &fields, &mut errors)?;
            attempts += 1;
            let same = keys(&again) == keys(&rows);
            rows = again;
            if same && !is_torn(&rows) {
                break;
            }
            if attempts >= ATTEMPTS {
                torn = true;
                break;
            }
        }
    } else {
        torn = is_torn(&rows);
    }
    let pause = frozen.map(|f| (f.count(), f.running(), f.elapsed()));
    let columns: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    if opts.json {
        let mut data = Vec::new();
        let mut marks = Vec::new();
        for r in &rows {
            match r {
                Row::Fields { cells, .. } => {
                    data.push(Json::Object(cells.iter().cloned().collect()))
                }
                Row::Mark(step, m) => {
                    let mut j = marker_json(m);
                    j["step"] = json!(step);
                    marks.push(j);
                }
            }
        }
        let o = json!({
            "view": opts.view,
            "source": space.what,
            "rows": data,
            "markers": marks,
            "torn": torn,
            "reads": attempts,
            "frozen": pause.map(|(n, late, d)| json!({"threads": n, "not_stopped": late, "pause_us": d.as_micros() as u64})),
            "errors": errors,
        });
        writeln!(out, "{o}")?;
    } else {
        write_table(out, &columns, &rows)?;
        let n = rows
            .iter()
            .filter(|r| matches!(r, Row::Fields { .. }))
            .count();
        writeln!(out, "({n} rows from {})", space.what)?;
        for (f, e) in &errors {
            writeln!(out, "note: field {f}: {e}")?;
        }
        if torn {
            writeln!(
                out,
                "warning: possibly torn: the process changed the walk under it in {attempts} reads (use --freeze)"
            )?;
        }
    }
    if let Some((n, late, d)) = pause {
        eprintln!("{}", pause_line(n, late, d));
    }
    Ok(())
}

fn text_of(v: &Json) -> String {
    match v {
        Json::Null => "?".into(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn write_table(out: &mut impl Write, columns: &[&str], rows: &[Row]) -> std::io::Result<()> {
    // One structured column (a b-tree node): indented JSON.
    if let [col] = columns
        && rows
            .iter()
            .any(|r| matches!(r, Row::Fields { cells, .. } if cells[0].1.is_object()))
    {
        for r in rows {
            match r {
                Row::Fields { cells, .. } => writeln!(
                    out,
                    "{col}: {}",
                    serde_json::to_string_pretty(&cells[0].1).unwrap_or_default()
                )?,
                Row::Mark(step, m) => {
                    writeln!(out, "-- {step}: end of {}: {} --", m.walk, m.reason)?
                }
            }
        }
        return Ok(());
    }
    let mut width: Vec<usize> = columns.iter().map(|c| c.len()).collect();
    for r in rows {
        if let Row::Fields { cells, .. } = r {
            for (i, (_, v)) in cells.iter().enumerate() {
                width[i] = width[i].max(text_of(v).len());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(
        out,
        "{}",
        line(columns.iter().map(|c| c.to_uppercase()).collect())
    )?;
    for r in rows {
        match r {
            Row::Fields { cells, .. } => writeln!(
                out,
                "{}",
                line(cells.iter().map(|(_, v)| text_of(v)).collect())
            )?,
            Row::Mark(step, m) => writeln!(out, "-- {step}: end of {}: {} --", m.walk, m.reason)?,
        }
    }
    Ok(())
}
