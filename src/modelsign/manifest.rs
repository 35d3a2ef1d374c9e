//! The signed manifest of a model: the in-toto Statement v1 with predicate type
//! `https://model_signing/signature/v1.0` (ossf/model-signing-spec v1.0; the reference
//! implementation is `model_signing/_signing/signing.py`, class `Payload`).
//!
//! The predicate lists every file (or file shard) with its digest, sorted by path, and how the
//! model was serialised; the statement's one subject is the model's name with SHA-256 over the
//! concatenated raw digests in that order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The in-toto statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The model-signing predicate type (v1.0).
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// The predicate type of model_signing 0.2 (refused: its manifests carry no serialization).
const PREDICATE_TYPE_V02: &str = "https://model_signing/Digests/v0.1";

/// An in-toto statement carrying a model manifest.
#[derive(Debug, Serialize, Deserialize)]
pub struct Statement {
    /// [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// Exactly one: the model's name and root digest.
    pub subject: Vec<Subject>,
    /// [`PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The manifest.
    pub predicate: Predicate,
}

/// An in-toto resource descriptor with a SHA-256 digest.
#[derive(Debug, Serialize, Deserialize)]
pub struct Subject {
    /// The model's name (its directory's name).
    pub name: String,
    /// `{"sha256": hex}`.
    pub digest: BTreeMap<String, String>,
}

/// The model-signing predicate. Fields beyond these two are ignored, as v1.0 requires.
#[derive(Debug, Serialize, Deserialize)]
pub struct Predicate {
    /// How the model was turned into resources.
    pub serialization: Serialization,
    /// Every signed file or shard, sorted by path.
    pub resources: Vec<Resource>,
}

/// The serialization a manifest was made with. It is part of what is signed, so the verifier
/// follows it and no flag widens it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Serialization {
    /// `files` or `shards`.
    pub method: String,
    /// The digest of each resource: `sha256` (the only one this verifier implements).
    pub hash_type: String,
    /// Whether symbolic links to files were followed when signing.
    pub allow_symlinks: bool,
    /// Paths relative to the model directory that were not signed (and a directory's
    /// descendants).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_paths: Vec<String>,
    /// The shard size in bytes, for `shards`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    pub shard_size: Option<u64>,
}

/// A whole number that may be written as a float: the predicate is a `google.protobuf.Struct`,
/// whose numbers are doubles, so the reference tool writes a shard size of 4096 as `4096.0`.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(v) = Option::<f64>::deserialize(d)? else {
        return Ok(None);
    };
    // Exact below 2^53, which any shard size is.
    if v.fract() != 0.0 || !(0.0..9.007_199_254_740_992e15).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "shard_size {v} is not a whole number of bytes"
        )));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(Some(v as u64))
}

impl Serialization {
    /// The `algorithm` of each resource: the hash type for files, `{hash}-sharded-{size}` for
    /// shards (`model_signing/_hashing/io.py`, `ShardedFileHasher.digest_name`).
    #[must_use]
    pub fn resource_algorithm(&self) -> String {
        match (self.method.as_str(), self.shard_size) {
            ("shards", Some(n)) => format!("{}-sharded-{n}", self.hash_type),
            _ => self.hash_type.clone(),
        }
    }
}

/// One signed file or shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resource {
    /// The file's path relative to the model directory, `/`-separated; for shards
    /// `path:start:end`.
    pub name: String,
    /// The digest's algorithm: the serialization's `hash_type`.
    pub algorithm: String,
    /// Hex digest.
    pub digest: String,
}

/// What a signed file or shard names: a path and, for shards, a byte range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// The path's components (sorted component-wise, as Python's `PurePosixPath` sorts).
    pub path: Vec<String>,
    /// `[start, end)` for a shard; `None` for a whole file.
    pub range: Option<(u64, u64)>,
}

impl Key {
    /// The path as the manifest writes it.
    #[must_use]
    pub fn path_str(&self) -> String {
        self.path.join("/")
    }

    /// The resource name: the path, plus `:start:end` for a shard.
    #[must_use]
    pub fn name(&self) -> String {
        match self.range {
            None => self.path_str(),
            Some((s, e)) => format!("{}:{s}:{e}", self.path_str()),
        }
    }
}

