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

use crate::limits::{Counted, MAX_BATCH_ROWS, MAX_IPC_DECODED_BYTES, MAX_IPC_RATIO};

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

/// Walks every page header of a Parquet file (the footer, then each column chunk's page
/// headers, without reading or decoding the pages' data) and refuses what the decoder would
/// refuse or choke on: a page whose value count is negative or larger than its column
/// chunk's (the decoder sizes its buffers from that count before it looks at the data, and
/// an allocation it cannot make aborts the process instead of failing: a flipped bit made one
/// page claim 2^61 values; found by `fuzz/`, replayed from `fuzz/regressions/read_parquet/`),
/// a page that runs past its chunk, a negative size, an unknown page type or a missing
/// type-specific header. The checks are those of polars' own page reader
/// (`polars_parquet::parquet::read::PageReader` and its `finish_page`), which the unit tests
/// hold it to. Only the headers are read (a few kilobytes a page, through a small buffer by
/// position), in the first pass only ([`accepted`]); it reads through `handle` by position
/// (`pread`), so the pass that decodes the file opens it once.
pub(super) fn parquet_pages(handle: &File) -> PolarsResult<()> {
    use polars_parquet::parquet::read::read_metadata;
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
            chunk_pages(handle, range.start, range.end, declared)
                .map_err(|e| bad(format!("row group {g}: {e}")))?;
        }
    }
    Ok(())
}

/// Bytes of a column chunk read at a time for its page headers: a header is tens of bytes,
/// more with statistics (the buffer refills for a longer one).
const HEADER_BUFFER: usize = 4096;

/// Walks the page headers of one column chunk (`start..end` in the file, `declared` values),
/// with the checks of polars' page reader: it stops once the data pages account for every
/// declared value, as the reader does.
fn chunk_pages(handle: &File, start: u64, end: u64, declared: i64) -> Result<(), String> {
    use polars_parquet_format::thrift::protocol::TCompactInputProtocol;
    use polars_parquet_format::{PageHeader, PageType};
    let mut at = start;
    let mut seen: i64 = 0;
    while seen < declared {
        let left = end - at;
        let mut counted = Counted::new(std::io::BufReader::with_capacity(
            HEADER_BUFFER,
            Read::take(Positioned { file: handle, at }, left),
        ));
        // As the reader: the chunk's length bounds what the header may allocate.
        let mut protocol = TCompactInputProtocol::new(&mut counted, left as usize);
        let header = PageHeader::read_from_in_protocol(&mut protocol)
            .map_err(|e| format!("a page header cannot be read: {e}"))?;
        let data = u64::try_from(header.compressed_page_size)
            .ok()
            .filter(|&d| d <= left - counted.n)
            .ok_or_else(|| {
                format!(
                    "a page declares {} bytes, more than its column chunk holds",
                    header.compressed_page_size
                )
            })?;
        if header.uncompressed_page_size < 0 {
            return Err(format!(
                "a page declares {} uncompressed bytes",
                header.uncompressed_page_size
            ));
        }
        let values = match header.type_ {
            PageType::DATA_PAGE => header.data_page_header.as_ref().map(|h| h.num_values),
            PageType::DATA_PAGE_V2 => header.data_page_header_v2.as_ref().map(|h| h.num_values),
            PageType::DICTIONARY_PAGE => match &header.dictionary_page_header {
                Some(d) if d.num_values < 0 => {
                    return Err(format!(
                        "a dictionary page declares {} values",
                        d.num_values
                    ));
                }
                Some(_) => Some(0),
                None => None,
            },
            other => return Err(format!("a page of unknown type {}", other.0)),
        }
        .ok_or_else(|| "a page header lacks the header of its type".to_owned())?;
        seen = seen.saturating_add(i64::from(values));
        if values < 0 || i64::from(values) > declared || seen > declared {
            return Err(format!(
                "a page declares {values} values, more than its column chunk's {declared}"
            ));
        }
        at += counted.n + data;
    }
    Ok(())
}

