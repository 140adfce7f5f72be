//! One view of many hosts' panes: each pane's rows from every host, a
//! `host` column first, the columns matched by name.

use super::{Table, View, model::Cell};

/// Each host's panes, as its last frame gave them (`None`: no frame).
pub type Frames<'a> = [(&'a str, Option<&'a [View]>)];

/// The panes of `frames` merged (those of `only` alone when set): the
/// panes of the first host that sent any, in its order.
pub fn views(frames: &Frames, only: Option<&str>) -> Vec<View> {
    let Some(layout) = frames.iter().find_map(|(_, v)| *v) else {
        return Vec::new();
    };
    let shown: Vec<(&str, &[View])> = frames
        .iter()
        .filter(|(h, _)| only.is_none_or(|o| o == *h))
        .filter_map(|(h, v)| v.map(|v| (*h, v)))
        .collect();
    layout
        .iter()
        .map(|pane| {
            let tables: Vec<(&str, &Table)> = (shown.iter())
                .filter_map(|(h, v)| {
                    let p = v.iter().find(|p| p.instrument == pane.instrument)?;
                    Some((*h, &p.table))
                })
                .collect();
            View {
                title: pane.title.clone(),
                instrument: pane.instrument.clone(),
                table: table(&tables, only.is_some()),
            }
        })
        .collect()
}

/// One table of every host's rows. Its columns are those of the first
/// table with rows (a table without rows may have fewer: no key seen yet).
fn table(tables: &[(&str, &Table)], one: bool) -> Table {
    let Some((_, first)) = tables
        .iter()
        .find(|(_, t)| !t.rows.is_empty())
        .or(tables.first())
    else {
        return Table::default();
    };
    let mut columns = vec!["host".to_string()];
    columns.extend(first.columns.iter().cloned());
    let mut rows = Vec::new();
    for (host, t) in tables {
        // Where each of the merged columns is in this host's table.
        let at: Vec<Option<usize>> = (first.columns.iter())
            .map(|c| t.columns.iter().position(|x| x == c))
            .collect();
        for r in &t.rows {
            let mut row = vec![Cell::text(host.to_string())];
            row.extend(at.iter().map(|i| {
                i.and_then(|i| r.get(i).cloned())
                    .unwrap_or_else(|| Cell::text(String::new()))
            }));
            rows.push(row);
        }
    }
    Table {
        summary: summary(tables, &columns, &rows, one),
        columns,
        rows,
        default_sort: first.default_sort + 1,
    }
}

/// One host's own summary; over many, the hosts, their total rate (when
/// the table has one) and the rows.
fn summary(tables: &[(&str, &Table)], columns: &[String], rows: &[Vec<Cell>], one: bool) -> String {
    if let (true, [(host, t)]) = (one, tables) {
        return format!("{host}: {}", t.summary);
    }
    let mut s = format!(
        "{} {}",
        tables.len(),
        if tables.len() == 1 { "host" } else { "hosts" }
    );
    if let Some(c) = columns.iter().position(|c| c == "/s") {
        let total: f64 = (rows.iter())
            .filter_map(|r| match r.get(c).map(|x| &x.key) {
                Some(super::model::Key::Num(v)) => Some(*v),
                _ => None,
            })
            .sum();
        s.push_str(&format!(", {total:.1}/s in all"));
    }
    s.push_str(&format!(", {} rows", rows.len()));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::Key;

    fn num(v: f64) -> Cell {
        Cell {
            text: format!("{v:.1}"),
            key: Key::Num(v),
        }
    }

    fn pane(columns: &[&str], rows: Vec<Vec<Cell>>) -> Vec<View> {
        vec![View {
            title: "requests".into(),
            instrument: "motr.fops".into(),
            table: Table {
                summary: "s".into(),
                columns: columns.iter().map(|c| c.to_string()).collect(),
                rows,
                default_sort: 1,
            },
        }]
    }

    #[test]
    fn rows_of_every_host_name_it_and_sort_together() {
        let a = pane(
            &["opcode", "/s", "total"],
            vec![vec![Cell::text("write (42)".into()), num(5.0), num(50.0)]],
        );
        // No key yet on b: fewer columns, no rows.
        let b = pane(&["key", "/s", "total"], vec![]);
        let c = pane(
            &["opcode", "/s", "total"],
            vec![vec![Cell::text("write (42)".into()), num(7.0), num(70.0)]],
        );
        let frames = [
            ("n1", Some(&a[..])),
            ("n2", Some(&b[..])),
            ("n3", Some(&c[..])),
        ];
        let mut v = views(&frames, None);
        let t = &mut v[0].table;
        assert_eq!(t.columns, ["host", "opcode", "/s", "total"]);
        assert_eq!(t.summary, "3 hosts, 12.0/s in all, 2 rows");
        t.sort(t.default_sort, false);
        assert_eq!(t.rows[0][0].text, "n3");
        assert_eq!(t.rows[1][0].text, "n1");
        let one = views(&frames, Some("n1"));
        assert_eq!(one[0].table.rows.len(), 1);
        assert_eq!(one[0].table.summary, "n1: s");
        assert!(views(&[("n1", None)], None).is_empty());
    }
}
