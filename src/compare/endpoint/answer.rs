//! Decoding an inference answer: the predicted classes and, where the model returns them,
//! the class probabilities, checked against the request's rows.

use serde_json::Value;

use super::{Answers, Options};
use crate::finding::num;

/// Tolerance on a probability row's sum.
const PROBA_SUM_TOLERANCE: f64 = 0.01;

/// A decoded output tensor.
struct Output<'a> {
    name: &'a str,
    shape: Vec<i64>,
    datatype: &'a str,
    data: Vec<&'a Value>,
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => {
            for i in items {
                flatten(i, out);
            }
        }
        other => out.push(other),
    }
}

/// The predicted classes and probabilities in an inference answer.
pub(super) fn decode(
    answer: &Value,
    n: usize,
    options: &Options,
) -> std::result::Result<Answers, String> {
    let outputs = answer
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or("the answer has no `outputs`")?;
    let mut parsed = Vec::with_capacity(outputs.len());
    for o in outputs {
        let name = o.get("name").and_then(Value::as_str).unwrap_or("");
        let shape: Vec<i64> = o
            .get("shape")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        let datatype = o.get("datatype").and_then(Value::as_str).unwrap_or("");
        let mut data = Vec::new();
        if let Some(d) = o.get("data") {
            flatten(d, &mut data);
        }
        parsed.push(Output {
            name,
            shape,
            datatype,
            data,
        });
    }
    let names = || {
        parsed
            .iter()
            .map(|o| format!("`{}` {:?} {}", o.name, o.shape, o.datatype))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let by_name = |want: &str| -> std::result::Result<&Output<'_>, String> {
        parsed
            .iter()
            .find(|o| o.name == want)
            .ok_or_else(|| format!("no output `{want}`; the model returned {}", names()))
    };
    let columns = |o: &Output<'_>| -> Option<usize> {
        match o.shape.as_slice() {
            [r] if *r as usize == n => Some(1),
            [r, c] if *r as usize == n && *c >= 1 => Some(*c as usize),
            _ => None,
        }
    };
    let is_float = |o: &Output<'_>| o.datatype.starts_with("FP");
    let label_out = match &options.label_output {
        Some(name) => Some(by_name(name)?),
        None => parsed.iter().find(|o| columns(o) == Some(1)),
    };
    let proba_out = match &options.proba_output {
        Some(name) => Some(by_name(name)?),
        None => parsed
            .iter()
            .find(|o| is_float(o) && columns(o).is_some_and(|c| c >= 2)),
    };
    let mut out = Answers::default();
    if let Some(name) = answer.get("model_name").and_then(Value::as_str) {
        out.model = Some(match answer.get("model_version").and_then(Value::as_str) {
            Some(v) => format!("{name} version {v}"),
            None => name.to_owned(),
        });
    }
    if let Some(p) = proba_out {
        let c = columns(p).ok_or_else(|| {
            format!(
                "output `{}` has shape {:?}, not [{n}, classes]",
                p.name, p.shape
            )
        })?;
        if c < 2 || p.data.len() != n * c {
            return Err(format!(
                "output `{}` has shape {:?} and {} values; class probabilities need [{n}, classes] with at least 2 classes",
                p.name,
                p.shape,
                p.data.len()
            ));
        }
        let mut proba = Vec::with_capacity(n * c);
        for v in &p.data {
            let x = v
                .as_f64()
                .ok_or_else(|| format!("output `{}` holds {v}, not a number", p.name))?;
            proba.push(x);
        }
        for (r, row) in proba.chunks(c).enumerate() {
            let sum: f64 = row.iter().sum();
            if row.iter().any(|x| !(-1e-9..=1.0 + 1e-9).contains(x))
                || (sum - 1.0).abs() > PROBA_SUM_TOLERANCE
            {
                return Err(format!(
                    "output `{}` is not class probabilities (row {r} sums to {}); name the probability output with --proba-output, or the class output alone with --label-output",
                    p.name,
                    num(sum)
                ));
            }
        }
        out.proba = proba.into_iter().map(|x| x.clamp(0.0, 1.0)).collect();
        out.proba_classes = c;
    }
    match label_out {
        Some(l) if !std::ptr::eq(l, proba_out.map_or(std::ptr::null(), |p| p as *const _)) => {
            if l.data.len() != n {
                return Err(format!(
                    "output `{}` has {} values for {n} rows",
                    l.name,
                    l.data.len()
                ));
            }
            out.labels = l
                .data
                .iter()
                .map(|v| class_text(v, l))
                .collect::<std::result::Result<_, _>>()?;
        }
        _ => {
            if out.proba_classes == 0 {
                return Err(format!(
                    "cannot tell the predicted class from the outputs ({}); name it with --label-output",
                    names()
                ));
            }
            // Only probabilities: the class is the column of the largest (its index, which is
            // scikit-learn's class for integer labels 0..k-1).
            out.labels = out
                .proba
                .chunks(out.proba_classes)
                .map(|row| {
                    let mut best = 0;
                    for (j, &x) in row.iter().enumerate() {
                        if x > row[best] {
                            best = j;
                        }
                    }
                    best.to_string()
                })
                .collect();
        }
    }
    Ok(out)
}

/// A predicted class as text: integers as integers, text as is.
fn class_text(v: &Value, o: &Output<'_>) -> std::result::Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(x) => {
            if let Some(i) = x.as_i64() {
                return Ok(i.to_string());
            }
            match x.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(format!("{}", f as i64)),
                _ => Err(format!(
                    "output `{}` ({}) holds {x}, not a class; name the class output with --label-output",
                    o.name, o.datatype
                )),
            }
        }
        other => Err(format!("output `{}` holds {other}, not a class", o.name)),
    }
}
