//! Walks of a file's structure before polars decodes it: the counts and lengths that the
//! decoders size their buffers from are checked against the file's own size first.
//!
//! The decoders allocate what a header declares before they look at the data, and an
//! allocation the process cannot make aborts it (exit 134, no message) instead of failing:
//! fail-closed still, but not the one-line refusal naming the file that a hostile input is
//! owed. Each walk reads headers only, never decodes values, and turns every inconsistency into
//! a decoder error that [`super::read::guard`] names.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use polars::prelude::{PolarsError, PolarsResult};

use crate::limits::{MAX_BATCH_ROWS, MAX_IPC_DECODED_BYTES, MAX_IPC_RATIO};

fn bad(what: String) -> PolarsError {
    PolarsError::ComputeError(what.into())
}

/// Files (path and SHA-256) whose structure this process's first pass walked and accepted.
static ACCEPTED: std::sync::Mutex<BTreeSet<(PathBuf, String)>> =
    std::sync::Mutex::new(BTreeSet::new());

/// Records that the first pass walked, decoded and hashed `path` to `sha256`.
pub(super) fn accept(path: &Path, sha256: &str) {
    if let Ok(mut a) = ACCEPTED.lock() {
        a.insert((path.to_path_buf(), sha256.to_owned()));
    }
}

/// Whether this process's first pass accepted `path` with content `sha256`: a later pass over
/// it (which hashes it again and refuses a file whose SHA-256 changed) skips the walk, a read
/// of the whole file. A file only another process read (a part of `summarize`) is walked.
pub(super) fn accepted(path: &Path, sha256: &str) -> bool {
    !sha256.is_empty()
        && ACCEPTED
            .lock()
            .is_ok_and(|a| a.contains(&(path.to_path_buf(), sha256.to_owned())))
}

