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
        let mut counter = Counter {
            inner: &mut *r,
            n: 0,
        };
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

struct Counter<'r, R> {
    inner: &'r mut R,
    n: u64,
}

impl<R: Read> Read for Counter<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
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

// ---------------------------------------------------------------- NumPy .npy

/// An `.npy` stream of `len` bytes (NumPy `lib/format.py`, format versions 1–3): a header
/// dict, then the data. An object array's data is a pickle, walked; any other array's
/// size must match its shape and dtype exactly.
fn npy<R: Read>(
    r: &mut R,
    len: u64,
    budget: &mut Budget,
) -> std::result::Result<Option<Walked>, Malformed> {
    let bad = |offset: u64, cause: &str| Malformed {
        offset,
        cause: cause.to_owned(),
        fatal: false,
    };
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|_| bad(0, "a truncated .npy header"))?;
    let (hlen, start) = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)
                .map_err(|_| bad(8, "a truncated .npy header"))?;
            (u64::from(u16::from_le_bytes(b)), 10)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)
                .map_err(|_| bad(8, "a truncated .npy header"))?;
            (u64::from(u32::from_le_bytes(b)), 12)
        }
        v => return Err(bad(6, &format!(".npy format version {v}"))),
    };
    if hlen > 1 << 20 || start + hlen > len {
        return Err(bad(8, "the .npy header is longer than the file"));
    }
    let mut header = vec![0u8; hlen as usize];
    r.read_exact(&mut header)
        .map_err(|_| bad(start, "a truncated .npy header"))?;
    let text: String = header.iter().map(|&b| char::from(b)).collect();
    let dict = literal::parse(&text).map_err(|e| bad(start, &format!("the .npy header: {e}")))?;
    let literal::Lit::Dict(fields) = dict else {
        return Err(bad(start, "the .npy header is not a dict"));
    };
    let get = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .map(|(_, v)| v)
    };
    let descr = get("descr").ok_or_else(|| bad(start, "the .npy header has no descr"))?;
    let shape = match get("shape") {
        Some(literal::Lit::Tuple(t)) => t
            .iter()
            .map(|d| match d {
                literal::Lit::Int(i) if *i >= 0 => Some(*i as u64),
                _ => None,
            })
            .collect::<Option<Vec<u64>>>(),
        _ => None,
    }
    .ok_or_else(|| bad(start, "the .npy shape is not a tuple of sizes"))?;
    if !matches!(get("fortran_order"), Some(literal::Lit::Bool(_))) {
        return Err(bad(start, "the .npy header has no fortran_order"));
    }
    let (itemsize, has_object) = npy_itemsize(descr)
        .ok_or_else(|| bad(start, "the .npy descr is not a dtype this scan can size"))?;
    let data_at = start + hlen;
    if has_object {
        let mut walked = Walked::default();
        let mut counter = Counter { inner: r, n: 0 };
        let found = pickle::walk(&mut counter, budget, &mut walked, 1, data_at)?;
        if !found {
            return Err(bad(data_at, "an object array without its pickle"));
        }
        if data_at + counter.n != len {
            return Err(bad(
                data_at + counter.n,
                "bytes after the object array's pickle",
            ));
        }
        return Ok(Some(walked));
    }
    let count = shape
        .iter()
        .try_fold(1u64, |a, d| a.checked_mul(*d))
        .and_then(|c| c.checked_mul(itemsize))
        .ok_or_else(|| bad(start, "the array's size overflows"))?;
    if len - data_at != count {
        return Err(bad(
            data_at,
            &format!(
                "the array data is {} bytes, its shape and dtype say {count}",
                len - data_at
            ),
        ));
    }
    Ok(None)
}

