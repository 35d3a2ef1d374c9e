//! The opcodes whose handling goes beyond the stack: sized strings and bytes, the memo,
//! appends and set-items, `BUILD` with joblib's array wrapper and NumPy dtypes, PyTorch
//! tensors and persistent ids, and the argument parsers of the text opcodes.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::values::{Counted, Object, Val};
use super::{Import, KEEP_STRING, Res, Walk};

impl Walk<'_> {
    pub(super) fn sized(&mut self, r: &mut Counted<'_>, op: u8, n: u64) -> Res<Val> {
        let is_text = matches!(op, b'X' | 0x8c | 0x8d | b'T' | b'U');
        if is_text {
            if n as usize > KEEP_STRING {
                r.skip(n)?;
                return Ok(Val::Long);
            }
            let data = r.exact(n as usize)?;
            return Ok(self.text(data));
        }
        self.bytes(r, n)?;
        Ok(Val::Bytes)
    }

    pub(super) fn put(&mut self, r: &Counted<'_>, k: u64) -> Res<()> {
        let v = self.top(r)?.clone();
        self.budget.value().map_err(|c| r.fatal(c.to_owned()))?;
        self.memo.insert(k, v);
        Ok(())
    }

    pub(super) fn get(&mut self, r: &Counted<'_>, k: u64) -> Res<Val> {
        self.memo
            .get(&k)
            .cloned()
            .ok_or_else(|| r.err(format!("memo key {k} was never stored")))
    }

    pub(super) fn append(&mut self, r: &Counted<'_>, items: Vec<Val>) -> Res<()> {
        for _ in &items {
            self.budget.value().map_err(|c| r.fatal(c.to_owned()))?;
        }
        match self.top(r)? {
            Val::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            // APPENDS on another object calls its `extend` or `append`: a method of an
            // object some call made, judged by that call's global.
            Val::Object(_) => Ok(()),
            other => Err(r.err(format!("APPEND to {}", other.kind()))),
        }
    }

    pub(super) fn set_items(&mut self, r: &Counted<'_>, items: Vec<Val>) -> Res<()> {
        for _ in &items {
            self.budget.value().map_err(|c| r.fatal(c.to_owned()))?;
        }
        let kv = pairs(r, items)?;
        match self.top(r)? {
            Val::Dict(d) => {
                d.borrow_mut().extend(kv);
                Ok(())
            }
            // `__setitem__` of an object some call made (an OrderedDict).
            Val::Object(_) => Ok(()),
            other => Err(r.err(format!("SETITEM on {}", other.kind()))),
        }
    }

    /// `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`: the
    /// view it makes must lie inside its storage.
    pub(super) fn tensor(&mut self, args: &[Val]) {
        let ints = |v: Option<&Val>| -> Option<Vec<i64>> {
            match v? {
                Val::Tuple(t) => t.iter().map(Val::as_int).collect(),
                _ => None,
            }
        };
        let key = match args.first() {
            Some(Val::Persistent(p)) => p.get(2).and_then(Val::as_str).map(str::to_owned),
            _ => None,
        };
        self.out.tensors.push(crate::scan::TensorRef {
            key,
            offset: args.get(1).and_then(Val::as_int),
            size: ints(args.get(2)),
            stride: ints(args.get(3)),
        });
    }

    pub(super) fn persistent(&mut self, items: Vec<Val>) -> Val {
        let storage = match items.as_slice() {
            [tag, Val::Global(kind), key, _location, numel, ..]
                if tag.as_str() == Some("storage") =>
            {
                Some(crate::scan::StorageRef {
                    kind: kind.to_string(),
                    key: key.as_str().map(str::to_owned),
                    numel: numel.as_int(),
                })
            }
            _ => None,
        };
        self.out.persistent.push(storage);
        Val::Persistent(Rc::new(items))
    }

    pub(super) fn build(&mut self, r: &Counted<'_>, target: &Val, state: Val, at: u64) -> Res<()> {
        match target {
            Val::Object(o) => {
                o.borrow_mut().state = Some(state);
                Ok(())
            }
            // BUILD on a class or function sets attributes on it (or calls a
            // `__setstate__` found there): not something a model's pickle does.
            Val::Global(g) => {
                self.out.uncallable.push(Import {
                    module: String::new(),
                    name: format!("<BUILD on the global {g}>"),
                    offset: self.base + at,
                    opcode: "BUILD",
                });
                Ok(())
            }
            Val::Opaque | Val::Persistent(_) => Ok(()),
            other => Err(r.err(format!("BUILD on {}", other.kind()))),
        }
    }

    /// After `BUILD` of `joblib.numpy_pickle.NumpyArrayWrapper`, the array's bytes follow in
    /// the stream (joblib `numpy_pickle.py`, `NumpyArrayWrapper.read_array`).
    pub(super) fn after_build(&mut self, r: &mut Counted<'_>) -> Res<()> {
        let Some(Val::Object(o)) = self.stack.last() else {
            return Ok(());
        };
        let o = Rc::clone(o);
        // joblib tests `isinstance(top, NumpyArrayWrapper)` after every BUILD, however the
        // instance was made: by the class itself, or by a factory given the class
        // (`copyreg._reconstructor(cls, ...)`, `__newobj__`-style helpers). Missing one would
        // let its array bytes, which joblib skips, be walked as opcodes here, and opcodes
        // joblib runs after them be swallowed as some argument.
        let is_wrapper = {
            let o = o.borrow();
            o.made_by.as_deref() == Some(WRAPPER)
                || o.args
                    .iter()
                    .any(|a| matches!(a, Val::Global(g) if g.as_ref() == WRAPPER))
        };
        if !is_wrapper {
            return Ok(());
        }
        let Some(Val::Dict(state)) = o.borrow().state.clone() else {
            return Err(r.err("a joblib array wrapper without a state dict".into()));
        };
        // The last value of a key wins, as in the dict `BUILD` updates the instance from.
        let field = |name: &str| -> Option<Val> {
            state
                .borrow()
                .iter()
                .rev()
                .find(|(k, _)| k.as_str() == Some(name))
                .map(|(_, v)| v.clone())
        };
        let shape = match field("shape") {
            Some(Val::Tuple(t)) => t
                .iter()
                .map(|d| d.as_int().and_then(|d| u64::try_from(d).ok()))
                .collect::<Option<Vec<u64>>>(),
            _ => None,
        }
        .ok_or_else(|| {
            r.err("a joblib array wrapper whose shape is not a tuple of sizes".into())
        })?;
        let dtype = match field("dtype") {
            Some(Val::Object(d)) => dtype_of(&d.borrow(), 0),
            _ => None,
        }
        .ok_or_else(|| r.err("a joblib array wrapper whose dtype cannot be sized".into()))?;
        let count = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| r.err("a joblib array whose size overflows".into()))?;
        if dtype.has_object {
            // joblib writes `pickle.dump(array, protocol=2)` here and reads it back with
            // the standard unpickler: a whole nested pickle.
            if self.depth + 1 > self.budget.max_nesting {
                return Err(r.fatal("pickles nested too deep".into()));
            }
            let start = r.offset;
            let mut counted = Counted {
                inner: &mut *r.inner,
                offset: 0,
            };
            let mut inner = Walk {
                stack: Vec::new(),
                marks: Vec::new(),
                memo: BTreeMap::new(),
                budget: &mut *self.budget,
                out: &mut *self.out,
                depth: self.depth + 1,
                base: self.base + start,
            };
            let found = inner.run(&mut counted).map_err(|mut m| {
                m.offset += start;
                m
            })?;
            r.offset += counted.offset;
            if !found {
                return Err(r.err("the object array's pickle is missing".into()));
            }
            self.out.nested += 1;
        } else {
            if field("numpy_array_alignment_bytes").is_some_and(|v| !matches!(v, Val::None)) {
                let pad = r.u8()?;
                r.skip(u64::from(pad))?;
            }
            let n = count
                .checked_mul(dtype.itemsize)
                .ok_or_else(|| r.err("a joblib array whose size overflows".into()))?;
            r.skip(n)?;
            self.out.array_bytes += n;
        }
        if let Some(top) = self.stack.last_mut() {
            *top = Val::Opaque;
        }
        Ok(())
    }
}