/// A reader that counts the bytes it hands out (the length of a page header).
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use polars::prelude::*;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The walk this one replaced: polars' own page reader over each whole column chunk.
    fn by_reader(handle: &File) -> PolarsResult<()> {
        use polars_parquet::parquet::page::CompressedPage;
        use polars_parquet::parquet::read::{PageReader, read_metadata};
        let mut file = Positioned {
            file: handle,
            at: 0,
        };
        let size = handle.metadata()?.len();
        let meta = read_metadata(&mut file).map_err(|e| bad(e.to_string()))?;
        for group in &meta.row_groups {
            for column in group.parquet_columns() {
                let declared = column.num_values();
                let range = column.byte_range();
                if declared < 0 || range.end > size || range.start > range.end {
                    return Err(bad("outside".into()));
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
                        let n = p.num_values();
                        seen = seen.saturating_add(n);
                        if n > declared as usize || seen > declared as usize {
                            return Err(bad("values".into()));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A small Parquet file with several row groups, pages, dictionaries, nulls and
    /// statistics.
    fn parquet() -> Vec<u8> {
        let n = 3_000usize;
        let mut df = df!(
            "i" => (0..n as i64).collect::<Vec<_>>(),
            "f" => (0..n).map(|k| (k % 7 != 0).then_some(k as f64 / 3.0)).collect::<Vec<_>>(),
            "s" => (0..n).map(|k| format!("v{}", k % 13)).collect::<Vec<_>>(),
        )
        .unwrap();
        let mut out = Vec::new();
        ParquetWriter::new(&mut out)
            .with_row_group_size(Some(1_000))
            .with_data_page_size(Some(2_048))
            .with_statistics(StatisticsOptions::full())
            .finish(&mut df)
            .unwrap();
        out
    }

    fn walk_both(bytes: &[u8], dir: &std::path::Path, k: usize) -> (bool, bool) {
        let path = dir.join(format!("m{k}.parquet"));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        let file = File::open(&path).unwrap();
        let out = (parquet_pages(&file).is_ok(), by_reader(&file).is_ok());
        drop(file);
        std::fs::remove_file(&path).unwrap();
        out
    }

    /// Header-only walk and polars' page reader agree on every mutant of a file: one byte
    /// changed, most of them inside the column chunks' first bytes (where page headers are),
    /// the rest anywhere before the footer. Neither accepts what the other refuses.
    #[test]
    fn the_header_walk_refuses_what_the_page_reader_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let clean = parquet();
        assert_eq!(walk_both(&clean, dir.path(), 0), (true, true));
        let file = {
            let path = dir.path().join("clean.parquet");
            std::fs::write(&path, &clean).unwrap();
            File::open(&path).unwrap()
        };
        let meta =
            polars_parquet::parquet::read::read_metadata(&mut Positioned { file: &file, at: 0 })
                .unwrap();
        let starts: Vec<u64> = meta
            .row_groups
            .iter()
            .flat_map(|g| g.parquet_columns().iter().map(|c| c.byte_range().start))
            .collect();
        let footer = clean.len()
            - 8
            - u32::from_le_bytes(clean[clean.len() - 8..clean.len() - 4].try_into().unwrap())
                as usize;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (mut refused, mut differ) = (0, Vec::new());
        for k in 1..=3_000 {
            let mut m = clean.clone();
            let at = if k % 4 == 0 {
                rng.random_range(4..footer)
            } else {
                starts[rng.random_range(0..starts.len())] as usize + rng.random_range(0..24)
            };
            m[at] = rng.random();
            let (new, old) = walk_both(&m, dir.path(), k);
            refused += usize::from(!new);
            if new != old {
                differ.push((at, new, old));
            }
        }
        assert!(
            differ.is_empty(),
            "walks disagree (offset, header walk, reader): {differ:?}"
        );
        assert!(refused > 1_000, "only {refused} mutants refused");
    }
}
