//! NumPy `.npy` streams: the header dict, then the data (an object array's data is a pickle,
//! walked).

use std::io::Read;

use super::literal;
use crate::limits::Counted;
use crate::scan::pickle::{self, Malformed};
use crate::scan::{Budget, Walked};

/// An `.npy` stream of `len` bytes (NumPy `lib/format.py`, format versions 1–3): a header
/// dict, then the data. An object array's data is a pickle, walked; any other array's
/// size must match its shape and dtype exactly.
pub(super) fn npy<R: Read>(
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
        let mut counter = Counted::new(&mut *r);
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
pub(super) fn npy_itemsize(descr: &literal::Lit) -> Option<(u64, bool)> {
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
