//! JSON Schemas of the artifacts, generated from the types. `schemas/*.schema.json` are these,
//! committed; a test fails when code and files drift apart (`UPDATE_SCHEMAS=1` rewrites them).

use serde_json::Value;

use crate::baseline::Baseline;
use crate::compare::Noise;
use crate::policy::Policy;
use crate::report::Report;

fn schema<T: schemars::JsonSchema>(id: &str) -> Value {
    let mut v = serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "$id".into(),
            Value::String(format!("https://poisongate.dev/schemas/{id}.schema.json")),
        );
    }
    v
}

/// `(file stem, schema)` for every artifact.
#[must_use]
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        ("baseline", schema::<Baseline>("baseline")),
        ("noise", schema::<Noise>("noise")),
        ("policy", schema::<Policy>("policy")),
        ("report", schema::<Report>("report")),
        ("manifest", schema::<crate::shard::Manifest>("manifest")),
        (
            "summary-header",
            schema::<crate::shard::PartHeader>("summary-header"),
        ),
        (
            "model-scan",
            schema::<crate::scan::ScanReport>("model-scan"),
        ),
        (
            "model-imports",
            schema::<crate::scan::ImportPin>("model-imports"),
        ),
    ]
}
