//! The evaluation features as the protocol carries them: one input per column or one
//! `[rows, features]` tensor ([`Layout`]), built from a batch's columns.

use std::path::PathBuf;

use polars::prelude::*;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::finding::num;
use crate::source::Batch;

/// A feature's values, as the protocol carries them.
#[derive(Debug, Clone)]
pub enum Column {
    /// Floats (`FP64`).
    F64(Vec<f64>),
    /// Integers (`INT64`).
    I64(Vec<i64>),
    /// Booleans (`BOOL`).
    Bool(Vec<bool>),
    /// Text (`BYTES`, sent as JSON strings).
    Text(Vec<String>),
}

/// A value a probe sets a feature to.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A float.
    F64(f64),
    /// An integer.
    I64(i64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Text(String),
}

impl Cell {
    fn to_json(&self) -> Value {
        match self {
            Self::F64(x) => json!(x),
            Self::I64(x) => json!(x),
            Self::Bool(x) => json!(x),
            Self::Text(x) => json!(x),
        }
    }

    /// The value as reports show it.
    #[must_use]
    pub fn text(&self) -> String {
        match self {
            Self::F64(x) => num(*x),
            Self::I64(x) => x.to_string(),
            Self::Bool(x) => x.to_string(),
            Self::Text(x) => x.clone(),
        }
    }
}

/// One model input.
#[derive(Debug, Clone)]
pub struct Feature {
    /// Column (and input) name.
    pub name: String,
    /// Values, one per row.
    pub values: Column,
}

impl Feature {
    fn datatype(&self) -> &'static str {
        match self.values {
            Column::F64(_) => "FP64",
            Column::I64(_) => "INT64",
            Column::Bool(_) => "BOOL",
            Column::Text(_) => "BYTES",
        }
    }

    /// Whether the feature is categorical (text or boolean).
    #[must_use]
    pub fn is_categorical(&self) -> bool {
        matches!(self.values, Column::Text(_) | Column::Bool(_))
    }

    /// The value of `row`.
    #[must_use]
    pub fn cell(&self, row: usize) -> Cell {
        match &self.values {
            Column::F64(v) => Cell::F64(v[row]),
            Column::I64(v) => Cell::I64(v[row]),
            Column::Bool(v) => Cell::Bool(v[row]),
            Column::Text(v) => Cell::Text(v[row].clone()),
        }
    }

    /// Whether `row` holds `value` (without copying text).
    #[must_use]
    pub fn holds(&self, row: usize, value: &Cell) -> bool {
        match (&self.values, value) {
            (Column::F64(v), Cell::F64(x)) => v[row] == *x,
            (Column::I64(v), Cell::I64(x)) => v[row] == *x,
            (Column::Bool(v), Cell::Bool(x)) => v[row] == *x,
            (Column::Text(v), Cell::Text(x)) => v[row] == *x,
            _ => false,
        }
    }

    /// Parses a value as reports write it into this feature's type; `None` when it does not
    /// fit (a text value for a numeric feature, a fraction for an integer one).
    #[must_use]
    pub fn parse(&self, text: &str) -> Option<Cell> {
        match self.values {
            Column::F64(_) => text.trim().parse::<f64>().ok().map(Cell::F64),
            Column::I64(_) => {
                let x = text.trim().parse::<f64>().ok()?;
                (x.fract() == 0.0 && x.abs() < 9.0e15).then_some(Cell::I64(x as i64))
            }
            Column::Bool(_) => match text.trim() {
                "true" => Some(Cell::Bool(true)),
                "false" => Some(Cell::Bool(false)),
                _ => None,
            },
            Column::Text(_) => Some(Cell::Text(text.to_owned())),
        }
    }

    fn json(&self, rows: &[usize], set: Option<&Cell>) -> Vec<Value> {
        if let Some(c) = set {
            let v = c.to_json();
            return vec![v; rows.len()];
        }
        match &self.values {
            Column::F64(v) => rows.iter().map(|&r| json!(v[r])).collect(),
            Column::I64(v) => rows.iter().map(|&r| json!(v[r])).collect(),
            Column::Bool(v) => rows.iter().map(|&r| json!(v[r])).collect(),
            Column::Text(v) => rows.iter().map(|&r| json!(v[r])).collect(),
        }
    }

    fn f64_at(&self, row: usize, set: Option<&Cell>) -> Option<f64> {
        match (set, &self.values) {
            (Some(Cell::F64(x)), _) => Some(*x),
            (Some(Cell::I64(x)), _) => Some(*x as f64),
            (Some(Cell::Bool(x)), _) => Some(f64::from(u8::from(*x))),
            (Some(Cell::Text(_)), _) => None,
            (None, Column::F64(v)) => Some(v[row]),
            (None, Column::I64(v)) => Some(v[row] as f64),
            (None, Column::Bool(v)) => Some(f64::from(u8::from(v[row]))),
            (None, Column::Text(_)) => None,
        }
    }
}

