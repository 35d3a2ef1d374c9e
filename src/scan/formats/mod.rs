//! Which container a model file is, and the walk of every stream in it.
//!
//! Recognised by content, never by extension: zip archives (PyTorch checkpoints, NumPy
//! `.npz`, Keras `.keras`), NumPy `.npy`, safetensors, the compressions joblib writes
//! (zlib, gzip, bz2, lzma, xz, lz4), and raw pickles. Anything else cannot be judged.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use super::pickle::{self, Malformed};
use super::{Budget, Import, Limits, Member, Rule, Scanned, Walked};
use crate::limits::Counted;
use crate::{Error, Result};

/// Scans one local file.
pub fn scan_file(path: &Path, limits: &Limits) -> Result<Scanned> {
    let mut file = File::open(path).map_err(|e| Error::model(path, crate::error::io_cause(&e)))?;
    let len = file
        .metadata()
        .map_err(|e| Error::model(path, crate::error::io_cause(&e)))?
        .len();
    let mut head = [0u8; 16];
    let got = read_up_to(&mut file, &mut head).map_err(|e| Error::model(path, e))?;
    let head = &head[..got];
    file.rewind().map_err(|e| Error::model(path, e))?;
    let mut budget = Budget::new(limits);
    let fail = |member: &str, m: Malformed| {
        let at = if member.is_empty() {
            String::new()
        } else {
            format!("member {member}: ")
        };
        Error::model(path, format!("{at}offset {}: {}", m.offset, m.cause))
    };
    if got == 0 {
        return Err(Error::model(path, "empty file"));
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return zip(path, file, limits, &mut budget);
    }
    if head.starts_with(b"\x93NUMPY") {
        let mut reader = BufReader::new(file);
        let walked = npy(&mut reader, len, &mut budget).map_err(|m| fail("", m))?;
        return Ok(Scanned {
            format: "numpy npy".into(),
            members: walked
                .map(|w| Member {
                    name: String::new(),
                    rule: Rule::Pickle,
                    walked: w,
                })
                .into_iter()
                .collect(),
        });
    }
    if head.starts_with(b"\x89HDF") {
        return Err(Error::model(
            path,
            "HDF5 (a Keras .h5 model or weights file) is not scanned; a Keras .h5 model can carry Lambda code",
        ));
    }
    if head.starts_with(b"ZF") {
        return Err(Error::model(
            path,
            "a joblib file of the format before 0.10 (arrays in side files) cannot be judged from one file",
        ));
    }
    let compression = compression_of(head);
    if let Some(name) = compression {
        let reader = decompressor(name, BufReader::new(file)).map_err(|e| Error::model(path, e))?;
        let mut limited = BufReader::new(Limited::new(reader, limits.max_inflated));
        let walked = stream(&mut limited, &mut budget).map_err(|m| fail("", m))?;
        return Ok(Scanned {
            format: format!("{} ({name})", kind_of(&walked)),
            members: vec![Member {
                name: String::new(),
                rule: Rule::Pickle,
                walked,
            }],
        });
    }
    if let Some(n) = safetensors_header_len(head) {
        let mut reader = BufReader::new(file);
        safetensors(&mut reader, n, len).map_err(|cause| Error::model(path, cause))?;
        return Ok(Scanned {
            format: "safetensors".into(),
            members: Vec::new(),
        });
    }
    if !is_pickle_start(head) {
        return Err(Error::model(
            path,
            "not a recognised model format (pickle, joblib, PyTorch zip, NumPy .npy/.npz, safetensors, Keras .keras)",
        ));
    }
    let mut reader = BufReader::new(file);
    let walked = stream(&mut reader, &mut budget).map_err(|m| fail("", m))?;
    Ok(Scanned {
        format: kind_of(&walked).to_owned(),
        members: vec![Member {
            name: String::new(),
            rule: Rule::Pickle,
            walked,
        }],
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn kind_of(w: &Walked) -> &'static str {
    if w.imports.keys().any(|k| k.starts_with("joblib.")) {
        "joblib"
    } else {
        "pickle"
    }
}

/// Every opcode a pickle of protocol 0–5 can start with (`pickletools`): a protocol
/// header, or the first opcode of a protocol 0/1 stream.
fn is_pickle_start(head: &[u8]) -> bool {
    match head.first() {
        Some(0x80) => head.get(1).is_some_and(|p| *p <= 5),
        Some(b) => b"(.0123FIJKLMNPQRSTUVXabcdeghijlopqrstu}])G".contains(b),
        None => false,
    }
}

/// The compressions joblib writes, by their magic numbers (joblib `compressor.py`).
fn compression_of(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if head.starts_with(b"BZh") {
        Some("bz2")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some("xz")
    } else if head.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
        Some("lz4")
    } else if head.starts_with(&[0x5d, 0x00, 0x00]) {
        // lzma "alone": the properties byte 0x5d (lc 3, lp 0, pb 2) and a dictionary size;
        // no pickle starts with `]` followed by a zero byte.
        Some("lzma")
    } else if head.len() >= 2 && head[0] == 0x78 && matches!(head[1], 0x01 | 0x5e | 0x9c | 0xda) {
        Some("zlib")
    } else {
        None
    }
}

fn decompressor<'a, R: Read + 'a>(name: &str, r: R) -> std::io::Result<Box<dyn Read + 'a>> {
    Ok(match name {
        "gzip" => Box::new(flate2::read::MultiGzDecoder::new(r)),
        "zlib" => Box::new(flate2::read::ZlibDecoder::new(r)),
        "bz2" => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        "xz" => Box::new(lzma_rust2::XzReader::new(r, true)),
        "lzma" => Box::new(
            lzma_rust2::LzmaReader::new_mem_limit(r, u32::MAX, None)
                .map_err(|e| std::io::Error::other(format!("lzma header: {e}")))?,
        ),
        "lz4" => Box::new(lz4::Decoder::new(r)?),
        other => {
            return Err(std::io::Error::other(format!(
                "unknown compression {other}"
            )));
        }
    })
}

