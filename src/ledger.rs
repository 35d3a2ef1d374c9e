//! The ledger of accepted batches (`check --ledger DIR`): slow poisoning, spread over many
//! retrains so that each batch alone passes, is tested over a window of the batches already
//! accepted.
//!
//! The ledger is a directory: `ledger.jsonl`, one entry per accepted batch, and `parts/`, the
//! batch's summary (the same part `summarize` writes: column summaries and row-pass states,
//! a few MB at most whatever the batch's size). Each entry records the batch's inputs and
//! digests, the baseline, policy and build it was checked with, the part's SHA-256, and the
//! digest of the previous entry; its own digest is the SHA-256 of all that. A changed,
//! removed or reordered entry, or a changed part, breaks the chain, and the run is exit 2
//! (Haber & Stornetta, "How to time-stamp a digital document", J. Cryptology 1991: each link
//! commits to everything before it).
//!
//! The chain proves the ledger's history only against a later truncation if the last digest
//! is kept elsewhere (the JSON report of each run records it); whoever can rewrite the whole
//! directory can rewrite the whole chain.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::check::{Evaluation, add_findings, decide_kept};
use crate::error::{Error, Result};
use crate::finding::{Finding, Severity};
use crate::shard::{PART_FORMAT, Part, PartHeader};

/// Format of a ledger entry.
pub const LEDGER_FORMAT: &str = "poisongate.ledger/1";
/// Accepted batches a window holds by default (besides the batch at hand).
pub const DEFAULT_WINDOW: usize = 20;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One input of an accepted batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryInput {
    /// Path or URI as given.
    pub path: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Rows.
    pub rows: u64,
}

/// One accepted batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Always `poisongate.ledger/1`.
    pub format: String,
    /// Position in the ledger, from 0.
    pub seq: u64,
    /// Digest of the entry before (64 zeros for the first).
    pub prev: String,
    /// The build that checked it (`poisongate VERSION`).
    pub tool: String,
    /// SHA-256 of the baseline it was checked against.
    pub baseline_sha256: String,
    /// SHA-256 of the effective policy.
    pub policy_sha256: String,
    /// Its inputs.
    pub inputs: Vec<EntryInput>,
    /// Its rows.
    pub rows: u64,
    /// Its summary, a file under `parts/`.
    pub part: String,
    /// SHA-256 of that file.
    pub part_sha256: String,
    /// SHA-256 of this entry with this field empty.
    pub digest: String,
}

impl Entry {
    fn compute_digest(&self) -> Result<String> {
        let mut bare = self.clone();
        bare.digest = String::new();
        let json = serde_json::to_vec(&bare).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(hex::encode(Sha256::digest(&json)))
    }

    /// The batch in a few words: its sequence number and first input.
    #[must_use]
    pub fn describe(&self) -> String {
        let first = self.inputs.first().map_or("", |i| i.path.as_str());
        match self.inputs.len() {
            0 | 1 => format!("#{} {first} ({} rows)", self.seq, self.rows),
            n => format!(
                "#{} {first} and {} more ({} rows)",
                self.seq,
                n - 1,
                self.rows
            ),
        }
    }
}

/// Accepted batches of a window with their summaries, oldest first.
pub type Window = Vec<(Entry, Part)>;

/// A ledger read and verified.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    /// Its entries, oldest first.
    pub entries: Vec<Entry>,
}

impl Ledger {
    fn file(dir: &Path) -> PathBuf {
        dir.join("ledger.jsonl")
    }

