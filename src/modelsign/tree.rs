//! The files of a model directory and their digests, as OpenSSF model signing serialises them
//! (`model_signing/_serialization/file.py` and `file_shard.py`): every regular file under the
//! directory that no ignore path covers, by its `/`-separated relative path; symbolic links to
//! files only where the signed policy allows them (and then hashed as their target); symbolic
//! links to directories never descended.
//!
//! Only paths found by walking the directory are ever opened. A signed name is looked up in
//! that walk, never joined to the directory and opened, so no name in a bundle can make the
//! verifier read outside the directory.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::Digest;

use super::manifest::Key;
use crate::error::{Error, Result};

/// One regular file (or symbolic link to one) found under the model directory.
#[derive(Debug, Clone)]
pub struct Found {
    /// Path components relative to the directory.
    pub path: Vec<String>,
    /// The path to open.
    pub full: PathBuf,
    /// Size in bytes when walked.
    pub size: u64,
}

/// The walk of a model directory.
#[derive(Debug, Default)]
pub struct Walk {
    /// Files to hash, sorted by path.
    pub files: Vec<Found>,
    /// What the signed policy does not allow (a symbolic link where links are not allowed, a
    /// socket, a broken link, a name that is not UTF-8): each blocks.
    pub problems: Vec<String>,
}

/// Which paths the walk skips: the signed ignore paths (and their descendants) and single
/// files (the bundle itself, when it lies inside the directory).
#[derive(Debug, Default)]
pub struct Skip {
    prefixes: Vec<Vec<String>>,
}

impl Skip {
    /// Skips `path` (relative, `/`-separated) and everything under it. `.` and empty
    /// components are dropped (as `pathlib` drops them); a path with `..` or an absolute one
    /// cannot cover anything inside the directory and is left out.
    pub fn add(&mut self, path: &str) {
        if path.starts_with('/') {
            return;
        }
        let parts: Vec<String> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .map(str::to_owned)
            .collect();
        if parts.is_empty() || parts.iter().any(|p| p == "..") {
            return;
        }
        self.prefixes.push(parts);
    }

    fn covers(&self, path: &[String]) -> bool {
        self.prefixes.iter().any(|p| path.starts_with(p))
    }
}

/// Walks `dir`.
///
/// # Errors
/// `dir` is not a readable directory, or a subdirectory cannot be listed.
pub fn walk(dir: &Path, skip: &Skip, allow_symlinks: bool) -> Result<Walk> {
    let meta =
        std::fs::metadata(dir).map_err(|e| Error::signing(dir, crate::error::io_cause(&e)))?;
    if !meta.is_dir() {
        return Err(Error::signing(
            dir,
            "not a directory; --model takes the model's directory",
        ));
    }
    let mut out = Walk::default();
    let mut stack = vec![(dir.to_path_buf(), Vec::<String>::new())];
    while let Some((at, rel)) = stack.pop() {
        let entries =
            std::fs::read_dir(&at).map_err(|e| Error::signing(&at, crate::error::io_cause(&e)))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::signing(&at, crate::error::io_cause(&e)))?;
            let full = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                out.problems.push(format!(
                    "{}: the name is not UTF-8, which a manifest cannot name",
                    full.display()
                ));
                continue;
            };
            let mut path = rel.clone();
            path.push(name);
            if skip.covers(&path) {
                continue;
            }
            let shown = path.join("/");
            let kind = entry
                .file_type()
                .map_err(|e| Error::signing(&full, crate::error::io_cause(&e)))?;
            if kind.is_dir() {
                stack.push((full, path));
            } else if kind.is_file() {
                let size = entry
                    .metadata()
                    .map_err(|e| Error::signing(&full, crate::error::io_cause(&e)))?
                    .len();
                out.files.push(Found { path, full, size });
            } else if kind.is_symlink() {
                if !allow_symlinks {
                    out.problems.push(format!(
                        "{shown}: a symbolic link, which the signed policy does not allow (allow_symlinks: false)"
                    ));
                    continue;
                }
                match std::fs::metadata(&full) {
                    Ok(m) if m.is_file() => out.files.push(Found {
                        path,
                        full,
                        size: m.len(),
                    }),
                    // Not descended, as the reference serializer does not descend them.
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => out.problems.push(format!(
                        "{shown}: a link to something that is not a regular file"
                    )),
                    Err(_) => out
                        .problems
                        .push(format!("{shown}: a broken symbolic link")),
                }
            } else {
                out.problems.push(format!(
                    "{shown}: not a regular file or directory (a socket, FIFO or device)"
                ));
            }
        }
    }
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    out.problems.sort();
    Ok(out)
}

