//! The sections of the row-level detectors' codes (`drift-class-conditional` and the
//! `poison-*` codes): each detector declares its codes and their defaults
//! ([`crate::poison::Detector::CODES`]), and the policy reads, defaults, validates, writes and
//! describes them from that declaration, so a new detector needs no edit here.

use serde::{Deserialize, Serialize};

use super::{RateRule, RowRule, RowRules, TriggerRule};

impl RowRule {
    /// Reads a section of the same kind as this one (the detector's default).
    fn read_like<'de, A: serde::de::MapAccess<'de>>(
        &self,
        map: &mut A,
        code: &str,
    ) -> Result<Self, A::Error> {
        let context = |e: A::Error| serde::de::Error::custom(format!("checks.{code}: {e}"));
        Ok(match self {
            Self::Rate(_) => Self::Rate(map.next_value().map_err(context)?),
            Self::Trigger(_) => Self::Trigger(map.next_value().map_err(context)?),
        })
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        match self {
            Self::Rate(_) => generator.subschema_for::<RateRule>(),
            Self::Trigger(_) => generator.subschema_for::<TriggerRule>(),
        }
    }
}

impl Default for RowRules {
    fn default() -> Self {
        Self(
            crate::poison::ROW_CODES
                .iter()
                .flat_map(|c| c.iter())
                .map(|c| (c.info.code, c.rule))
                .collect(),
        )
    }
}

impl Serialize for RowRules {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (code, rule) in &self.0 {
            map.serialize_entry(code, rule)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for RowRules {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RowRules;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of policy sections keyed by finding code")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RowRules, A::Error> {
                let mut rules = RowRules::default();
                let mut seen = std::collections::BTreeSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    let Some(slot) = rules.0.iter_mut().find(|(c, _)| *c == key) else {
                        return Err(serde::de::Error::custom(format!(
                            "unknown field `{key}` in [checks]: not a finding code of this build (`poisongate explain --list` lists them)"
                        )));
                    };
                    if !seen.insert(slot.0) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicate field `{key}` in [checks]"
                        )));
                    }
                    slot.1 = slot.1.read_like(&mut map, slot.0)?;
                }
                Ok(rules)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl schemars::JsonSchema for RowRules {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RowRules".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut properties = serde_json::Map::new();
        for c in crate::poison::ROW_CODES.iter().flat_map(|c| c.iter()) {
            let mut schema = c.rule.schema(generator);
            if let Ok(default) = serde_json::to_value(c.rule) {
                schema.insert("default".to_owned(), default);
            }
            schema.insert(
                "description".to_owned(),
                format!("`{}`: {}", c.info.code, c.info.summary).into(),
            );
            properties.insert(c.info.code.to_owned(), schema.to_value());
        }
        schemars::json_schema!({
            "type": "object",
            "properties": properties,
        })
    }
}