/// Splits a signed path into components, refusing any that could name a file outside the model
/// directory or a file other than the one it seems to name: an absolute path, `..`, `.`, an
/// empty component (`a//b`), a backslash (a separator on Windows) or a NUL.
///
/// # Errors
/// Why the name is refused.
pub fn safe_components(name: &str) -> std::result::Result<Vec<String>, &'static str> {
    if name.is_empty() {
        return Err("an empty path");
    }
    if name.starts_with('/') {
        return Err("an absolute path");
    }
    if name.contains('\\') || name.contains('\0') {
        return Err("a backslash or NUL in the path");
    }
    let mut out = Vec::new();
    for part in name.split('/') {
        match part {
            ".." => return Err("a `..` component, which would leave the model directory"),
            "." | "" => return Err("a `.` or empty component (not a canonical path)"),
            _ => out.push(part.to_owned()),
        }
    }
    Ok(out)
}

/// Why a statement cannot be evaluated at all (exit 2), as opposed to a signed manifest that
/// fails (exit 1).
#[derive(Debug)]
pub enum Refusal {
    /// Not a model-signing v1.0 statement, or a serialization this verifier does not implement.
    Unsupported(String),
}

/// A statement's manifest, checked for internal consistency.
#[derive(Debug)]
pub struct Manifest {
    /// The subject's name.
    pub model_name: String,
    /// The serialization.
    pub serialization: Serialization,
    /// Each signed resource with its raw digest.
    pub resources: BTreeMap<Key, Vec<u8>>,
    /// Problems of the manifest itself: unsafe or duplicate names, a root digest that does
    /// not match. Each blocks.
    pub problems: Vec<String>,
}

impl Manifest {
    /// Reads a verified payload.
    ///
    /// # Errors
    /// A payload that is not a model-signing v1.0 statement, or uses a hash or method this
    /// verifier does not implement.
    pub fn from_payload(payload: &[u8]) -> std::result::Result<Self, Refusal> {
        let unsupported = |m: String| Refusal::Unsupported(m);
        let value: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|e| unsupported(format!("the signed payload is not JSON: {e}")))?;
        let predicate_type = value.get("predicateType").and_then(|v| v.as_str());
        if predicate_type == Some(PREDICATE_TYPE_V02) {
            return Err(unsupported(format!(
                "predicate type {PREDICATE_TYPE_V02} (model_signing 0.2) is not supported; re-sign with model_signing 1.x"
            )));
        }
        let statement: Statement = serde_json::from_value(value)
            .map_err(|e| unsupported(format!("not a model-signing statement: {e}")))?;
        if statement.type_ != STATEMENT_TYPE {
            return Err(unsupported(format!(
                "statement type {:?} is not {STATEMENT_TYPE}",
                statement.type_
            )));
        }
        if statement.predicate_type != PREDICATE_TYPE {
            return Err(unsupported(format!(
                "predicate type {:?} is not {PREDICATE_TYPE}",
                statement.predicate_type
            )));
        }
        let ser = statement.predicate.serialization;
        if ser.hash_type != "sha256" {
            return Err(unsupported(format!(
                "hash type {:?} is not supported (sha256 only)",
                ser.hash_type
            )));
        }
        match (ser.method.as_str(), ser.shard_size) {
            ("files", _) => {}
            ("shards", Some(n)) if n > 0 => {}
            ("shards", _) => {
                return Err(unsupported(
                    "a `shards` serialization without a positive shard_size".into(),
                ));
            }
            (m, _) => {
                return Err(unsupported(format!(
                    "serialization method {m:?} is not supported (files, shards)"
                )));
            }
        }
        let [subject] = statement.subject.as_slice() else {
            return Err(unsupported(format!(
                "{} subjects; a model signature has exactly one",
                statement.subject.len()
            )));
        };
        let mut problems = Vec::new();
        let mut resources = BTreeMap::new();
        let algorithm = ser.resource_algorithm();
        let mut root = sha2::Sha256::new();
        for r in &statement.predicate.resources {
            let raw = hex::decode(&r.digest).ok().filter(|d| d.len() == 32);
            let Some(raw) = raw else {
                problems.push(format!(
                    "signed resource {:?}: digest is not 64 hex digits",
                    r.name
                ));
                continue;
            };
            root.update(&raw);
            if r.algorithm != algorithm {
                problems.push(format!(
                    "signed resource {:?}: algorithm {:?} is not the serialization's {algorithm:?}",
                    r.name, r.algorithm
                ));
            }
            match parse_key(&r.name, ser.shard_size.filter(|_| ser.method == "shards")) {
                Ok(key) => {
                    if resources.insert(key, raw).is_some() {
                        problems.push(format!("signed resource {:?} is listed twice", r.name));
                    }
                }
                Err(why) => problems.push(format!("signed resource {:?} refused: {why}", r.name)),
            }
        }
        let root = hex::encode(root.finalize());
        match subject.digest.get("sha256") {
            Some(d) if d.eq_ignore_ascii_case(&root) => {}
            Some(d) => problems.push(format!(
                "the manifest is inconsistent: the subject's digest {d} is not the digest of its resources ({root})"
            )),
            None => problems.push("the subject has no sha256 digest".into()),
        }
        Ok(Self {
            model_name: subject.name.clone(),
            serialization: ser,
            resources,
            problems,
        })
    }
}