/// A reader that fails past `limit` bytes (a decompression bomb is exit 2, not a hang).
struct Limited<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Limited<R> {
    fn new(inner: R, limit: u64) -> Self {
        Self { inner, left: limit }
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(
                    "the decompressed stream is larger than the scan's limit",
                )),
            };
        }
        let cap = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..cap])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// One or more pickles in a row, to the end of the stream (a loader such as PyTorch's
/// legacy format reads several; every one is judged).
fn stream<R: Read>(r: &mut R, budget: &mut Budget) -> std::result::Result<Walked, Malformed> {
    let mut walked = Walked::default();
    let mut count = 0u32;
    let mut base = 0u64;
    loop {
        let mut counter = Counted::new(&mut *r);
        let found = pickle::walk(&mut counter, budget, &mut walked, 0, base)?;
        base += counter.n;
        if !found {
            break;
        }
        count += 1;
    }
    if count == 0 {
        return Err(Malformed {
            offset: 0,
            cause: "no pickle in the stream".into(),
            fatal: false,
        });
    }
    Ok(walked)
}

// ---------------------------------------------------------------- zip archives

fn zip(path: &Path, file: File, limits: &Limits, budget: &mut Budget) -> Result<Scanned> {
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| Error::model(path, format!("not a readable zip archive: {e}")))?;
    let fail =
        |member: &str, cause: String| Error::model(path, format!("member {member}: {cause}"));
    let mut names = Vec::with_capacity(archive.len());
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..archive.len() {
        let f = archive
            .by_index_raw(i)
            .map_err(|e| Error::model(path, format!("zip entry {i}: {e}")))?;
        let name = f
            .name()
            .map_err(|e| Error::model(path, format!("zip entry {i}: {e}")))?
            .into_owned();
        sizes.insert(name.clone(), f.size());
        names.push(name);
    }
    if names
        .iter()
        .any(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
    {
        if let Some(code) = names
            .iter()
            .find(|n| n.contains("/code/") || n.starts_with("code/") || n.ends_with(".py"))
        {
            return Err(fail(
                code,
                "a TorchScript archive: its code is a program this scan does not judge".into(),
            ));
        }
        let mut members = Vec::new();
        // By index, not by name: an archive with two entries of one name is walked whole,
        // whichever of them a loader would pick.
        for (i, name) in names
            .iter()
            .enumerate()
            .filter(|(_, n)| n.ends_with(".pkl"))
        {
            let walked = {
                let entry = archive
                    .by_index(i)
                    .map_err(|e| fail(name, format!("unreadable: {e}")))?;
                let mut reader = BufReader::new(Limited::new(entry, limits.max_inflated));
                stream(&mut reader, budget)
                    .map_err(|m| fail(name, format!("offset {}: {}", m.offset, m.cause)))?
            };
            let prefix = name
                .rsplit_once('/')
                .map_or(String::new(), |(p, _)| format!("{p}/"));
            check_storages(&walked, &prefix, &sizes).map_err(|cause| fail(name, cause))?;
            members.push(Member {
                name: name.clone(),
                rule: Rule::Torch,
                walked,
            });
        }
        return Ok(Scanned {
            format: "pytorch zip".into(),
            members,
        });
    }
    if names.iter().any(|n| n == "config.json")
        && names
            .iter()
            .any(|n| n == "metadata.json" || n.ends_with(".weights.h5"))
    {
        let mut walked = Walked::default();
        for (i, _) in names
            .iter()
            .enumerate()
            .filter(|(_, n)| *n == "config.json")
        {
            let mut text = Vec::new();
            archive
                .by_index(i)
                .map_err(|e| fail("config.json", format!("unreadable: {e}")))?
                .take(256 << 20)
                .read_to_end(&mut text)
                .map_err(|e| fail("config.json", format!("unreadable: {e}")))?;
            let config: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|e| fail("config.json", format!("not JSON: {e}")))?;
            keras_objects(&config, &mut walked);
        }
        return Ok(Scanned {
            format: "keras".into(),
            members: vec![Member {
                name: "config.json".into(),
                rule: Rule::Keras,
                walked,
            }],
        });
    }
    if !names.is_empty() && names.iter().all(|n| n.ends_with(".npy")) {
        let mut members = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let entry = archive
                .by_index(i)
                .map_err(|e| fail(name, format!("unreadable: {e}")))?;
            let size = entry.size();
            let mut reader = BufReader::new(Limited::new(entry, limits.max_inflated));
            let walked = npy(&mut reader, size, budget)
                .map_err(|m| fail(name, format!("offset {}: {}", m.offset, m.cause)))?;
            if let Some(walked) = walked {
                members.push(Member {
                    name: name.clone(),
                    rule: Rule::Pickle,
                    walked,
                });
            }
        }
        return Ok(Scanned {
            format: "numpy npz".into(),
            members,
        });
    }
    Err(Error::model(
        path,
        "a zip archive of no known model layout (PyTorch data.pkl, Keras config.json, NumPy .npz)",
    ))
}