    /// Reads the ledger in `dir` and verifies its chain and parts; a directory without a
    /// ledger is an empty one.
    ///
    /// # Errors
    /// An unreadable or malformed entry, a broken chain, a missing or changed part.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = Self::file(dir);
        let bad = |cause: String| Error::input(&path, cause);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(bad(crate::source::io_cause(&e))),
        };
        let mut entries: Vec<Entry> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let entry: Entry = serde_json::from_str(line)
                .map_err(|e| bad(format!("line {}: not a ledger entry: {e}", i + 1)))?;
            let at = format!("entry {i}");
            if entry.format != LEDGER_FORMAT {
                return Err(bad(format!("{at}: unknown format `{}`", entry.format)));
            }
            if entry.seq != i as u64 {
                return Err(bad(format!(
                    "{at}: sequence number {} (entries were removed or reordered)",
                    entry.seq
                )));
            }
            let prev = entries.last().map_or(GENESIS, |e| e.digest.as_str());
            if entry.prev != prev {
                return Err(bad(format!(
                    "{at}: does not chain to the entry before it (the ledger was edited)"
                )));
            }
            if entry.compute_digest()? != entry.digest {
                return Err(bad(format!(
                    "{at}: its digest does not match its contents (the entry was edited)"
                )));
            }
            let part = Self::part_path(dir, &entry)?;
            let (digest, _) = crate::digest::sha256_file(&part)?;
            if digest != entry.part_sha256 {
                return Err(bad(format!(
                    "{at}: its summary {} changed since it was written",
                    part.display()
                )));
            }
            entries.push(entry);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            entries,
        })
    }

    fn part_path(dir: &Path, entry: &Entry) -> Result<PathBuf> {
        // A plain file name under parts/: a crafted entry cannot point outside the ledger.
        let name = Path::new(&entry.part);
        if name.components().count() != 1 || name.file_name().is_none() {
            return Err(Error::input(
                &Self::file(dir),
                format!(
                    "entry {}: part `{}` is not a file name",
                    entry.seq, entry.part
                ),
            ));
        }
        Ok(dir.join("parts").join(name))
    }

    /// The digest of the last entry (64 zeros for an empty ledger).
    #[must_use]
    pub fn head(&self) -> &str {
        self.entries.last().map_or(GENESIS, |e| e.digest.as_str())
    }

    /// The last `n` entries checked with this baseline, policy and build, with their parts,
    /// oldest first; and a note for each entry of the last `n` left out.
    ///
    /// # Errors
    /// A part that cannot be read.
    pub fn window(
        &self,
        n: usize,
        baseline_sha256: &str,
        policy_sha256: &str,
        tool: &str,
        schema: &[(String, String)],
    ) -> Result<(Window, Vec<String>)> {
        let mut out = Vec::new();
        let mut notes = Vec::new();
        let start = self.entries.len().saturating_sub(n);
        for entry in &self.entries[start..] {
            let why = if entry.baseline_sha256 != baseline_sha256 {
                Some("another baseline")
            } else if entry.policy_sha256 != policy_sha256 {
                Some("another policy")
            } else if entry.tool != tool {
                Some("another build")
            } else {
                None
            };
            if let Some(why) = why {
                notes.push(format!(
                    "ledger batch {} was checked with {why} and is not in the window",
                    entry.describe()
                ));
                continue;
            }
            let path = Self::part_path(&self.dir, entry)?;
            let bytes = std::fs::read(&path)
                .map_err(|e| Error::input(&path, crate::source::io_cause(&e)))?;
            let part = Part::from_bytes(&path, &bytes)?;
            if part.schema() != Some(schema) {
                notes.push(format!(
                    "ledger batch {} has other columns and is not in the window",
                    entry.describe()
                ));
                continue;
            }
            out.push((entry.clone(), part));
        }
        Ok((out, notes))
    }

    /// Appends an accepted batch and its summary; returns the new entry.
    ///
    /// # Errors
    /// A ledger directory that cannot be written.
    pub fn append(&mut self, mut entry: Entry, part: &Part) -> Result<Entry> {
        let bytes = part.to_bytes()?;
        entry.format = LEDGER_FORMAT.to_owned();
        entry.seq = self.entries.len() as u64;
        entry.prev = self.head().to_owned();
        entry.part = format!("{:08}.part", entry.seq);
        entry.part_sha256 = hex::encode(Sha256::digest(&bytes));
        entry.digest = String::new();
        entry.digest = entry.compute_digest()?;
        let parts = self.dir.join("parts");
        std::fs::create_dir_all(&parts).map_err(|e| Error::output(&parts, e))?;
        crate::output::write_atomic(&Self::part_path(&self.dir, &entry)?, &bytes)?;
        let mut text = Vec::new();
        for e in self.entries.iter().chain(std::iter::once(&entry)) {
            let line = serde_json::to_vec(e).map_err(|e| Error::Internal(e.to_string()))?;
            text.extend_from_slice(&line);
            text.push(b'\n');
        }
        crate::output::write_atomic(&Self::file(&self.dir), &text)?;
        self.entries.push(entry.clone());
        Ok(entry)
    }
}