/// The byte ranges of a file of `size` bytes in shards of `shard` bytes: `[0, s), [s, 2s), …,
/// [ks, size)`, and none for an empty file (`file_shard.py`, `_get_shards` and `_endpoints`):
/// an empty file is not in a sharded manifest at all.
#[must_use]
pub fn shard_ranges(size: u64, shard: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if size == 0 {
        return out;
    }
    let mut start = 0;
    while start + shard < size {
        out.push((start, start + shard));
        start += shard;
    }
    out.push((start, size));
    out
}

/// SHA-256 of every file (`shard: None`) or of every shard of every file, in parallel, each
/// byte read once.
///
/// # Errors
/// A file that cannot be read.
pub fn hash(files: &[Found], shard: Option<u64>) -> Result<BTreeMap<Key, Vec<u8>>> {
    let mut work: Vec<(&Found, Option<(u64, u64)>)> = Vec::new();
    for f in files {
        match shard {
            None => work.push((f, None)),
            Some(s) => work.extend(shard_ranges(f.size, s).into_iter().map(|r| (f, Some(r)))),
        }
    }
    // Largest first, so one big file does not start last on an otherwise idle pool.
    work.sort_by_key(|(f, r)| std::cmp::Reverse(r.map_or(f.size, |(s, e)| e - s)));
    work.par_iter()
        .map(|(f, range)| {
            let digest = digest_range(&f.full, *range)?;
            Ok((
                Key {
                    path: f.path.clone(),
                    range: *range,
                },
                digest,
            ))
        })
        .collect()
}

/// SHA-256 of a file, or of `[start, end)` of it.
fn digest_range(path: &Path, range: Option<(u64, u64)>) -> Result<Vec<u8>> {
    let fail = |e: std::io::Error| Error::signing(path, crate::error::io_cause(&e));
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    match range {
        None => loop {
            let n = file.read(&mut buf).map_err(fail)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        },
        Some((start, end)) => {
            use std::io::{Seek, SeekFrom};
            file.seek(SeekFrom::Start(start)).map_err(fail)?;
            let mut left = end - start;
            while left > 0 {
                let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                let n = file.read(&mut buf[..want]).map_err(fail)?;
                if n == 0 {
                    // The file shrank since the walk: what was signed cannot be read.
                    return Err(Error::signing(path, "the file shrank while it was hashed"));
                }
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
        }
    }
    Ok(hasher.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ranges_match_the_reference_endpoints() {
        // file_shard.py's docstring: _endpoints(2, 8) = [2, 4, 6, 8]; _endpoints(2, 9) =
        // [2, 4, 6, 8, 9]; _endpoints(2, 2) = [2]; _get_shards skips an empty file.
        assert_eq!(shard_ranges(8, 2), [(0, 2), (2, 4), (4, 6), (6, 8)]);
        assert_eq!(shard_ranges(9, 2), [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]);
        assert_eq!(shard_ranges(2, 2), [(0, 2)]);
        assert!(shard_ranges(0, 2).is_empty());
    }

    #[test]
    fn skip_covers_descendants_and_never_escapes() {
        let mut skip = Skip::default();
        for p in [".git", "./docs/", "../x", "/abs", ""] {
            skip.add(p);
        }
        let v = |p: &str| p.split('/').map(str::to_owned).collect::<Vec<_>>();
        assert!(skip.covers(&v(".git")));
        assert!(skip.covers(&v(".git/HEAD")));
        assert!(skip.covers(&v("docs/a.md")));
        assert!(!skip.covers(&v(".gitignore")));
        assert!(!skip.covers(&v("x")));
        assert!(!skip.covers(&v("abs")));
    }
}