/// Bytes per element of PyTorch's typed storages (`torch/storage.py`); `UntypedStorage`
/// counts bytes.
fn storage_element_size(kind: &str) -> Option<u64> {
    let name = kind.rsplit('.').next()?;
    Some(match name {
        "DoubleStorage" | "LongStorage" | "ComplexFloatStorage" => 8,
        "FloatStorage" | "IntStorage" => 4,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        "CharStorage" | "ByteStorage" | "BoolStorage" | "UntypedStorage" | "QInt8Storage"
        | "QUInt8Storage" => 1,
        "ComplexDoubleStorage" => 16,
        "QInt32Storage" => 4,
        _ => return None,
    })
}

/// Every storage a pickle points at is a record of the archive at least as large as it
/// says, and every tensor view lies inside its storage.
fn check_storages(
    w: &Walked,
    prefix: &str,
    sizes: &BTreeMap<String, u64>,
) -> std::result::Result<(), String> {
    let mut numels: BTreeMap<&str, i64> = BTreeMap::new();
    for p in &w.persistent {
        let Some(s) = p else {
            return Err("a persistent id that is not a PyTorch storage".into());
        };
        let key = s
            .key
            .as_deref()
            .ok_or("a storage whose key is not a string")?;
        let numel = s
            .numel
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("storage {key}: no element count"))?;
        let elsize = storage_element_size(&s.kind)
            .ok_or_else(|| format!("storage {key}: unknown storage type {}", s.kind))?;
        let record = format!("{prefix}data/{key}");
        let size = sizes
            .get(&record)
            .ok_or_else(|| format!("storage {key}: no record {record} in the archive"))?;
        let need = (numel as u64).saturating_mul(elsize);
        if *size < need {
            return Err(format!(
                "storage {key}: record {record} holds {size} bytes, the pickle claims {need}"
            ));
        }
        numels.insert(key, numel);
    }
    for t in &w.tensors {
        let Some(key) = t.key.as_deref() else {
            return Err("a tensor rebuilt from something that is not a storage".into());
        };
        let (Some(offset), Some(size), Some(stride)) = (t.offset, &t.size, &t.stride) else {
            return Err(format!(
                "tensor on storage {key}: offset, size or stride missing"
            ));
        };
        if offset < 0 || size.iter().any(|d| *d < 0) || stride.iter().any(|d| *d < 0) {
            return Err(format!(
                "tensor on storage {key}: a negative offset, size or stride"
            ));
        }
        if size.len() != stride.len() {
            return Err(format!(
                "tensor on storage {key}: {} sizes, {} strides",
                size.len(),
                stride.len()
            ));
        }
        let numel = numels
            .get(key)
            .ok_or_else(|| format!("tensor on storage {key}: the storage is not in the pickle"))?;
        if size.contains(&0) {
            continue;
        }
        let last = size
            .iter()
            .zip(stride)
            .try_fold(offset, |acc, (n, s)| {
                acc.checked_add((n - 1).checked_mul(*s)?)
            })
            .ok_or_else(|| format!("tensor on storage {key}: its extent overflows"))?;
        if last >= *numel {
            return Err(format!(
                "tensor on storage {key}: reaches element {last}, the storage holds {numel}"
            ));
        }
    }
    Ok(())
}