/// Walks every page header of a Parquet file (the footer, then each column chunk's pages,
/// compressed, without decoding them) and refuses a page whose value count is negative or
/// larger than its column chunk's: the decoder sizes its buffers from that count before it
/// looks at the data, and an allocation it cannot make aborts the process instead of failing
/// (a flipped bit made one page claim 2^61 values; found by `fuzz/`, replayed from
/// `fuzz/regressions/read_parquet/`). Costs one more read of the file's bytes, a column chunk
/// at a time, in the first pass only ([`accepted`]). It reads through `handle` by position,
/// so the pass that decodes the file opens it once.
pub(super) fn parquet_pages(handle: &File) -> PolarsResult<()> {
    use polars_parquet::parquet::page::CompressedPage;
    use polars_parquet::parquet::read::{PageReader, read_metadata};
    let mut file = Positioned {
        file: handle,
        at: 0,
    };
    let size = handle.metadata()?.len();
    let meta = read_metadata(&mut file).map_err(|e| bad(e.to_string()))?;
    for (g, group) in meta.row_groups.iter().enumerate() {
        if group.num_rows() as u64 > MAX_BATCH_ROWS {
            return Err(bad(format!(
                "row group {g} declares {} rows",
                group.num_rows()
            )));
        }
        for column in group.parquet_columns() {
            let declared = column.num_values();
            let range = column.byte_range();
            if declared < 0 || range.end > size || range.start > range.end {
                return Err(bad(format!(
                    "row group {g}: a column chunk lies outside the file or declares {declared} values"
                )));
            }
            let mut bytes = vec![0u8; (range.end - range.start) as usize];
            file.seek(SeekFrom::Start(range.start))?;
            file.read_exact(&mut bytes)?;
            let len = bytes.len();
            let reader = std::io::Cursor::new(polars_buffer::Buffer::from(bytes));
            let mut seen = 0usize;
            for page in PageReader::new(reader, column, Vec::new(), len.max(1)) {
                let page = page.map_err(|e| bad(e.to_string()))?;
                if let CompressedPage::Data(p) = page {
                    // `num_values` is the header's i32 cast to usize: a negative count wraps.
                    let n = p.num_values();
                    seen = seen.saturating_add(n);
                    if n > declared as usize || seen > declared as usize {
                        return Err(bad(format!(
                            "row group {g}: a page declares {} values, more than its column chunk's {declared}",
                            n as i64
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A reader of a shared handle by position (`pread`): it moves no offset that another
/// reader of the same open file description would see.
struct Positioned<'a> {
    file: &'a File,
    at: u64,
}

impl Read for Positioned<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.at)?;
        #[cfg(not(unix))]
        let n = {
            let mut f = self.file;
            f.seek(SeekFrom::Start(self.at))?;
            f.read(buf)?
        };
        self.at += n as u64;
        Ok(n)
    }
}

impl Seek for Positioned<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let end = || self.file.metadata().map(|m| m.len());
        let at = match to {
            SeekFrom::Start(a) => Some(a),
            SeekFrom::Current(d) => self.at.checked_add_signed(d),
            SeekFrom::End(d) => end()?.checked_add_signed(d),
        };
        self.at = at.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.at)
    }
}

/// Walks every message of an Arrow IPC file (the footer's record batch and dictionary blocks)
/// and refuses one whose block, buffers or row counts lie outside the file, or whose
/// compressed buffers declare more than [`MAX_IPC_RATIO`] times their own size once
/// decompressed, or more than [`MAX_IPC_DECODED_BYTES`] in all: the decoder allocates a
/// buffer's declared length before reading it (a dictionary buffer declaring 87 TB aborted it;
/// found by `fuzz/`, replayed from `fuzz/regressions/read_ipc/`). Reads the footer and each
/// message's metadata and the 8-byte length prefix of each compressed buffer, not the data.
pub(super) fn ipc_messages(path: &Path) -> PolarsResult<()> {
    use polars_arrow::io::ipc::format::ipc::planus::ReadAsRoot;
    use polars_arrow::io::ipc::format::ipc::{MessageHeaderRef, MessageRef};
    use polars_arrow::io::ipc::read::read_file_metadata;

    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let meta = read_file_metadata(&mut file)?;
    let blocks = (meta
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("record batch {i}"), b)))
    .chain(
        (meta.dictionaries.iter().flatten().enumerate())
            .map(|(i, b)| (format!("dictionary batch {i}"), b)),
    );
    let mut scratch = Vec::new();
    let mut decoded = 0u64;
    for (b, block) in blocks {
        let (Ok(offset), Ok(meta_len), Ok(body_len)) = (
            u64::try_from(block.offset),
            u64::try_from(block.meta_data_length),
            u64::try_from(block.body_length),
        ) else {
            return Err(bad(format!("{b} declares a negative offset or length")));
        };
        let body = offset
            .checked_add(meta_len)
            .filter(|&s| s.checked_add(body_len).is_some_and(|e| e <= size))
            .ok_or_else(|| bad(format!("{b} lies outside the file")))?;
        file.seek(SeekFrom::Start(offset))?;
        let mut word = [0u8; 4];
        file.read_exact(&mut word)?;
        if word == [0xff; 4] {
            file.read_exact(&mut word)?;
        }
        let len = u64::try_from(i32::from_le_bytes(word))
            .ok()
            .filter(|&l| l <= meta_len)
            .ok_or_else(|| bad(format!("{b}: its message is longer than the block")))?;
        scratch.clear();
        (&mut file).take(len).read_to_end(&mut scratch)?;
        let message = MessageRef::read_as_root(&scratch).map_err(|e| bad(format!("{b}: {e}")))?;
        let batch = match message.header().map_err(|e| bad(format!("{b}: {e}")))? {
            Some(MessageHeaderRef::RecordBatch(r)) => Some(r),
            Some(MessageHeaderRef::DictionaryBatch(d)) => {
                d.data().map_err(|e| bad(format!("{b}: {e}")))?
            }
            _ => None,
        };
        let Some(batch) = batch else { continue };
        let oops = |e: polars_arrow::io::ipc::format::ipc::planus::Error| bad(format!("{b}: {e}"));
        let rows = batch.length().map_err(oops)?;
        if !(0..=MAX_BATCH_ROWS as i64).contains(&rows) {
            return Err(bad(format!("{b} declares {rows} rows")));
        }
        for node in batch.nodes().map_err(oops)?.into_iter().flatten() {
            let (length, nulls) = (node.length(), node.null_count());
            if !(0..=MAX_BATCH_ROWS as i64).contains(&length) || !(0..=length).contains(&nulls) {
                return Err(bad(format!(
                    "{b}: an array declares {length} values with {nulls} nulls"
                )));
            }
        }
        let compressed = batch.compression().map_err(oops)?.is_some();
        for buffer in batch.buffers().map_err(oops)?.into_iter().flatten() {
            let (Ok(start), Ok(length)) = (
                u64::try_from(buffer.offset()),
                u64::try_from(buffer.length()),
            ) else {
                return Err(bad(format!(
                    "{b}: a buffer declares a negative offset or length"
                )));
            };
            if start.checked_add(length).is_none_or(|e| e > body_len) {
                return Err(bad(format!("{b}: a buffer lies outside its message body")));
            }
            let mut out = length;
            if compressed && length >= 8 {
                // The first 8 bytes of a compressed buffer: its length decompressed, or -1
                // when the buffer was left uncompressed.
                file.seek(SeekFrom::Start(body + start))?;
                let mut prefix = [0u8; 8];
                file.read_exact(&mut prefix)?;
                let declared = i64::from_le_bytes(prefix);
                if declared != -1 {
                    out = u64::try_from(declared)
                        .ok()
                        .filter(|&d| d <= (length - 8).saturating_mul(MAX_IPC_RATIO))
                        .ok_or_else(|| {
                            bad(format!(
                                "{b}: a compressed buffer of {length} bytes declares {declared} decompressed"
                            ))
                        })?;
                }
            }
            decoded = decoded.saturating_add(out);
            if decoded > MAX_IPC_DECODED_BYTES {
                return Err(bad(format!(
                    "its buffers decode to more than {} GiB (the most one Arrow IPC file may; split it or write Parquet, which is streamed)",
                    MAX_IPC_DECODED_BYTES >> 30
                )));
            }
        }
    }
    Ok(())
}
