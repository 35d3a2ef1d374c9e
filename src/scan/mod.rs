//! `verify --scan`: model artifacts judged by what loading them would import, never loaded.
//!
//! A pickle, a joblib dump or a PyTorch checkpoint runs whatever callables it names the
//! moment it is deserialized. Scanners that look for known-bad names are only as good as
//! their last bypass report (`operator.methodcaller`, `functools.partial`,
//! `pkgutil.resolve_name`, ... reach `os.system` past them), so this scan works the other
//! way round: it walks every pickle as a stack machine ([`pickle`]), records every global
//! a load would import and every call it would make, and anything outside an **allowlist**
//! of the globals ordinary models need ([`allowlist`]) is unsafe. A pin (`--pin-imports`)
//! records the exact set a trusted artifact imports; a candidate that imports anything new
//! is blocked even when that callable is allowlisted.
//!
//! Formats ([`formats`]): raw pickle (protocols 0–5, several in a row), joblib (plain, and
//! compressed with zlib, gzip, bz2, lzma, xz or lz4; NumPy array data between the
//! opcodes), PyTorch zip checkpoints (every `*.pkl` member; storages checked against the
//! sizes and offsets the tensors claim), NumPy `.npy`/`.npz` (object arrays carry pickles),
//! safetensors (header bounds and dtypes) and Keras `.keras` archives (a `Lambda` layer or a
//! custom object is code). Anything else, and anything malformed, cannot be judged: exit 2.
//! Every walk is bounded in opcodes, values held, nesting and time, and running out of any
//! of them is exit 2, never a pass.

pub mod allowlist;
pub mod formats;
pub mod pickle;
pub mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

pub use allowlist::Allowlist;
pub use formats::scan_file;
pub use verdict::{ScanReport, scan_all};

/// The finding code of a callable outside the allowlist (or a call the scan cannot name).
pub const UNSAFE: &str = "integrity-model-unsafe";
/// The finding code of a callable the pinned trusted artifact did not import.
pub const NEW_IMPORT: &str = "integrity-model-imports";

/// Limits of one file's scan. Running out of any is exit 2.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Opcodes walked, over every pickle of the file.
    pub max_ops: u64,
    /// Values created on the simulated stacks and memos (each a few dozen bytes).
    pub max_values: u64,
    /// How deep pickles may nest in one another (bytes that are pickles, object arrays).
    pub max_nesting: u32,
    /// Decompressed bytes of one compressed stream or archive member.
    pub max_inflated: u64,
    /// Wall-clock time for the file.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // A fitted scikit-learn forest of 500 trees is about 10^5 opcodes; a PyTorch
            // state dict of 10^4 tensors about 3·10^5.
            max_ops: 50_000_000,
            max_values: 20_000_000,
            max_nesting: 8,
            max_inflated: 64 << 30,
            time: Duration::from_secs(600),
        }
    }
}

/// What one file's walk has used of its [`Limits`].
#[derive(Debug)]
pub struct Budget {
    ops: u64,
    values: u64,
    max_ops: u64,
    max_values: u64,
    /// See [`Limits::max_nesting`].
    pub max_nesting: u32,
    deadline: Instant,
}

impl Budget {
    /// A fresh budget for one file.
    #[must_use]
    pub fn new(limits: &Limits) -> Self {
        Self {
            ops: 0,
            values: 0,
            max_ops: limits.max_ops,
            max_values: limits.max_values,
            max_nesting: limits.max_nesting,
            deadline: Instant::now() + limits.time,
        }
    }
    fn op(&mut self) -> Result<(), &'static str> {
        self.ops += 1;
        if self.ops > self.max_ops {
            return Err("more opcodes than the scan's limit");
        }
        if self.ops.is_multiple_of(1 << 16) && Instant::now() > self.deadline {
            return Err("the scan ran out of time");
        }
        Ok(())
    }
    fn value(&mut self) -> Result<(), &'static str> {
        self.values += 1;
        if self.values > self.max_values {
            return Err("more values than the scan's limit");
        }
        Ok(())
    }
}

/// A global a load would import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The module as written (empty for a call the scan cannot name).
    pub module: String,
    /// The attribute (dotted for protocol 4's attribute paths).
    pub name: String,
    /// Offset of the opcode in the stream walked (the decompressed stream, the member).
    pub offset: u64,
    /// The opcode (or construct) that imports or calls it.
    pub opcode: &'static str,
}

impl Import {
    /// `module.name`, or the description of an unnamed call.
    #[must_use]
    pub fn callable(&self) -> String {
        if self.module.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.module, self.name)
        }
    }
}

/// A persistent id of the PyTorch form `('storage', kind, key, location, numel)`.
#[derive(Debug, Clone)]
pub struct StorageRef {
    /// The storage class (`torch.FloatStorage`).
    pub kind: String,
    /// The record's key (`data/<key>`).
    pub key: Option<String>,
    /// Elements the storage holds.
    pub numel: Option<i64>,
}

/// A tensor view over a storage (`torch._utils._rebuild_tensor_v2`).
#[derive(Debug, Clone)]
pub struct TensorRef {
    /// The storage's key.
    pub key: Option<String>,
    /// Offset into the storage, in elements.
    pub offset: Option<i64>,
    /// Size per dimension.
    pub size: Option<Vec<i64>>,
    /// Stride per dimension.
    pub stride: Option<Vec<i64>>,
}