/// The "opcode" of an object of a Keras config; its offset is its ordinal.
pub const KERAS_OBJECT: &str = "Keras object";

/// Every object of a Keras config (`class_name` with a `module`, or a `Lambda`), recorded
/// as an import `module.class_name`.
fn keras_objects(v: &serde_json::Value, out: &mut Walked) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(class) = map.get("class_name").and_then(|c| c.as_str()) {
                let module = map.get("module").and_then(|m| m.as_str());
                let registered = map.get("registered_name").and_then(|m| m.as_str());
                let custom = registered.is_some_and(|r| r.contains('>'));
                let module = match module {
                    Some(m) => Some(m.to_owned()),
                    None if class == "Lambda" || class == "__lambda__" => {
                        Some("keras.layers".into())
                    }
                    None if custom => Some(registered.unwrap_or_default().replace('>', ".")),
                    None => None,
                };
                if let Some(module) = module {
                    let (module, name) =
                        if custom && (module == "keras" || module.starts_with("keras.")) {
                            // A registered custom object declares a Keras module it is not from.
                            (
                                "<custom>".to_owned(),
                                registered.unwrap_or(class).to_owned(),
                            )
                        } else if class == "__lambda__" {
                            ("keras.layers".to_owned(), "Lambda".to_owned())
                        } else {
                            (module, class.to_owned())
                        };
                    let key = format!("{module}.{name}");
                    let ordinal = out.imports.len() as u64;
                    out.imports.entry(key).or_insert_with(|| Import {
                        module,
                        name,
                        // The object's place among the config's objects, in document order.
                        offset: ordinal,
                        opcode: KERAS_OBJECT,
                    });
                }
            }
            for child in map.values() {
                keras_objects(child, out);
            }
        }
        serde_json::Value::Array(items) => {
            for child in items {
                keras_objects(child, out);
            }
        }
        _ => {}
    }
}

mod literal;
mod npy;
mod safetensors;
#[cfg(test)]
mod tests;

use npy::npy;
use safetensors::{safetensors, safetensors_header_len};