/// Bytes per element of a `.npy` descr (a typestr such as `<f8`, `|O`, `<U5`, or a list of
/// fields) and whether it holds Python objects.
fn npy_itemsize(descr: &literal::Lit) -> Option<(u64, bool)> {
    match descr {
        literal::Lit::Str(s) => {
            let t = s.trim_start_matches(['<', '>', '|', '=']);
            let mut chars = t.chars();
            let kind = chars.next()?;
            if kind == 'O' {
                return Some((8, true));
            }
            let digits: String = chars.take_while(char::is_ascii_digit).collect();
            let n: u64 = digits.parse().ok()?;
            Some((if kind == 'U' { n * 4 } else { n }, false))
        }
        literal::Lit::List(fields) => {
            let mut total = 0u64;
            let mut object = false;
            for f in fields {
                let literal::Lit::Tuple(parts) = f else {
                    return None;
                };
                let (size, obj) = npy_itemsize(parts.get(1)?)?;
                let count = match parts.get(2) {
                    None => 1,
                    Some(literal::Lit::Tuple(dims)) => {
                        dims.iter().try_fold(1u64, |a, d| match d {
                            literal::Lit::Int(i) if *i >= 0 => a.checked_mul(*i as u64),
                            _ => None,
                        })?
                    }
                    Some(literal::Lit::Int(i)) if *i >= 0 => *i as u64,
                    Some(_) => return None,
                };
                total = total.checked_add(size.checked_mul(count)?)?;
                object |= obj;
            }
            Some((total, object))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------- safetensors

fn safetensors_header_len(head: &[u8]) -> Option<u64> {
    if head.len() < 9 || head[8] != b'{' {
        return None;
    }
    let n = u64::from_le_bytes(head[..8].try_into().ok()?);
    (n >= 2).then_some(n)
}

/// Bits per element of the safetensors dtypes (safetensors `tensor.rs`, `Dtype`).
fn safetensors_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        _ => return None,
    })
}

