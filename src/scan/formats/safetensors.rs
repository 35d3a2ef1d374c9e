//! safetensors files: the JSON header's tensors must tile the data exactly.

use std::io::Read;

pub(super) fn safetensors_header_len(head: &[u8]) -> Option<u64> {
    if head.len() < 9 || head[8] != b'{' {
        return None;
    }
    let n = u64::from_le_bytes(head[..8].try_into().ok()?);
    (n >= 2).then_some(n)
}

/// Bits per element of the safetensors dtypes (safetensors `tensor.rs`, `Dtype`).
pub(super) fn safetensors_bits(dtype: &str) -> Option<u64> {
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
pub(super) fn safetensors<R: Read>(r: &mut R, n: u64, len: u64) -> std::result::Result<(), String> {
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