pub(super) struct Dtype {
    itemsize: u64,
    has_object: bool,
}

/// The class joblib writes before each array's bytes.
pub(super) const WRAPPER: &str = "joblib.numpy_pickle.NumpyArrayWrapper";

/// The size of a NumPy dtype pickled as `numpy.dtype(descr, False, True)` with the state
/// tuple `(version, byteorder, subarray, names, fields, elsize, alignment, flags, ...)`
/// (NumPy `descriptor.c`, `arraydescr_reduce` / `arraydescr_setstate`), sized exactly as
/// NumPy sizes it: a fixed kind by its descr (`f8`: 8 bytes; the state's `elsize` is
/// ignored for it, as `setstate` ignores it), a flexible kind (`V`, `S`, `U`) by the state's
/// `elsize`. Anything else, or a field whose dtype cannot be read, is `None`: the walk then
/// refuses the stream rather than guess how many bytes joblib would read.
pub(super) fn dtype_of(o: &Object, depth: u32) -> Option<Dtype> {
    let made_by = o.made_by.as_deref()?;
    if depth > 8 || !made_by.ends_with(".dtype") || !made_by.starts_with("numpy") {
        return None;
    }
    let descr = o.args.first()?.as_str()?.to_owned();
    let kind = descr.chars().next()?;
    let digits: String = descr
        .chars()
        .skip(1)
        .take_while(char::is_ascii_digit)
        .collect();
    let n: u64 = digits.parse().ok()?;
    let state = match &o.state {
        Some(Val::Tuple(t)) => Some(Rc::clone(t)),
        None => None,
        Some(_) => return None,
    };
    let at = |i: usize| state.as_ref().and_then(|t| t.get(i)).cloned();
    let elsize = at(5).and_then(|v| v.as_int()).unwrap_or(-1);
    let flags = at(7).and_then(|v| v.as_int()).unwrap_or(0);
    let itemsize = match kind {
        'V' | 'S' | 'U' if elsize > 0 => u64::try_from(elsize).ok()?,
        'U' => n.checked_mul(4)?,
        'V' | 'S' | 'b' | 'i' | 'u' | 'f' | 'c' | 'M' | 'm' | 'O' => n,
        _ => return None,
    };
    // A structured dtype holds objects if any field does.
    let mut fields_object = false;
    match at(4) {
        None | Some(Val::None) => {}
        Some(Val::Dict(fields)) => {
            for (_, v) in fields.borrow().iter() {
                let Val::Tuple(t) = v else { return None };
                let Some(Val::Object(d)) = t.first() else {
                    return None;
                };
                fields_object |= dtype_of(&d.borrow(), depth + 1)?.has_object;
            }
        }
        Some(_) => return None,
    }
    Some(Dtype {
        itemsize,
        has_object: kind == 'O' || flags & 1 == 1 || fields_object,
    })
}