/// How features travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One input per column, named as the column, with `content_type: pd` (MLServer's pandas
    /// codec: a scikit-learn pipeline gets a DataFrame).
    Columns,
    /// One `[rows, features]` FP64 tensor with this input name, columns in the given order.
    Tensor(String),
}

/// The model inputs of the evaluation rows.
#[derive(Debug, Clone)]
pub struct Features {
    /// Inputs, in the order they are sent.
    pub columns: Vec<Feature>,
    /// Rows.
    pub rows: usize,
    /// Where the rows came from, for errors.
    pub path: PathBuf,
}

impl Features {
    /// Reads the input columns from the batch: `select` in that order, or every column but
    /// `exclude` in file order.
    ///
    /// # Errors
    /// A missing column, a null value (the protocol's tensors carry none), or a type the
    /// protocol has no datatype for.
    pub fn from_batch(batch: &Batch, select: &[String], exclude: &[&str]) -> Result<Self> {
        let path = PathBuf::from(batch.inputs.first().map_or("-", |m| m.path.as_str()));
        let names: Vec<String> = if select.is_empty() {
            batch
                .schema()
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| !exclude.contains(&n.as_str()))
                .collect()
        } else {
            select.to_vec()
        };
        if names.is_empty() {
            return Err(Error::input(
                &path,
                "no feature columns to send to the models",
            ));
        }
        let rows = usize::try_from(batch.rows()).unwrap_or(usize::MAX);
        let mut columns = Vec::with_capacity(names.len());
        for name in names {
            let mut parts = Vec::with_capacity(batch.frames.len());
            for (df, meta) in batch.frames.iter().zip(&batch.inputs) {
                let col = df.column(&name).map_err(|_| {
                    Error::input(
                        std::path::Path::new(&meta.path),
                        format!("feature column `{name}` (--input-col) is missing"),
                    )
                })?;
                parts.push((col.as_materialized_series().clone(), meta.path.clone()));
            }
            columns.push(Feature {
                values: column_values(&name, &parts)?,
                name,
            });
        }
        Ok(Self {
            columns,
            rows,
            path,
        })
    }

    /// The index of the feature named `name`.
    #[must_use]
    pub fn index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The request body for `rows`, with feature `set.0` set to `set.1` on every row.
    pub(super) fn request(
        &self,
        layout: &Layout,
        outputs: &[String],
        rows: &[usize],
        set: Option<&(usize, Cell)>,
    ) -> std::result::Result<Value, String> {
        let n = rows.len();
        let mut body = serde_json::Map::new();
        match layout {
            Layout::Columns => {
                let inputs: Vec<Value> = self
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(j, f)| {
                        let cell = set.filter(|(k, _)| *k == j).map(|(_, c)| c);
                        let mut input = json!({
                            "name": f.name,
                            "shape": [n],
                            "datatype": f.datatype(),
                            "data": f.json(rows, cell),
                        });
                        if matches!(f.values, Column::Text(_)) {
                            input["parameters"] = json!({"content_type": "str"});
                        }
                        input
                    })
                    .collect();
                body.insert("parameters".into(), json!({"content_type": "pd"}));
                body.insert("inputs".into(), Value::Array(inputs));
            }
            Layout::Tensor(name) => {
                let k = self.columns.len();
                let mut data = Vec::with_capacity(n * k);
                for &r in rows {
                    for (j, f) in self.columns.iter().enumerate() {
                        let cell = set.filter(|(i, _)| *i == j).map(|(_, c)| c);
                        data.push(json!(f.f64_at(r, cell).ok_or_else(|| format!(
                            "feature `{}` is text; a tensor input carries numbers only (use --input-layout columns)",
                            f.name
                        ))?));
                    }
                }
                body.insert(
                    "inputs".into(),
                    json!([{"name": name, "shape": [n, k], "datatype": "FP64", "data": data}]),
                );
            }
        }
        if !outputs.is_empty() {
            body.insert(
                "outputs".into(),
                Value::Array(outputs.iter().map(|o| json!({ "name": o })).collect()),
            );
        }
        Ok(Value::Object(body))
    }
}