/// The header's bounds, as the reference loader checks them (safetensors `tensor.rs`,
/// `Metadata::validate`): every tensor's dtype is known, its byte range matches its shape,
/// the ranges tile the data area from 0 to its end with no gap or overlap.
fn safetensors<R: Read>(r: &mut R, n: u64, len: u64) -> std::result::Result<(), String> {
    // The reference's limit on the header.
    const MAX_HEADER: u64 = 100_000_000;
    if n > MAX_HEADER {
        return Err(format!(
            "a safetensors header of {n} bytes (the format's limit is {MAX_HEADER})"
        ));
    }
    if 8 + n > len {
        return Err(format!(
            "the safetensors header claims {n} bytes; the file has {}",
            len - 8
        ));
    }
    let mut skip = [0u8; 8];
    r.read_exact(&mut skip).map_err(|e| e.to_string())?;
    let mut header = vec![0u8; n as usize];
    r.read_exact(&mut header).map_err(|e| e.to_string())?;
    let value: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| format!("the safetensors header is not JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("the safetensors header is not an object".into());
    };
    let data_len = len - 8 - n;
    let mut ranges = Vec::new();
    for (name, v) in &map {
        if name == "__metadata__" {
            let ok = v
                .as_object()
                .is_some_and(|m| m.values().all(serde_json::Value::is_string));
            if !ok {
                return Err("__metadata__ is not a map of strings".into());
            }
            continue;
        }
        let t = v
            .as_object()
            .ok_or_else(|| format!("tensor {name}: not an object"))?;
        let dtype = t.get("dtype").and_then(|d| d.as_str()).unwrap_or_default();
        let bits = safetensors_bits(dtype)
            .ok_or_else(|| format!("tensor {name}: unknown dtype {dtype:?}"))?;
        let sizes = |key: &str| -> Option<Vec<u64>> {
            t.get(key)?
                .as_array()?
                .iter()
                .map(serde_json::Value::as_u64)
                .collect()
        };
        let shape =
            sizes("shape").ok_or_else(|| format!("tensor {name}: shape is not a list of sizes"))?;
        let offsets = sizes("data_offsets");
        let [begin, end] = offsets.as_deref().unwrap_or_default() else {
            return Err(format!("tensor {name}: data_offsets is not [begin, end]"));
        };
        if t.keys()
            .any(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets"))
        {
            return Err(format!(
                "tensor {name}: a field other than dtype, shape and data_offsets"
            ));
        }
        let elements = shape
            .iter()
            .try_fold(1u64, |a, d| a.checked_mul(*d))
            .ok_or_else(|| format!("tensor {name}: its size overflows"))?;
        let bits_total = elements
            .checked_mul(bits)
            .ok_or_else(|| format!("tensor {name}: its size overflows"))?;
        if bits_total % 8 != 0 || begin > end || end - begin != bits_total / 8 {
            return Err(format!(
                "tensor {name}: data_offsets [{begin}, {end}] do not hold {elements} {dtype} values"
            ));
        }
        ranges.push((*begin, *end, name.clone()));
    }
    ranges.sort();
    let mut at = 0u64;
    for (begin, end, name) in &ranges {
        if *begin != at {
            return Err(format!(
                "tensor {name}: data_offsets start at {begin}, the previous tensor ends at {at} (a gap or an overlap)"
            ));
        }
        at = *end;
    }
    if at != data_len {
        return Err(format!(
            "the tensors cover {at} bytes of a {data_len}-byte data area"
        ));
    }
    Ok(())
}

/// Python literals as NumPy writes them in an `.npy` header (`repr` of a dict of strings,
/// booleans, integers, tuples and lists).
mod literal {
    #[derive(Debug, Clone, PartialEq)]
    pub enum Lit {
        Str(String),
        Int(i64),
        Bool(bool),
        None,
        Tuple(Vec<Lit>),
        List(Vec<Lit>),
        Dict(Vec<(Lit, Lit)>),
    }

    impl Lit {
        pub fn as_str(&self) -> Option<&str> {
            match self {
                Self::Str(s) => Some(s),
                _ => None,
            }
        }
    }

    pub fn parse(text: &str) -> Result<Lit, String> {
        let b = text.as_bytes();
        let mut i = 0;
        let v = value(b, &mut i, 0)?;
        ws(b, &mut i);
        if i != b.len() {
            return Err(format!("unexpected text at {i}"));
        }
        Ok(v)
    }

    fn ws(b: &[u8], i: &mut usize) {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    }

    fn value(b: &[u8], i: &mut usize, depth: u32) -> Result<Lit, String> {
        if depth > 32 {
            return Err("nested too deep".into());
        }
        ws(b, i);
        let Some(&c) = b.get(*i) else {
            return Err("ends early".into());
        };
        match c {
            b'\'' | b'"' => {
                *i += 1;
                let start = *i;
                while *i < b.len() && b[*i] != c {
                    if b[*i] == b'\\' {
                        return Err("escapes in a string".into());
                    }
                    *i += 1;
                }
                if *i >= b.len() {
                    return Err("an unterminated string".into());
                }
                let s = String::from_utf8_lossy(&b[start..*i]).into_owned();
                *i += 1;
                Ok(Lit::Str(s))
            }
            b'(' | b'[' | b'{' => {
                let close = match c {
                    b'(' => b')',
                    b'[' => b']',
                    _ => b'}',
                };
                *i += 1;
                let mut items = Vec::new();
                let mut pairs = Vec::new();
                loop {
                    ws(b, i);
                    if b.get(*i) == Some(&close) {
                        *i += 1;
                        break;
                    }
                    let v = value(b, i, depth + 1)?;
                    ws(b, i);
                    if c == b'{' {
                        if b.get(*i) != Some(&b':') {
                            return Err("a dict entry without `:`".into());
                        }
                        *i += 1;
                        let w = value(b, i, depth + 1)?;
                        pairs.push((v, w));
                        ws(b, i);
                    } else {
                        items.push(v);
                    }
                    match b.get(*i) {
                        Some(b',') => *i += 1,
                        Some(x) if *x == close => {}
                        _ => return Err("expected `,` or a closing bracket".into()),
                    }
                }
                Ok(match c {
                    b'(' => Lit::Tuple(items),
                    b'[' => Lit::List(items),
                    _ => Lit::Dict(pairs),
                })
            }
            _ => {
                let start = *i;
                while *i < b.len()
                    && (b[*i].is_ascii_alphanumeric() || b[*i] == b'-' || b[*i] == b'_')
                {
                    *i += 1;
                }
                let word = std::str::from_utf8(&b[start..*i]).map_err(|e| e.to_string())?;
                match word {
                    "True" => Ok(Lit::Bool(true)),
                    "False" => Ok(Lit::Bool(false)),
                    "None" => Ok(Lit::None),
                    w => w
                        .trim_end_matches('L')
                        .parse()
                        .map(Lit::Int)
                        .map_err(|_| format!("unexpected {w:?}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn corpus(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/models")
            .join(rel)
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// `depth` pickles, each a bytes value of the one around it; the innermost imports
    /// `posix.system`.
    fn nested(depth: usize) -> Vec<u8> {
        let mut p = b"\x80\x02cposix\nsystem\nq\x00.".to_vec();
        for _ in 0..depth {
            let mut outer = b"\x80\x03B".to_vec();
            outer.extend_from_slice(&u32::try_from(p.len()).unwrap().to_le_bytes());
            outer.extend_from_slice(&p);
            outer.push(b'.');
            p = outer;
        }
        p
    }

    #[test]
    fn running_out_of_any_limit_is_an_error_never_a_pass() {
        let dir = tempfile::tempdir().unwrap();
        let model = corpus("benign/sk_random_forest_zlib.joblib");
        assert!(scan_file(&model, &Limits::default()).is_ok());
        let few_ops = Limits {
            max_ops: 50,
            ..Limits::default()
        };
        let e = scan_file(&model, &few_ops).unwrap_err().to_string();
        assert!(e.contains("more opcodes than the scan's limit"), "{e}");
        let few_values = Limits {
            max_values: 20,
            ..Limits::default()
        };
        let e = scan_file(&model, &few_values).unwrap_err().to_string();
        assert!(e.contains("more values than the scan's limit"), "{e}");
        let small_inflate = Limits {
            max_inflated: 1000,
            ..Limits::default()
        };
        let e = scan_file(&model, &small_inflate).unwrap_err().to_string();
        assert!(e.contains("larger than the scan's limit"), "{e}");
        // Nesting: 8 levels are walked (and the innermost import is found); 9 are refused.
        let ok = write(dir.path(), "nested8.pkl", &nested(8));
        let scanned = scan_file(&ok, &Limits::default()).unwrap();
        assert!(scanned.imports().contains("posix.system"));
        let deep = write(dir.path(), "nested9.pkl", &nested(9));
        let e = scan_file(&deep, &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nested more than 8 deep"), "{e}");
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_inflate_limit() {
        let dir = tempfile::tempdir().unwrap();
        // A pickle of one 32 MiB bytes value, gzip-compressed to a few dozen KiB.
        let mut raw = b"\x80\x04\x8e".to_vec();
        raw.extend_from_slice(&(32u64 << 20).to_le_bytes());
        raw.resize(raw.len() + (32 << 20), 0);
        raw.push(b'.');
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&raw).unwrap();
        let path = write(dir.path(), "bomb.joblib", &gz.finish().unwrap());
        assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
        let limits = Limits {
            max_inflated: 8 << 20,
            ..Limits::default()
        };
        let e = scan_file(&path, &limits).unwrap_err().to_string();
        assert!(e.contains("larger than the scan's limit"), "{e}");
        assert!(scan_file(&path, &Limits::default()).is_ok());
    }

    #[test]
    fn npy_headers_are_parsed_as_python_literals() {
        let lit = literal::parse("{'descr': [('a', '<i8'), ('b', '<f8', (2,))], 'fortran_order': False, 'shape': (3, 4), }")
            .unwrap();
        let literal::Lit::Dict(fields) = lit else {
            panic!("not a dict")
        };
        let descr = &fields[0].1;
        assert_eq!(npy_itemsize(descr), Some((24, false)));
        assert_eq!(
            npy_itemsize(&literal::Lit::Str("|O".into())),
            Some((8, true))
        );
        assert_eq!(
            npy_itemsize(&literal::Lit::Str("<U5".into())),
            Some((20, false))
        );
        assert!(literal::parse("{'descr': '<f8'").is_err());
        assert!(literal::parse("__import__('os')").is_err());
    }
}
