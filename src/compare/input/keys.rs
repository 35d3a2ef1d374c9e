//! Row keys, the join of evaluation features on them, and the segment columns.

use std::collections::HashMap;
use std::path::Path;

use polars::prelude::*;

use super::{Batch, SEGMENT_CATEGORICAL_MAX, SEGMENT_TOP, Segment, Spec, first_path, gather};
use crate::error::{Error, Result};
use crate::finding::num;

/// Checks the key column, and with `--join` reads the joined file's rows in the order of the
/// data's keys (`None` without `--join`).
pub(super) fn key_rows(
    spec: &Spec,
    batch: &Batch,
    join: Option<&Batch>,
    n: usize,
) -> Result<Option<Vec<usize>>> {
    let path = first_path(batch);
    Ok(match (join, &spec.key) {
        (Some(_), None) => {
            return Err(Error::Usage("--join needs --key to join on".into()));
        }
        (Some(j), Some(key)) => Some(align(batch, j, key)?),
        (None, Some(key)) => {
            let s = gather(batch, key, "--key")?;
            let dup = s
                .n_unique()
                .map_err(|e| Error::input(path, format!("column `{key}`: {e}")))?;
            if dup != n {
                return Err(Error::input(
                    path,
                    format!(
                        "key column `{key}` repeats: {} distinct keys in {n} rows; each row needs its own key",
                        dup
                    ),
                ));
            }
            if s.null_count() > 0 {
                return Err(Error::input(path, format!("key column `{key}` has nulls")));
            }
            None
        }
        (None, None) => None,
    })
}

/// The segment columns, from the data or (through the aligned rows) the joined file.
pub(super) fn segments(
    spec: &Spec,
    batch: &Batch,
    join: Option<&Batch>,
    aligned: Option<&[usize]>,
) -> Result<Vec<Segment>> {
    let path = first_path(batch);
    let mut segments = Vec::with_capacity(spec.segments.len());
    for col in &spec.segments {
        let in_data = batch
            .frames
            .first()
            .is_some_and(|df| df.column(col).is_ok());
        let series = match (in_data, join, &aligned) {
            (true, _, _) => gather(batch, col, "--segment")?,
            (false, Some(j), Some(rows)) => {
                let s = gather(j, col, "--segment")?;
                let idx =
                    IdxCa::from_vec("idx".into(), rows.iter().map(|&r| r as IdxSize).collect());
                s.take(&idx).map_err(|e| Error::input(first_path(j), e))?
            }
            _ => {
                return Err(Error::input(
                    path,
                    format!("column `{col}` (--segment) is missing"),
                ));
            }
        };
        segments.push(segment(&series, col)?);
    }
    Ok(segments)
}