pub(super) fn pairs(r: &Counted<'_>, items: Vec<Val>) -> Res<Vec<(Val, Val)>> {
    if !items.len().is_multiple_of(2) {
        return Err(r.err("an odd number of items for a dict".into()));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

pub(super) fn long_le(v: &[u8]) -> Val {
    if v.is_empty() {
        return Val::Int(0);
    }
    if v.len() > 8 {
        return Val::Number;
    }
    let mut buf = if v[v.len() - 1] & 0x80 != 0 {
        [0xffu8; 8]
    } else {
        [0u8; 8]
    };
    buf[..v.len()].copy_from_slice(v);
    Val::Int(i64::from_le_bytes(buf))
}

/// `a.b.c` with every part a Python identifier (ASCII only: enough to tell names from noise).
pub(super) fn is_dotted_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let mut c = part.chars();
            c.next()
                .is_some_and(|f| f == '_' || f.is_ascii_alphabetic())
                && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
        })
}

pub(super) fn parse_u64(l: &[u8]) -> Option<u64> {
    std::str::from_utf8(l).ok()?.trim().parse().ok()
}

pub(super) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The body of a protocol-0 `STRING` argument: a quoted Python literal. Only the escapes a
/// module or attribute name could carry matter; others are kept as written.
pub(super) fn unquote(l: &[u8]) -> Option<Vec<u8>> {
    let q = *l.first()?;
    if !(q == b'\'' || q == b'"') || l.len() < 2 || l[l.len() - 1] != q {
        return None;
    }
    let body = &l[1..l.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\\' && i + 1 < body.len() {
            let c = body[i + 1];
            match c {
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'\\' | b'\'' | b'"' => out.push(c),
                b'x' if i + 3 < body.len() => {
                    let h = std::str::from_utf8(&body[i + 2..i + 4]).ok()?;
                    out.push(u8::from_str_radix(h, 16).ok()?);
                    i += 4;
                    continue;
                }
                _ => {
                    out.push(b'\\');
                    out.push(c);
                }
            }
            i += 2;
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A protocol-0 `UNICODE` argument (raw-unicode-escape: `\uXXXX` and `\UXXXXXXXX`).
pub(super) fn raw_unicode_unescape(l: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(l);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && matches!(chars.peek(), Some('u' | 'U')) {
            let width = if chars.next() == Some('u') { 4 } else { 8 };
            let hex: String = chars.by_ref().take(width).collect();
            match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                Some(ch) => out.push(ch),
                None => {
                    out.push('\\');
                    out.push_str(&hex);
                }
            }
        } else {
            out.push(c);
        }
    }
    out.into_bytes()
}