/// Parses a resource name: a safe path, and for shards a `:start:end` range (split from the
/// right, so a path may hold colons).
fn parse_key(name: &str, shard_size: Option<u64>) -> std::result::Result<Key, String> {
    let Some(size) = shard_size else {
        return Ok(Key {
            path: safe_components(name)?,
            range: None,
        });
    };
    let bad = || "a shard name is `path:start:end`".to_owned();
    let (rest, end) = name.rsplit_once(':').ok_or_else(bad)?;
    let (path, start) = rest.rsplit_once(':').ok_or_else(bad)?;
    let (start, end): (u64, u64) = (
        start.parse().map_err(|_| bad())?,
        end.parse().map_err(|_| bad())?,
    );
    if start > end || end - start > size || start % size != 0 {
        return Err(format!("shard {start}:{end} is not a shard of size {size}"));
    }
    Ok(Key {
        path: safe_components(path)?,
        range: Some((start, end)),
    })
}

/// Builds the statement for `resources` (sorted), as `model_signing` would.
#[must_use]
pub fn statement(
    model_name: &str,
    serialization: Serialization,
    resources: &BTreeMap<Key, Vec<u8>>,
) -> Statement {
    let mut root = sha2::Sha256::new();
    let mut list = Vec::with_capacity(resources.len());
    let algorithm = serialization.resource_algorithm();
    for (key, digest) in resources {
        root.update(digest);
        list.push(Resource {
            name: key.name(),
            algorithm: algorithm.clone(),
            digest: hex::encode(digest),
        });
    }
    Statement {
        type_: STATEMENT_TYPE.into(),
        subject: vec![Subject {
            name: model_name.into(),
            digest: BTreeMap::from([("sha256".to_owned(), hex::encode(root.finalize()))]),
        }],
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Predicate {
            serialization,
            resources: list,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_names_that_leave_the_directory_or_are_not_canonical() {
        assert_eq!(safe_components("a/b.bin").unwrap(), ["a", "b.bin"]);
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a\\b",
            "x/",
        ] {
            assert!(safe_components(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sorts_component_wise_like_python_pathlib() {
        // "a.b" < "a/c" as strings ('.' < '/'), but pathlib compares ["a"] < ["a.b"].
        let k = |p: &str| Key {
            path: safe_components(p).unwrap(),
            range: None,
        };
        let mut keys = [k("a.b"), k("a/c"), k("a")];
        keys.sort();
        let names: Vec<String> = keys.iter().map(Key::name).collect();
        assert_eq!(names, ["a", "a/c", "a.b"]);
    }

    #[test]
    fn shard_names_split_from_the_right() {
        let key = parse_key("dir/we:ird:0:10", Some(10)).unwrap();
        assert_eq!(key.path, ["dir", "we:ird"]);
        assert_eq!(key.range, Some((0, 10)));
        assert!(parse_key("f:5:10", Some(10)).is_err());
        assert!(parse_key("f:0:11", Some(10)).is_err());
        assert!(parse_key("f", Some(10)).is_err());
    }

    #[test]
    fn an_inconsistent_root_digest_and_unsafe_names_are_problems() {
        let ser = Serialization {
            method: "files".into(),
            hash_type: "sha256".into(),
            allow_symlinks: false,
            ignore_paths: vec![],
            shard_size: None,
        };
        let resources = BTreeMap::from([(
            Key {
                path: vec!["w.bin".into()],
                range: None,
            },
            vec![1; 32],
        )]);
        let mut st = statement("m", ser, &resources);
        let good = serde_json::to_vec(&st).unwrap();
        assert!(Manifest::from_payload(&good).unwrap().problems.is_empty());
        st.predicate.resources[0].name = "../w.bin".into();
        let evil = Manifest::from_payload(&serde_json::to_vec(&st).unwrap()).unwrap();
        assert!(evil.problems[0].contains("refused"), "{:?}", evil.problems);
        st.predicate.resources[0].name = "w.bin".into();
        st.predicate.resources[0].digest = hex::encode([2; 32]);
        let edited = Manifest::from_payload(&serde_json::to_vec(&st).unwrap()).unwrap();
        assert!(
            edited.problems[0].contains("inconsistent"),
            "{:?}",
            edited.problems
        );
        st.predicate.serialization.hash_type = "blake2".into();
        assert!(Manifest::from_payload(&serde_json::to_vec(&st).unwrap()).is_err());
    }
}
