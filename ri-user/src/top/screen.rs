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

use super::{TopError, View};
use crate::Error;

/// The header line: the pack and what it watches (processes, hosts).
pub fn title(pack: &str, scope: &str) -> String {
    format!("ri top {pack}  {scope}")
}

/// Where the panes' tables come from: this machine's instruments, or the
/// frames of remote ri's.
pub trait Source {
    /// Reads new tables (every refresh).
    fn refresh(&mut self) -> Result<(), Error>;
    /// The panes as last read.
    fn views(&self) -> &[View];
    /// The header line.
    fn head(&self) -> String;
    /// A line about a problem (a host failed), shown instead of the help.
    fn status(&self) -> Option<String> {
        None
    }
    /// Whether the `h` key switches hosts.
    fn has_hosts(&self) -> bool {
        false
    }
    /// The `h` key: shows the next host alone (after the last, all again).
    fn next_host(&mut self) {}
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

/// `--once`: every pane as a plain-text table under the header `head`.
pub fn plain(out: &mut impl Write, head: &str, panes: &[View]) -> Result<(), Error> {
    writeln!(out, "{head}")?;
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
fn draw(f: &mut Frame, src: &dyn Source, st: &State, help: &str) {
    let panes = src.views();
    let [top, tabs, summary, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(src.head()), top);
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
    let line = src.status().unwrap_or_else(|| help.to_string());
    f.render_widget(Paragraph::new(line), foot);
    let Some(p) = panes.get(st.pane) else {
        return;
    };
    let mut t = p.table.clone();
    let (col, asc) = st.sort[st.pane].unwrap_or((t.default_sort, false));
    t.sort(col, asc);
    f.render_widget(
        Paragraph::new(format!("{}: {}", p.instrument, t.summary)),
        summary,
    );
    let mut w = widths(&t);
    // Room for the sort mark.
    if let Some(n) = w.get_mut(col) {
        *n = (*n).max(t.columns[col].chars().count() + 1);
    }
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
}

/// Restores the terminal when dropped, also on an error.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// The full-screen loop: refresh every `every`, redraw on keys, `q` quits
/// (the caller's panes detach, or its hosts' ri end, when dropped).
pub fn run(src: &mut dyn Source, every: Duration, notes: &[String]) -> Result<(), Error> {
    // Killed, it gives the terminal back first (ratatui::restore).
    crate::signals::catch(ratatui::restore)?;
    let mut term = ratatui::try_init().map_err(TopError::Terminal)?;
    let _restore = Restore;
    let mut keys = "q quit  Tab/1-9 pane  s sort  r reverse".to_string();
    if src.has_hosts() {
        keys.push_str("  h host");
    }
    let help = notes.first().cloned().unwrap_or(keys);
    let mut st = State {
        pane: 0,
        sort: Vec::new(),
    };
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            src.refresh()?;
            next += every;
        }
        // Remote hosts' panes come with their first frames.
        let n = src.views().len();
        st.sort.resize(n, None);
        st.pane = st.pane.min(n.saturating_sub(1));
        term.draw(|f| draw(f, src, &st, &help))
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
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
            KeyCode::Char('h') => src.next_host(),
            _ if n == 0 => {}
            code => st.key(code, &src.views()[st.pane].table, n),
        }
    }
}

impl State {
    /// A key that moves between panes or sorts the current one (`t`).
    fn key(&mut self, code: KeyCode, t: &super::Table, n: usize) {
        let cols = t.columns.len().max(1);
        let cur = self.sort[self.pane].unwrap_or((t.default_sort, false));
        match code {
            KeyCode::Tab | KeyCode::Right => self.pane = (self.pane + 1) % n,
            KeyCode::BackTab | KeyCode::Left => self.pane = (self.pane + n - 1) % n,
            KeyCode::Char(c @ '1'..='9') => {
                let i = c as usize - '1' as usize;
                if i < n {
                    self.pane = i;
                }
            }
            KeyCode::Char('s') => self.sort[self.pane] = Some(((cur.0 + 1) % cols, cur.1)),
            KeyCode::Char('r') => self.sort[self.pane] = Some((cur.0, !cur.1)),
            _ => {}
        }
    }
}
