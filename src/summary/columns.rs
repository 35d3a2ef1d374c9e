//! Column kinds and typed access to a column's chunks without copying more than a cast.

use polars::prelude::*;
use polars_arrow::array::Utf8ViewArray;
use polars_arrow::bitmap::Bitmap;
use serde::{Deserialize, Serialize};

use super::{CategoricalPlan, CategoricalSummary, NumericPlan, NumericSummary};
use crate::error::{Error, Result};

/// How poisongate treats a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Integers, floats, dates and times (by their physical value): binned.
    Numeric,
    /// Strings, categoricals, enums and booleans: counted by value.
    Categorical,
    /// Nested and binary types: schema checks only.
    Unsupported,
}

/// The kind of a polars dtype.
#[must_use]
pub fn kind_of(dtype: &DataType) -> Kind {
    if dtype.is_primitive_numeric() || dtype.is_temporal() {
        Kind::Numeric
    } else if dtype.is_string() || dtype.is_categorical() || dtype.is_enum() || dtype.is_bool() {
        Kind::Categorical
    } else {
        Kind::Unsupported
    }
}

fn cast_error(series: &Series, e: &PolarsError) -> Error {
    Error::Internal(format!("column `{}` could not be cast: {e}", series.name()))
}

/// Calls `f` with each chunk of a numeric column as `f64` values and its validity bitmap.
///
/// # Errors
/// A column that cannot be cast to `f64`.
pub fn for_each_f64_chunk(
    series: &Series,
    mut f: impl FnMut(&[f64], Option<&Bitmap>),
) -> Result<()> {
    let owned;
    let s = if series.dtype() == &DataType::Float64 {
        series
    } else {
        let physical = series.to_physical_repr();
        owned = physical
            .cast(&DataType::Float64)
            .map_err(|e| cast_error(series, &e))?;
        &owned
    };
    let ca = s.f64().map_err(|e| cast_error(series, &e))?;
    for arr in ca.downcast_iter() {
        f(arr.values().as_slice(), arr.validity());
    }
    Ok(())
}

/// Folds a numeric column into `summary` chunk by chunk in its physical type: floats and
/// integers are read in place (no cast to a float copy); anything else is cast to `f64`.
///
/// # Errors
/// A column that cannot be cast to `f64`.
pub fn summarise_numeric(
    series: &Series,
    plan: &NumericPlan,
    summary: &mut NumericSummary,
) -> Result<()> {
    let physical = series.to_physical_repr();
    let err = |e: PolarsError| cast_error(series, &e);
    macro_rules! fold {
        ($ca:expr) => {{
            for arr in $ca.map_err(err)?.downcast_iter() {
                #[allow(clippy::cast_precision_loss, clippy::cast_lossless)]
                summary.update_with(plan, arr.values().as_slice(), arr.validity(), |&v| v as f64);
            }
        }};
    }
    match physical.dtype() {
        DataType::Float64 => fold!(physical.f64()),
        DataType::Float32 => fold!(physical.f32()),
        DataType::Int64 => fold!(physical.i64()),
        DataType::Int32 => fold!(physical.i32()),
        DataType::Int16 => fold!(physical.i16()),
        DataType::Int8 => fold!(physical.i8()),
        DataType::UInt64 => fold!(physical.u64()),
        DataType::UInt32 => fold!(physical.u32()),
        DataType::UInt16 => fold!(physical.u16()),
        DataType::UInt8 => fold!(physical.u8()),
        _ => for_each_f64_chunk(series, |v, valid| summary.update(plan, v, valid))?,
    }
    Ok(())
}

/// Folds a categorical column into `summary`. Integer-typed categoricals (class labels) are
/// counted as integers and named once per distinct value, instead of formatting every row.
///
/// # Errors
/// A column that cannot be cast to strings.
pub fn summarise_categorical(
    series: &Series,
    plan: &CategoricalPlan,
    summary: &mut CategoricalSummary,
) -> Result<()> {
    if series.dtype().is_integer() {
        let wide = series
            .cast(&DataType::Int64)
            .map_err(|e| cast_error(series, &e))?;
        for arr in wide
            .i64()
            .map_err(|e| cast_error(series, &e))?
            .downcast_iter()
        {
            summary.update_ints(plan, arr.values().as_slice(), arr.validity());
        }
        return Ok(());
    }
    for_each_str_chunk(series, |arr| summary.update(plan, arr))
}

/// Calls `f` with each chunk of a column rendered as strings.
///
/// # Errors
/// A column that cannot be cast to strings.
pub fn for_each_str_chunk(series: &Series, mut f: impl FnMut(&Utf8ViewArray)) -> Result<()> {
    let owned;
    let s = if series.dtype().is_string() {
        series
    } else {
        owned = series
            .cast(&DataType::String)
            .map_err(|e| cast_error(series, &e))?;
        &owned
    };
    let ca = s.str().map_err(|e| cast_error(series, &e))?;
    for arr in ca.downcast_iter() {
        f(arr);
    }
    Ok(())
}
