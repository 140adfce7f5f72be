//! Drawing `ri top`: the full-screen view (ratatui over crossterm, one pane
//! at a time, for an 80×24 terminal) and `--once`'s plain-text frame.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row, Table, Tabs},
};

use super::{Pane, TopError};
use crate::Error;

/// The header line: the pack, the processes, the time.
fn title(pack: &str, pids: &[u32]) -> String {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let scope = if pids.is_empty() {
        "all processes".to_string()
    } else {
        format!("pid {}", pids.join(","))
    };
    format!("ri top {pack}  {scope}")
}

/// Widths that fit each column's longest text.
fn widths(t: &super::Table) -> Vec<usize> {
    (0..t.columns.len())
        .map(|c| {
            t.rows
                .iter()
                .filter_map(|r| r.get(c).map(|x| x.text.chars().count()))
                .chain([t.columns[c].len()])
                .max()
                .unwrap_or(1)
        })
        .collect()
}

/// `--once`: every pane as a plain-text table.
pub fn plain(out: &mut impl Write, pack: &str, pids: &[u32], panes: &[Pane]) -> Result<(), Error> {
    writeln!(out, "{}", title(pack, pids))?;
    for p in panes {
        let mut t = p.table.clone();
        t.sort(t.default_sort, false);
        writeln!(out, "\n== {} ({}): {}", p.title, p.instrument, t.summary)?;
        let w = widths(&t);
        let line = |cells: Vec<&str>| -> String {
            let v: Vec<String> = cells
                .iter()
                .zip(&w)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            v.join("  ").trim_end().to_string()
        };
        writeln!(
            out,
            "{}",
            line(t.columns.iter().map(String::as_str).collect())
        )?;
        for r in &t.rows {
            writeln!(out, "{}", line(r.iter().map(|c| c.text.as_str()).collect()))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// What the keys changed.
struct State {
    pane: usize,
    /// Chosen sort column per pane, and whether ascending.
    sort: Vec<Option<(usize, bool)>>,
}

/// Draws one frame: tabs with each pane's summary, the current pane's
/// table, the key help.
fn draw(f: &mut Frame, head: &str, panes: &[Pane], st: &State, notes: &[String]) {
    let [top, tabs, summary, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(head.to_string()), top);
    let titles: Vec<Line> = panes
        .iter()
        .enumerate()
        .map(|(i, p)| Line::from(format!("{} {}", i + 1, p.title)))
        .collect();
    f.render_widget(
        Tabs::new(titles)
            .select(st.pane)
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED)),
        tabs,
    );
    let p = &panes[st.pane];
    let mut t = p.table.clone();
    let (col, asc) = st.sort[st.pane].unwrap_or((t.default_sort, false));
    t.sort(col, asc);
    f.render_widget(
        Paragraph::new(format!("{}: {}", p.instrument, t.summary)),
        summary,
    );
    let w = widths(&t);
    let header = Row::new(t.columns.iter().enumerate().map(|(i, c)| {
        let mark = if i == col {
            if asc { "^" } else { "v" }
        } else {
            ""
        };
        Cell::from(format!("{c}{mark}"))
    }))
    .style(Style::default().add_modifier(Modifier::BOLD));
    let rows = t
        .rows
        .iter()
        .map(|r| Row::new(r.iter().map(|c| Cell::from(c.text.clone()))));
    let constraints: Vec<Constraint> = w.iter().map(|&n| Constraint::Length(n as u16)).collect();
    f.render_widget(Table::new(rows, constraints).header(header), body);
    let help = match notes.first() {
        Some(n) => n.clone(),
        None => "q quit  Tab/1-9 pane  s sort  r reverse".to_string(),
    };
    f.render_widget(Paragraph::new(help), foot);
}

/// Restores the terminal when dropped, also on an error.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// The full-screen loop: refresh every `every`, redraw on keys, `q` quits
/// (the panes detach when dropped by the caller).
pub fn run(
    pack: &str,
    pids: &[u32],
    panes: &mut [Pane],
    every: Duration,
    notes: &[String],
) -> Result<(), Error> {
    // Killed, it gives the terminal back first (ratatui::restore).
    crate::signals::catch(ratatui::restore)?;
    let mut term = ratatui::try_init().map_err(TopError::Terminal)?;
    let _restore = Restore;
    let head = title(pack, pids);
    let mut st = State {
        pane: 0,
        sort: vec![None; panes.len()],
    };
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            for p in panes.iter_mut() {
                p.refresh()?;
            }
            next += every;
        }
        term.draw(|f| draw(f, &head, panes, &st, notes))
            .map_err(TopError::Terminal)?;
        let wait = next.saturating_duration_since(Instant::now());
        if !event::poll(wait).map_err(TopError::Terminal)? {
            continue;
        }
        let Event::Key(k) = event::read().map_err(TopError::Terminal)? else {
            continue;
        };
        if k.kind != KeyEventKind::Press {
            continue;
        }
        let n = panes.len();
        let cols = panes[st.pane].table.columns.len().max(1);
        let cur = st.sort[st.pane].unwrap_or((panes[st.pane].table.default_sort, false));
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
            KeyCode::Tab | KeyCode::Right => st.pane = (st.pane + 1) % n,
            KeyCode::BackTab | KeyCode::Left => st.pane = (st.pane + n - 1) % n,
            KeyCode::Char(c @ '1'..='9') => {
                let i = c as usize - '1' as usize;
                if i < n {
                    st.pane = i;
                }
            }
            KeyCode::Char('s') => st.sort[st.pane] = Some(((cur.0 + 1) % cols, cur.1)),
            KeyCode::Char('r') => st.sort[st.pane] = Some((cur.0, !cur.1)),
            _ => {}
        }
    }
}
