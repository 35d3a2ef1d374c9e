//! Writing outputs atomically: a temporary file in the destination's directory, then a rename,
//! so that a failed run never leaves a partial report or baseline behind.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically, with the mode a plain `open(2)` would give it (0666
/// less the umask: 0644 under the usual 022), not the 0600 of a temporary file: the next
/// step of a pipeline often runs as another user and must be able to read the baseline or
/// the report.
///
/// # Errors
/// The directory is missing or not writable, or the rename fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".poisongate-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The mode is passed to open(2), which applies the umask to it.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(|e| Error::output(path, crate::source::io_cause(&e)))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::output(path, crate::source::io_cause(&e)))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::output(path, crate::source::io_cause(&e)))?;
    tmp.persist(path)
        .map_err(|e| Error::output(path, crate::source::io_cause(&e.error)))?;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_files_get_the_umask_mode_not_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_atomic(&path, b"{}").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // The umask of the test process, read back from a file that open(2) created.
        let probe = dir.path().join("probe");
        std::fs::write(&probe, b"").unwrap();
        let want = std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "mode {mode:o}, a plain file gets {want:o}");
        if want != 0o600 {
            assert_ne!(mode, 0o600, "the temporary file's mode survived the rename");
        }
        // Overwriting keeps the same rule.
        write_atomic(&path, b"{\"a\": 1}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\": 1}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            want
        );
    }
}
