//! Turning a [`Table`] into bytes, the same bytes every time: CSV (a header row, then the rows;
//! `\n` line ends; fields quoted only when they must be) or JSON (one pretty-printed object,
//! keys in a fixed order, then `\n`). Amounts are decimal strings written with their
//! currency's decimals; nothing in a report depends on the time it is produced.
//!
//! The JSON document is
//!
//! ```json
//! {"report": "budget", "version": 1, "parameters": {…}, "header": {…},
//!  "columns": ["programme", …], "rows": [{"programme": "P1", …}, …]}
//! ```
//!
//! where each row is an object with the columns in order; an empty cell is `null`.

use serde_json::{Map, Value};

use crate::error::{ReportError, Result};
use crate::model::{Format, Parameters, Table};

/// Version of the JSON layout.
pub const JSON_VERSION: i64 = 1;

/// The report's bytes in `format`.
pub fn render(params: &Parameters, table: &Table, format: Format) -> Result<Vec<u8>> {
    match format {
        Format::Csv => csv_bytes(table),
        Format::Json => json_bytes(params, table),
    }
}

fn csv_bytes(table: &Table) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let err = |e: csv::Error| ReportError::Render(e.to_string());
    w.write_record(&table.columns).map_err(err)?;
    for row in &table.rows {
        w.write_record(row.iter().map(|c| c.csv())).map_err(err)?;
    }
    w.into_inner()
        .map_err(|e| ReportError::Render(e.to_string()))
}

fn json_bytes(params: &Parameters, table: &Table) -> Result<Vec<u8>> {
    let mut doc = Map::new();
    doc.insert("report".into(), params.kind.as_str().into());
    doc.insert("version".into(), JSON_VERSION.into());
    doc.insert("parameters".into(), params.to_json());
    doc.insert("header".into(), Value::Object(table.header.clone()));
    doc.insert(
        "columns".into(),
        Value::Array(table.columns.iter().cloned().map(Value::String).collect()),
    );
    let rows = table
        .rows
        .iter()
        .map(|row| {
            Value::Object(
                table
                    .columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| (c.clone(), v.json()))
                    .collect(),
            )
        })
        .collect();
    doc.insert("rows".into(), Value::Array(rows));
    let mut bytes = serde_json::to_vec_pretty(&Value::Object(doc))
        .map_err(|e| ReportError::Render(e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::{Cell, Kind, Request};

    #[test]
    fn csv_and_json_are_stable() {
        let mut t = Table::new(&["a", "b", "c"]);
        t.push(vec![
            Cell::text("x,y"),
            Cell::Money("1.50".into()),
            Cell::Empty,
        ])
        .unwrap();
        t.push(vec![Cell::Int(3), Cell::Bool(true), Cell::text("é\"q")])
            .unwrap();
        assert!(t.push(vec![Cell::Empty]).is_err());
        let p = Request::new(Kind::TrialBalance)
            .resolve(chrono::NaiveDate::MIN)
            .unwrap();
        let csv = String::from_utf8(render(&p, &t, Format::Csv).unwrap()).unwrap();
        assert_eq!(csv, "a,b,c\n\"x,y\",1.50,\n3,true,\"é\"\"q\"\n");
        let json = render(&p, &t, Format::Json).unwrap();
        assert_eq!(json, render(&p, &t, Format::Json).unwrap());
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["report"], "trial-balance");
        assert_eq!(v["rows"][0]["b"], "1.50");
        assert_eq!(v["rows"][0]["c"], Value::Null);
        assert_eq!(v["rows"][1]["a"], 3);
        assert!(json.ends_with(b"}\n"));
    }
}
