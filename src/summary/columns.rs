//! Column kinds and typed access to a column's chunks without copying more than a cast.

use polars::prelude::*;
use polars_arrow::array::Utf8ViewArray;
use polars_arrow::bitmap::Bitmap;
use serde::{Deserialize, Serialize};

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