/// What the walk of one member found.
#[derive(Debug, Default)]
pub struct Walked {
    /// Every global imported, by `module.name`, with its first occurrence.
    pub imports: BTreeMap<String, Import>,
    /// Calls of values that are not imported globals, and other constructs the scan cannot
    /// name: always unsafe.
    pub uncallable: Vec<Import>,
    /// Persistent ids (`None`: not of the PyTorch storage form).
    pub persistent: Vec<Option<StorageRef>>,
    /// Tensor views built over storages.
    pub tensors: Vec<TensorRef>,
    /// Pickles found nested in this one.
    pub nested: u32,
    /// Bytes of NumPy array data skipped in a joblib stream.
    pub array_bytes: u64,
}

/// How a member's imports are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A pickle: every import must be allowlisted.
    Pickle,
    /// A pickle inside a PyTorch archive: as [`Rule::Pickle`], and its persistent ids are
    /// the archive's storages.
    Torch,
    /// A Keras config: `keras.*` classes are safe except `Lambda`; any other module is a
    /// custom object, which is code.
    Keras,
}

/// One member of a scanned file (the file itself for a single stream).
#[derive(Debug)]
pub struct Member {
    /// The member's name in its archive ("" for the file itself).
    pub name: String,
    /// How its imports are judged.
    pub rule: Rule,
    /// What the walk found.
    pub walked: Walked,
}

/// The scan of one file.
#[derive(Debug)]
pub struct Scanned {
    /// The format recognised (`joblib (gzip)`, `pytorch zip`, ...).
    pub format: String,
    /// Every member walked.
    pub members: Vec<Member>,
}

/// One unsafe thing a load would do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Unsafe {
    /// [`UNSAFE`] or [`NEW_IMPORT`].
    pub code: &'static str,
    /// The archive member ("" for the file itself).
    pub member: String,
    /// Offset of the opcode in the member's (decompressed) stream.
    pub offset: u64,
    /// The opcode.
    pub opcode: &'static str,
    /// The callable, `module.name`.
    pub callable: String,
    /// Why it is unsafe.
    pub why: String,
}

impl Scanned {
    /// Every import of every member, as `module.name`.
    #[must_use]
    pub fn imports(&self) -> BTreeSet<String> {
        self.members
            .iter()
            .flat_map(|m| m.walked.imports.keys().cloned())
            .collect()
    }

    /// What would be unsafe to load: imports outside `allow`, calls the scan cannot name,
    /// custom Keras objects, and (with `pinned`) every import the trusted artifact did not
    /// have.
    #[must_use]
    pub fn judge(&self, allow: &Allowlist, pinned: Option<&BTreeSet<String>>) -> Vec<Unsafe> {
        let mut out = Vec::new();
        for m in &self.members {
            let unsafe_at = |i: &Import, code: &'static str, why: String| Unsafe {
                code,
                member: m.name.clone(),
                offset: i.offset,
                opcode: i.opcode,
                callable: i.callable(),
                why,
            };
            for i in m.walked.imports.values() {
                let allowed = match m.rule {
                    Rule::Pickle | Rule::Torch => allow.allows(&i.module, &i.name),
                    Rule::Keras => keras_allows(i),
                };
                if !allowed {
                    let why = match m.rule {
                        Rule::Keras if i.name == "Lambda" => {
                            "a Lambda layer carries Python code that runs when the model is loaded or called".to_owned()
                        }
                        Rule::Keras => {
                            "a custom object: its class is code outside Keras".to_owned()
                        }
                        _ => "not on the allowlist of globals that models need".to_owned(),
                    };
                    out.push(unsafe_at(i, UNSAFE, why));
                } else if let Some(pin) = pinned
                    && !pin.contains(&i.callable())
                {
                    out.push(unsafe_at(
                        i,
                        NEW_IMPORT,
                        "the pinned trusted artifact does not import it".to_owned(),
                    ));
                }
            }
            for i in &m.walked.uncallable {
                out.push(unsafe_at(
                    i,
                    UNSAFE,
                    "a call or import the scan cannot name: it could run anything".to_owned(),
                ));
            }
            if m.rule != Rule::Torch {
                for _ in m.walked.persistent.iter().take(1) {
                    out.push(Unsafe {
                        code: UNSAFE,
                        member: m.name.clone(),
                        offset: 0,
                        opcode: "BINPERSID",
                        callable: "<persistent id>".to_owned(),
                        why: "a persistent id outside a PyTorch archive: what it loads is up to the loader's persistent_load".to_owned(),
                    });
                }
            }
        }
        out.sort_by(|a, b| {
            (&a.member, a.offset, &a.callable, a.code).cmp(&(
                &b.member,
                b.offset,
                &b.callable,
                b.code,
            ))
        });
        out.dedup();
        out
    }
}

fn keras_allows(i: &Import) -> bool {
    (i.module == "keras" || i.module.starts_with("keras.")) && i.name != "Lambda"
}

/// The pin of a trusted artifact's imports (`verify --scan --pin-imports`).
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportPin {
    /// Always [`ImportPin::FORMAT`].
    pub format: String,
    /// The files scanned, with their SHA-256.
    pub sources: Vec<PinnedSource>,
    /// Every callable they import, `module.name`, sorted.
    pub imports: BTreeSet<String>,
}

/// A file of an [`ImportPin`].
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PinnedSource {
    /// As given on the command line.
    pub path: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
}

impl ImportPin {
    /// The format tag.
    pub const FORMAT: &'static str = "poisongate.model-imports/1";

    /// Reads a pin, refusing anything else (exit 2).
    pub fn load(path: &Path, bytes: &[u8]) -> crate::Result<Self> {
        let pin: Self = serde_json::from_slice(bytes)
            .map_err(|e| crate::Error::input(path, format!("not an imports pin: {e}")))?;
        if pin.format != Self::FORMAT {
            return Err(crate::Error::input(
                path,
                format!("format {:?}, expected {:?}", pin.format, Self::FORMAT),
            ));
        }
        Ok(pin)
    }
}