/// The header of a one-batch part kept in the ledger.
#[must_use]
pub fn part_header(baseline_sha256: &str, policy_sha256: &str) -> PartHeader {
    PartHeader {
        format: PART_FORMAT.to_owned(),
        tool: crate::shard::tool(),
        baseline_sha256: baseline_sha256.to_owned(),
        policy_sha256: policy_sha256.to_owned(),
        manifest_sha256: "ledger entry".to_owned(),
        units_total: 1,
        units: vec![0],
    }
}

/// `check --ledger DIR`: tests the batch (its summary `part`, columns `dtypes`) together with
/// the last `window` batches accepted in `dir`, adds an `integrity-ledger-window` finding for
/// every deny over that window, and appends the batch when the run passes.
///
/// # Errors
/// A tampered or unreadable ledger, states that do not fit the baseline, a ledger that cannot
/// be written.
#[allow(clippy::too_many_arguments)]
pub fn gate(
    dir: &Path,
    window: usize,
    (baseline, baseline_sha256): (&crate::baseline::Baseline, &str),
    policy: &crate::policy::LoadedPolicy,
    inputs: &[crate::source::InputMeta],
    part: Part,
    dtypes: &[(String, polars::prelude::DataType)],
    eval: &mut Evaluation,
) -> Result<()> {
    let mut ledger = Ledger::open(dir)?;
    let schema = part.schema().map(<[_]>::to_vec).unwrap_or_default();
    let tool = crate::shard::tool();
    let (past, notes) = ledger.window(window, baseline_sha256, &policy.sha256, &tool, &schema)?;
    eval.notes.extend(notes);
    let rows: u64 = inputs.iter().map(|m| m.rows).sum();
    if !past.is_empty() {
        let (entries, parts): (Vec<Entry>, Vec<Part>) = past.into_iter().unzip();
        let shown = Path::new("ledger window");
        let parts: Vec<Part> = parts
            .into_iter()
            .chain(std::iter::once(part.clone()))
            .collect();
        let merged = Part::window(parts, "ledger window")
            .ok_or_else(|| Error::Internal("empty ledger window".into()))?;
        let (summary, _, _, scans) = merged.complete(shown, baseline_sha256, &policy.sha256)?;
        let over = decide_kept(baseline, &policy.policy, dtypes, summary, scans)?;
        let total: u64 = rows + entries.iter().map(|e| e.rows).sum::<u64>();
        // What the window's tests could have seen replaces what the batch's alone could: the
        // window is the evidence the ledger gathers.
        let insufficient = crate::check::evidence::INSUFFICIENT;
        let listed: Vec<String> = entries.iter().map(Entry::describe).collect();
        eval.findings.retain(|f| f.code != insufficient);
        eval.records.retain(|r| r.code != insufficient);
        for f in over.findings.iter().filter(|f| f.code == insufficient) {
            let mut f = f.clone();
            f.evidence
                .insert("window_batches".into(), (entries.len() + 1) as f64);
            f.evidence.insert("window_rows".into(), total as f64);
            f.message = format!(
                "over this batch and the {} accepted before it in {}: {}",
                entries.len(),
                dir.display(),
                f.message
            );
            eval.findings.push(f);
        }
        eval.records.extend(
            over.records
                .iter()
                .filter(|r| r.code == insufficient)
                .cloned(),
        );
        eval.findings
            .sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        crate::check::record::sort(&mut eval.records);
        let extra: Vec<Finding> = over
            .findings
            .into_iter()
            .filter(|f| f.severity == Severity::Deny && f.code != insufficient)
            .map(|mut f| {
                f.subject.value = Some(match f.subject.value.take() {
                    Some(v) => format!("{} {v}", f.code),
                    None => f.code.clone(),
                });
                f.code = crate::check::remedy::LEDGER_WINDOW.to_owned();
                f.rows.clear();
                // The window's rows are not listed or quarantined: nothing to drop now.
                f.evidence.remove("rows_quarantined");
                f.evidence.remove("rows_flagged");
                f.evidence
                    .insert("window_batches".into(), (entries.len() + 1) as f64);
                f.evidence.insert("window_rows".into(), total as f64);
                f.message = format!(
                    "over this batch and the {} accepted before it in {} ({total} rows: {}): {}",
                    entries.len(),
                    dir.display(),
                    listed.join(", "),
                    f.message
                );
                f
            })
            .collect();
        eval.notes.push(format!(
            "tested with the {} batches accepted before it in the ledger {} ({total} rows in the window)",
            entries.len(),
            dir.display()
        ));
        add_findings(&policy.policy, eval, extra);
    }
    let verdict = crate::report::Verdict::decide(&eval.findings, eval.columns_checked);
    if verdict == crate::report::Verdict::Pass {
        let entry = Entry {
            format: String::new(),
            seq: 0,
            prev: String::new(),
            tool,
            baseline_sha256: baseline_sha256.to_owned(),
            policy_sha256: policy.sha256.clone(),
            inputs: inputs
                .iter()
                .map(|m| EntryInput {
                    path: m.path.clone(),
                    sha256: m.sha256.clone(),
                    rows: m.rows,
                })
                .collect(),
            rows,
            part: String::new(),
            part_sha256: String::new(),
            digest: String::new(),
        };
        let entry = ledger.append(entry, &part)?;
        eval.notes.push(format!(
            "accepted into the ledger {} as batch #{} (entry digest {})",
            dir.display(),
            entry.seq,
            entry.digest
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, prev: &str) -> Entry {
        let mut e = Entry {
            format: LEDGER_FORMAT.to_owned(),
            seq,
            prev: prev.to_owned(),
            tool: "t".into(),
            baseline_sha256: "b".into(),
            policy_sha256: "p".into(),
            inputs: vec![EntryInput {
                path: "x.parquet".into(),
                sha256: "s".into(),
                rows: 10,
            }],
            rows: 10,
            part: format!("{seq:08}.part"),
            part_sha256: String::new(),
            digest: String::new(),
        };
        e.digest = e.compute_digest().unwrap();
        e
    }

    #[test]
    fn the_digest_covers_every_field_and_the_link() {
        let a = entry(0, GENESIS);
        let mut b = a.clone();
        b.rows = 11;
        assert_ne!(b.compute_digest().unwrap(), a.digest);
        let mut c = a.clone();
        c.prev = "1".repeat(64);
        assert_ne!(c.compute_digest().unwrap(), a.digest);
        assert_eq!(a.compute_digest().unwrap(), a.digest);
    }

    #[test]
    fn an_edited_or_reordered_ledger_is_refused_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Ledger::open(dir.path()).unwrap().entries.is_empty());
        std::fs::create_dir_all(dir.path().join("parts")).unwrap();
        let a = entry(0, GENESIS);
        let b = entry(1, &a.digest);
        let write = |entries: &[&Entry]| {
            let mut text = String::new();
            for e in entries {
                text.push_str(&serde_json::to_string(e).unwrap());
                text.push('\n');
            }
            std::fs::write(dir.path().join("ledger.jsonl"), text).unwrap();
        };
        // Parts: empty files, their digests written into fresh entries.
        let empty = hex::encode(Sha256::digest(b""));
        let mut a2 = a.clone();
        a2.part_sha256 = empty.clone();
        a2.digest = a2.compute_digest().unwrap();
        let mut b2 = entry(1, &a2.digest);
        b2.part_sha256 = empty;
        b2.digest = b2.compute_digest().unwrap();
        for e in [&a2, &b2] {
            std::fs::write(dir.path().join("parts").join(&e.part), b"").unwrap();
        }
        write(&[&a2, &b2]);
        assert_eq!(Ledger::open(dir.path()).unwrap().entries.len(), 2);
        write(&[&b2, &a2]);
        assert!(Ledger::open(dir.path()).is_err());
        write(&[&a2, &b]);
        assert!(Ledger::open(dir.path()).is_err());
        let mut edited = b2.clone();
        edited.rows = 99;
        write(&[&a2, &edited]);
        let e = Ledger::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("entry 1") && e.contains("edited"), "{e}");
        write(&[&a2, &b2]);
        std::fs::write(dir.path().join("parts").join(&b2.part), b"x").unwrap();
        let e = Ledger::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("changed"), "{e}");
        let mut escape = a2.clone();
        escape.part = "../../etc/passwd".into();
        escape.digest = escape.compute_digest().unwrap();
        write(&[&escape]);
        assert!(Ledger::open(dir.path()).is_err());
    }
}
