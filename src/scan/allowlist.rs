//! The globals a model's pickle may import.
//!
//! `allowlist.tsv` lists them one per line, `module<TAB>name<TAB>group`, each group with a
//! `# group NAME: WHY` line saying why its members are safe to construct; it is generated
//! by `scripts/gen_scan_allowlist.py` from the globals that fitted scikit-learn estimators
//! (every one `sklearn.utils.all_estimators()` lists and a tiny fit allows), NumPy, joblib,
//! PyTorch's tensor rebuild, XGBoost and LightGBM wrappers import, minus a hard denylist.
//! Matching is exact on the pair: a prefix rule would let protocol 4's attribute paths walk
//! from an allowed module to anything it imports (`sklearn.base` + `os.system`).

use std::collections::{BTreeMap, BTreeSet};

const BUILT_IN: &str = include_str!("allowlist.tsv");

/// A set of `(module, name)` pairs and the reason for each group.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    pairs: BTreeSet<(String, String)>,
    /// Extra `module.name` entries given by the user (`--allow`).
    extra: BTreeSet<String>,
    groups: BTreeMap<String, String>,
}

impl Allowlist {
    /// The built-in list.
    ///
    /// # Panics
    /// Never on the committed file: a test parses it.
    #[must_use]
    pub fn built_in() -> Self {
        Self::parse(BUILT_IN).unwrap_or_default()
    }

    /// Parses the TSV format; the error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for (n, line) in text.lines().enumerate() {
            if let Some(rest) = line.strip_prefix("# group ") {
                let (name, why) = rest
                    .split_once(':')
                    .ok_or_else(|| format!("line {}: a group line without `NAME: WHY`", n + 1))?;
                out.groups
                    .insert(name.trim().to_owned(), why.trim().to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let mut parts = line.split('\t');
            let (Some(module), Some(name), Some(group), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "line {}: expected module<TAB>name<TAB>group",
                    n + 1
                ));
            };
            if !out.groups.contains_key(group) {
                return Err(format!(
                    "line {}: group {group:?} has no `# group` line",
                    n + 1
                ));
            }
            out.pairs.insert((module.to_owned(), name.to_owned()));
        }
        Ok(out)
    }

    /// Adds `module.name` entries (matched against the joined name).
    #[must_use]
    pub fn with_extra(mut self, extra: impl IntoIterator<Item = String>) -> Self {
        self.extra.extend(extra);
        self
    }

    /// Whether a load may import `module.name`.
    #[must_use]
    pub fn allows(&self, module: &str, name: &str) -> bool {
        self.pairs.contains(&(module.to_owned(), name.to_owned()))
            || self.extra.contains(&format!("{module}.{name}"))
    }

    /// Entries of the built-in part.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the list is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty() && self.extra.is_empty()
    }

    /// The groups and why their members are safe.
    #[must_use]
    pub fn groups(&self) -> &BTreeMap<String, String> {
        &self.groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_list_parses_and_holds_no_denied_callable() {
        let list = Allowlist::parse(BUILT_IN).expect("allowlist.tsv parses");
        assert!(list.len() > 100, "{} entries", list.len());
        for (module, name) in [
            ("posix", "system"),
            ("os", "system"),
            ("builtins", "eval"),
            ("builtins", "exec"),
            ("builtins", "getattr"),
            ("builtins", "__import__"),
            ("functools", "partial"),
            ("operator", "methodcaller"),
            ("operator", "attrgetter"),
            ("pkgutil", "resolve_name"),
            ("pydoc", "locate"),
            ("subprocess", "Popen"),
            ("runpy", "run_path"),
            ("pickle", "loads"),
            ("sklearn.base", "os.system"),
        ] {
            assert!(!list.allows(module, name), "{module}.{name} is allowlisted");
        }
        assert!(list.allows("sklearn.linear_model._logistic", "LogisticRegression"));
        assert!(list.allows("joblib.numpy_pickle", "NumpyArrayWrapper"));
    }

    #[test]
    fn a_line_of_an_undeclared_group_or_the_wrong_shape_is_refused() {
        assert!(
            Allowlist::parse("a\tb\tnope\n")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            Allowlist::parse("# group g: why\na\tb\n")
                .unwrap_err()
                .contains("line 2")
        );
        let ok = Allowlist::parse("# group g: why\na\tb\tg\n").unwrap();
        assert!(ok.allows("a", "b") && !ok.allows("a", "c"));
        assert!(ok.clone().with_extra(["a.c".to_owned()]).allows("a", "c"));
    }
}
