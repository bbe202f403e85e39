//! Printing results as a table, JSON or YAML.

use clap::ValueEnum;
use serde::Serialize;

/// `-o table|json|yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML, or calls `table` for the table form.
pub fn print<T: Serialize>(format: Format, value: &T, table: impl FnOnce() -> Table) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
        Format::Table => print!("{}", table().render()),
    }
    Ok(())
}

/// A plain text table with a header row, columns padded to their widest cell.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    empty: &'static str,
}

impl Table {
    pub fn new(header: Vec<&'static str>, empty: &'static str) -> Self {
        Self { header, rows: Vec::new(), empty }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        if self.rows.is_empty() {
            return format!("{}\n", self.empty);
        }
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let mut line = |cells: Vec<&str>| {
            let last = cells.len().saturating_sub(1);
            for (i, cell) in cells.iter().enumerate() {
                out.push_str(cell);
                if i < last {
                    let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count());
                    out.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push('\n');
        };
        line(self.header.clone());
        for row in &self.rows {
            line(row.iter().map(String::as_str).collect());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns_to_the_widest_cell() {
        let mut t = Table::new(vec!["KIND", "NAME"], "nothing");
        t.row(vec!["Policy".into(), "a".into()]);
        t.row(vec!["Rollout".into(), "bb".into()]);
        assert_eq!(t.render(), "KIND     NAME\nPolicy   a\nRollout  bb\n");
        assert_eq!(Table::new(vec!["X"], "no objects").render(), "no objects\n");
    }
}