/// Reads the joined file's rows in the order of the data's keys. Every key must appear once
/// in each file.
fn align(batch: &Batch, join: &Batch, key: &str) -> Result<Vec<usize>> {
    let data_path = first_path(batch);
    let join_path = first_path(join);
    let keys_of = |b: &Batch, path: &Path| -> Result<Vec<String>> {
        let s = gather(b, key, "--key")?;
        let text = s
            .cast(&DataType::String)
            .map_err(|e| Error::input(path, format!("column `{key}`: {e}")))?;
        let ca = text.str().map_err(|e| Error::input(path, e))?;
        let v: Vec<Option<String>> = ca.iter().map(|v| v.map(str::to_owned)).collect();
        v.into_iter()
            .enumerate()
            .map(|(row, k)| {
                k.ok_or_else(|| {
                    Error::input(path, format!("key column `{key}` is null at row {row}"))
                })
            })
            .collect()
    };
    let data_keys = keys_of(batch, data_path)?;
    let join_keys = keys_of(join, join_path)?;
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    if let Some(k) = data_keys.iter().find(|k| !seen.insert(k.as_str())) {
        return Err(Error::input(
            data_path,
            format!("key `{k}` of column `{key}` occurs more than once"),
        ));
    }
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(join_keys.len());
    for (row, k) in join_keys.iter().enumerate() {
        if index.insert(k.as_str(), row).is_some() {
            return Err(Error::input(
                join_path,
                format!("key `{k}` of column `{key}` occurs more than once"),
            ));
        }
    }
    let mut rows = Vec::with_capacity(data_keys.len());
    let mut missing = 0usize;
    let mut first_missing = None;
    for k in &data_keys {
        match index.get(k.as_str()) {
            Some(&r) => rows.push(r),
            None => {
                missing += 1;
                first_missing.get_or_insert_with(|| k.clone());
            }
        }
    }
    if let Some(k) = first_missing {
        return Err(Error::input(
            join_path,
            format!(
                "key mismatch: {missing} of {} keys of {} have no row here (first: `{k}`)",
                data_keys.len(),
                data_path.display()
            ),
        ));
    }
    if join_keys.len() != data_keys.len() {
        return Err(Error::input(
            join_path,
            format!(
                "key mismatch: {} rows here but {} in {}; each key must occur once in each file",
                join_keys.len(),
                data_keys.len(),
                data_path.display()
            ),
        ));
    }
    Ok(rows)
}

/// Cuts a segment column into groups: categories (the most frequent `SEGMENT_TOP`, then
/// "other") or, for numeric columns with many values, deciles of the column itself.
fn segment(s: &Series, column: &str) -> Result<Segment> {
    let err = |e: PolarsError| Error::Internal(format!("segment `{column}`: {e}"));
    let numeric = s.dtype().is_float()
        || (s.dtype().is_integer() && s.n_unique().map_err(err)? > SEGMENT_CATEGORICAL_MAX);
    if numeric {
        let f = s.cast(&DataType::Float64).map_err(err)?;
        let ca = f.f64().map_err(err)?;
        let mut values: Vec<f64> = ca.iter().flatten().filter(|x| !x.is_nan()).collect();
        values.sort_unstable_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..10)
            .filter_map(|q| {
                let i = (q * values.len()) / 10;
                values.get(i.min(values.len().saturating_sub(1))).copied()
            })
            .collect();
        edges.dedup();
        let mut names = Vec::with_capacity(edges.len() + 2);
        for b in 0..=edges.len() {
            let lo = if b == 0 {
                "-inf".to_owned()
            } else {
                num(edges[b - 1])
            };
            let hi = if b == edges.len() {
                "inf".to_owned()
            } else {
                num(edges[b])
            };
            names.push(format!("({lo}, {hi}]"));
        }
        let null_code = names.len() as u32;
        names.push("null".to_owned());
        let codes = ca
            .iter()
            .map(|v| match v {
                Some(x) if !x.is_nan() => edges.partition_point(|&e| e < x) as u32,
                _ => null_code,
            })
            .collect();
        return Ok(Segment {
            column: column.to_owned(),
            codes,
            names,
        });
    }
    let text = s.cast(&DataType::String).map_err(err)?;
    let ca = text.str().map_err(err)?;
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for v in ca.iter().flatten() {
        *counts.entry(v).or_default() += 1;
    }
    let mut ranked: Vec<(&str, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.truncate(SEGMENT_TOP);
    let mut names: Vec<String> = ranked.iter().map(|(v, _)| (*v).to_owned()).collect();
    let index: HashMap<String, u32> = names
        .iter()
        .enumerate()
        .map(|(i, v)| (v.clone(), i as u32))
        .collect();
    let other = names.len() as u32;
    names.push("other".to_owned());
    let null = names.len() as u32;
    names.push("null".to_owned());
    let codes = ca
        .iter()
        .map(|v| match v {
            Some(v) => index.get(v).copied().unwrap_or(other),
            None => null,
        })
        .collect();
    Ok(Segment {
        column: column.to_owned(),
        codes,
        names,
    })
}