/// One column's values across the batch's frames.
fn column_values(name: &str, parts: &[(Series, String)]) -> Result<Column> {
    let first = &parts[0].0;
    let dtype = first.dtype().clone();
    let err = |path: &str, cause: String| Error::input(std::path::Path::new(path), cause);
    let null = |path: &str, s: &Series| -> Result<()> {
        if s.null_count() > 0 {
            let row = s
                .is_null()
                .iter()
                .position(|v| v == Some(true))
                .unwrap_or(0);
            return Err(err(
                path,
                format!(
                    "feature column `{name}` is null at row {row}; the inference protocol's tensors carry no nulls (fill them, or leave the column out with --input-col)"
                ),
            ));
        }
        Ok(())
    };
    let cast = |s: &Series, path: &str, to: &DataType| -> Result<Series> {
        s.cast(to)
            .map_err(|e| err(path, format!("feature column `{name}`: {e}")))
    };
    if dtype.is_float() {
        let mut out = Vec::new();
        for (s, path) in parts {
            null(path, s)?;
            let f = cast(s, path, &DataType::Float64)?;
            let ca = f.f64().map_err(|e| err(path, e.to_string()))?;
            for (row, x) in ca.into_no_null_iter().enumerate() {
                if !x.is_finite() {
                    return Err(err(
                        path,
                        format!(
                            "feature column `{name}` holds {x} at row {row}; JSON carries finite numbers only"
                        ),
                    ));
                }
                out.push(x);
            }
        }
        return Ok(Column::F64(out));
    }
    if dtype.is_integer() {
        let mut out = Vec::new();
        for (s, path) in parts {
            null(path, s)?;
            let f = cast(s, path, &DataType::Int64)?;
            let ca = f.i64().map_err(|e| err(path, e.to_string()))?;
            out.extend(ca.into_no_null_iter());
        }
        return Ok(Column::I64(out));
    }
    if dtype.is_bool() {
        let mut out = Vec::new();
        for (s, path) in parts {
            null(path, s)?;
            let ca = s.bool().map_err(|e| err(path, e.to_string()))?;
            out.extend(ca.iter().map(|v| v.unwrap_or_default()));
        }
        return Ok(Column::Bool(out));
    }
    if dtype.is_string() || matches!(dtype, DataType::Categorical(..)) {
        let mut out = Vec::new();
        for (s, path) in parts {
            null(path, s)?;
            let t = cast(s, path, &DataType::String)?;
            let ca = t.str().map_err(|e| err(path, e.to_string()))?;
            out.extend(ca.iter().map(|v| v.unwrap_or_default().to_owned()));
        }
        return Ok(Column::Text(out));
    }
    Err(err(
        &parts[0].1,
        format!(
            "feature column `{name}` has type {dtype}, which the inference protocol cannot carry; leave it out with --input-col"
        ),
    ))
}
