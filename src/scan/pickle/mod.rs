//! A pickle walked as the stack machine it is, never executed.
//!
//! Every opcode of protocols 0–5 (CPython's `Lib/pickletools.py` is the reference for their
//! arguments and stack effects) moves values on a simulated stack and memo. The values are
//! what the walk needs to judge the stream and nothing more: the strings `STACK_GLOBAL`
//! names, the globals a call reaches, the state dictionaries `BUILD` applies, the persistent
//! ids a PyTorch archive points at. Everything a loader would *call* (`REDUCE`, `NEWOBJ`,
//! `NEWOBJ_EX`, `INST`, `OBJ`, `BUILD` with a `__setstate__`) can only call a value that some
//! `GLOBAL`, `STACK_GLOBAL`, `INST` or `EXT*` put there, so the walk records every such
//! import with its offset; the caller judges them against the allowlist. A call of anything
//! that is not an imported global is itself unsafe: the walk cannot name what it would run.
//!
//! joblib's stream is a pickle with NumPy array data written between its opcodes (joblib
//! `numpy_pickle.NumpyArrayWrapper.write_array`): after the `BUILD` of a wrapper the walk
//! sizes the array from the wrapper's shape and dtype, skips the padding and the data, or,
//! for an object array, walks the nested pickle that joblib writes there.
//!
//! Bytes values that are themselves pickles (a protocol 2–5 header and a stream that walks
//! to `STOP`) are walked too: a loader that unpickles them would run what they import.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Read;
use std::rc::Rc;

use super::{Budget, Import, Walked};

mod ops;
mod values;

use ops::{is_dotted_name, long_le, lossy, pairs, parse_u64, raw_unicode_unescape, unquote};
use values::{Counted, Object, Val};

/// The longest string kept as text; longer ones are kept only as their length (a global's
/// module or name is never this long in a real model).
const KEEP_STRING: usize = 4096;

/// Why a walk could not judge the stream (exit 2).
#[derive(Debug)]
pub struct Malformed {
    /// Offset of the opcode that failed, in the stream walked.
    pub offset: u64,
    /// What is wrong.
    pub cause: String,
    /// A limit of the scan ran out, or the stream could not be read: never taken for a
    /// bytes value that merely looked like a pickle (a nested walk that fails this way fails
    /// the file).
    pub fatal: bool,
}

type Res<T> = std::result::Result<T, Malformed>;

/// The walk of one stream.
struct Walk<'b> {
    stack: Vec<Val>,
    marks: Vec<usize>,
    memo: BTreeMap<u64, Val>,
    budget: &'b mut Budget,
    out: &'b mut Walked,
    depth: u32,
    /// Where the stream walked began, in its member (for nested pickles inside joblib).
    base: u64,
}

/// Walks one pickle from `reader` to its `STOP`, recording into `out`. `depth` counts the
/// pickles this one is nested in. Returns whether a pickle was found at all (`false`: the
/// stream was empty).
pub fn walk(
    reader: &mut dyn Read,
    budget: &mut Budget,
    out: &mut Walked,
    depth: u32,
    base: u64,
) -> Result<bool, Malformed> {
    let mut r = Counted {
        inner: reader,
        offset: 0,
    };
    let mut w = Walk {
        stack: Vec::new(),
        marks: Vec::new(),
        memo: BTreeMap::new(),
        budget,
        out,
        depth,
        base,
    };
    let result = w.run(&mut r);
    result.map_err(|mut m| {
        m.offset += base;
        m
    })
}

impl Walk<'_> {
    fn pop(&mut self, r: &Counted<'_>) -> Res<Val> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(r.err("pop from an empty stack (or across a MARK)".into()));
        }
        Ok(self.stack.pop().unwrap_or(Val::None))
    }
    fn top(&self, r: &Counted<'_>) -> Res<&Val> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(r.err("the stack is empty".into()));
        }
        Ok(self.stack.last().unwrap_or(&Val::None))
    }
    fn pop_mark(&mut self, r: &Counted<'_>) -> Res<Vec<Val>> {
        let Some(at) = self.marks.pop() else {
            return Err(r.err("no MARK to pop to".into()));
        };
        Ok(self.stack.split_off(at))
    }
    fn push(&mut self, v: Val) -> std::result::Result<(), &'static str> {
        self.budget.value()?;
        self.stack.push(v);
        Ok(())
    }
    fn import(&mut self, module: &str, name: &str, offset: u64, opcode: &'static str) -> Val {
        let key = format!("{module}.{name}");
        self.out
            .imports
            .entry(key.clone())
            .or_insert_with(|| Import {
                module: module.to_owned(),
                name: name.to_owned(),
                offset: self.base + offset,
                opcode,
            });
        Val::Global(key.into())
    }
    /// A call the loader would make: only an imported global can be called and judged.
    fn call(&mut self, callable: &Val, offset: u64, opcode: &'static str, args: Vec<Val>) -> Val {
        match callable {
            Val::Global(g)
                if g.ends_with("._rebuild_tensor_v2") || g.ends_with("._rebuild_tensor") =>
            {
                self.tensor(&args);
                Val::Opaque
            }
            Val::Global(g) => Val::Object(Rc::new(RefCell::new(Object {
                made_by: Some(g.to_string()),
                args,
                state: None,
            }))),
            other => {
                self.out.uncallable.push(Import {
                    module: String::new(),
                    name: format!("<{}>", other.kind()),
                    offset: self.base + offset,
                    opcode,
                });
                Val::Opaque
            }
        }
    }
    fn text(&mut self, bytes: Vec<u8>) -> Val {
        if bytes.len() > KEEP_STRING {
            return Val::Long;
        }
        match String::from_utf8(bytes) {
            Ok(s) => Val::Str(s.into()),
            Err(_) => Val::Long,
        }
    }
    /// A bytes value of `n` bytes: streamed, and walked as a pickle when it starts like one
    /// (the value itself is never held).
    fn bytes(&mut self, r: &mut Counted<'_>, n: u64) -> Res<()> {
        if n < 3 {
            return r.skip(n);
        }
        let head = r.exact(2)?;
        if !(head[0] == 0x80 && (2..=5).contains(&head[1])) {
            return r.skip(n - 2);
        }
        if self.depth + 1 > self.budget.max_nesting {
            return Err(r.fatal(format!(
                "pickles nested more than {} deep",
                self.budget.max_nesting
            )));
        }
        let at = self.base + r.offset - 2;
        let mut take = (&mut *r.inner).take(n - 2);
        // A bytes value that only starts like a pickle may be data: a failed walk of it is
        // not an error of the outer stream. But a loader that unpickles it runs every call
        // before the point where it fails, so the imports of a failed walk count too, when
        // they are Python names (random bytes almost never make one).
        let mut scratch = Walked::default();
        let walked = {
            let mut chained = (&head[..]).chain(&mut take);
            walk(
                &mut chained as &mut dyn Read,
                self.budget,
                &mut scratch,
                self.depth + 1,
                0,
            )
        };
        let complete = match walked {
            Ok(_) => true,
            Err(m) if m.fatal => {
                return Err(Malformed {
                    offset: r.offset - 2 + m.offset,
                    ..m
                });
            }
            Err(_) => false,
        };
        let left = take.limit();
        r.offset += n - 2 - left;
        r.skip(left)?;
        if complete {
            self.out.nested += 1 + scratch.nested;
            for mut v in scratch.uncallable {
                v.offset = at;
                self.out.uncallable.push(v);
            }
            self.out.persistent.extend(scratch.persistent);
            self.out.tensors.extend(scratch.tensors);
        }
        for (k, mut v) in scratch.imports {
            if complete || (is_dotted_name(&v.module) && is_dotted_name(&v.name)) {
                v.opcode = "nested pickle";
                v.offset = at;
                self.out.imports.entry(k).or_insert(v);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_lines)]
    fn run(&mut self, r: &mut Counted<'_>) -> Res<bool> {
        let mut first = true;
        loop {
            let at = r.offset;
            let Some(op) = r.byte()? else {
                if first {
                    return Ok(false);
                }
                return Err(r.err("the stream ends before STOP".into()));
            };
            first = false;
            self.budget.op().map_err(|c| r.fatal(c.to_owned()))?;
            let pushed: Option<Val> = match op {
                b'.' => {
                    // STOP: the result is the one value left.
                    if self.stack.len() != 1 || !self.marks.is_empty() {
                        return Err(r.err(format!(
                            "STOP with {} values and {} marks on the stack",
                            self.stack.len(),
                            self.marks.len()
                        )));
                    }
                    return Ok(true);
                }
                b'(' => {
                    self.marks.push(self.stack.len());
                    None
                }
                b'0' => {
                    self.pop(r)?;
                    None
                }
                b'1' => {
                    self.pop_mark(r)?;
                    None
                }
                b'2' => Some(self.top(r)?.clone()),
                b'F' => {
                    r.line()?;
                    Some(Val::Number)
                }
                b'I' => {
                    let l = r.line()?;
                    let s = String::from_utf8_lossy(&l);
                    Some(match s.as_ref() {
                        "00" => Val::Bool(false),
                        "01" => Val::Bool(true),
                        t => Val::Int(
                            t.parse()
                                .map_err(|_| r.err(format!("INT argument {t:?}")))?,
                        ),
                    })
                }
                b'J' => Some(Val::Int(i64::from(i32::from_le_bytes(r.le::<4>()?)))),
                b'K' => Some(Val::Int(i64::from(r.u8()?))),
                b'M' => Some(Val::Int(i64::from(u16::from_le_bytes(r.le::<2>()?)))),
                b'L' => {
                    let l = r.line()?;
                    let s = String::from_utf8_lossy(&l);
                    Some(
                        s.trim_end_matches('L')
                            .parse::<i64>()
                            .map_or(Val::Number, Val::Int),
                    )
                }
                b'N' => Some(Val::None),
                0x88 => Some(Val::Bool(true)),
                0x89 => Some(Val::Bool(false)),
                0x8a => {
                    let n = usize::from(r.u8()?);
                    Some(long_le(&r.exact(n)?))
                }
                0x8b => {
                    let n = i32::from_le_bytes(r.le::<4>()?);
                    let n = u64::try_from(n).map_err(|_| r.err("LONG4 length < 0".into()))?;
                    if n > 8 {
                        r.skip(n)?;
                        Some(Val::Number)
                    } else {
                        Some(long_le(&r.exact(n as usize)?))
                    }
                }
                b'G' => {
                    r.le::<8>()?;
                    Some(Val::Number)
                }
                b'S' => {
                    let l = r.line()?;
                    Some(self.text(
                        unquote(&l).ok_or_else(|| r.err("STRING argument is not quoted".into()))?,
                    ))
                }
                b'V' => {
                    let l = r.line()?;
                    Some(self.text(raw_unicode_unescape(&l)))
                }
                b'T' | b'X' | b'B' => {
                    let n = u32::from_le_bytes(r.le::<4>()?);
                    Some(self.sized(r, op, u64::from(n))?)
                }
                b'U' | b'C' | 0x8c => {
                    let n = r.u8()?;
                    Some(self.sized(r, op, u64::from(n))?)
                }
                0x8d | 0x8e | 0x96 => {
                    let n = u64::from_le_bytes(r.le::<8>()?);
                    Some(self.sized(r, op, n)?)
                }
                0x97 | 0x98 => {
                    // NEXT_BUFFER pushes an out-of-band buffer (the loader must supply it);
                    // READONLY_BUFFER wraps the top one.
                    if op == 0x98 {
                        self.pop(r)?;
                    }
                    Some(Val::Opaque)
                }
                b')' => Some(Val::Tuple(Rc::new(Vec::new()))),
                b't' => {
                    let items = self.pop_mark(r)?;
                    Some(Val::Tuple(Rc::new(items)))
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop(r)?);
                    }
                    items.reverse();
                    Some(Val::Tuple(Rc::new(items)))
                }
                b']' => Some(Val::List(Rc::default())),
                b'l' => {
                    let items = self.pop_mark(r)?;
                    Some(Val::List(Rc::new(RefCell::new(items))))
                }
                b'}' => Some(Val::Dict(Rc::default())),
                b'd' => {
                    let items = self.pop_mark(r)?;
                    Some(Val::Dict(Rc::new(RefCell::new(pairs(r, items)?))))
                }
                0x8f => Some(Val::Set),
                0x91 => {
                    self.pop_mark(r)?;
                    Some(Val::Set)
                }
                b'a' => {
                    let v = self.pop(r)?;
                    self.append(r, vec![v])?;
                    None
                }
                b'e' => {
                    let items = self.pop_mark(r)?;
                    self.append(r, items)?;
                    None
                }
                0x90 => {
                    let _ = self.pop_mark(r)?;
                    match self.top(r)? {
                        Val::Set => None,
                        other => {
                            return Err(r.err(format!("ADDITEMS to {}", other.kind())));
                        }
                    }
                }
                b's' => {
                    let v = self.pop(r)?;
                    let k = self.pop(r)?;
                    self.set_items(r, vec![k, v])?;
                    None
                }
                b'u' => {
                    let items = self.pop_mark(r)?;
                    self.set_items(r, items)?;
                    None
                }
                b'p' => {
                    let l = r.line()?;
                    let k = parse_u64(&l).ok_or_else(|| r.err("PUT argument".into()))?;
                    self.put(r, k)?;
                    None
                }
                b'q' => {
                    let k = u64::from(r.u8()?);
                    self.put(r, k)?;
                    None
                }
                b'r' => {
                    let k = u64::from(u32::from_le_bytes(r.le::<4>()?));
                    self.put(r, k)?;
                    None
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.put(r, k)?;
                    None
                }
                b'g' => {
                    let l = r.line()?;
                    let k = parse_u64(&l).ok_or_else(|| r.err("GET argument".into()))?;
                    Some(self.get(r, k)?)
                }
                b'h' => {
                    let k = u64::from(r.u8()?);
                    Some(self.get(r, k)?)
                }
                b'j' => {
                    let k = u64::from(u32::from_le_bytes(r.le::<4>()?));
                    Some(self.get(r, k)?)
                }
                b'c' => {
                    let module = r.line()?;
                    let name = r.line()?;
                    let (module, name) = (lossy(&module), lossy(&name));
                    Some(self.import(&module, &name, at, "GLOBAL"))
                }
                0x93 => {
                    let name = self.pop(r)?;
                    let module = self.pop(r)?;
                    match (module.as_str(), name.as_str()) {
                        (Some(m), Some(n)) => {
                            let (m, n) = (m.to_owned(), n.to_owned());
                            Some(self.import(&m, &n, at, "STACK_GLOBAL"))
                        }
                        _ => {
                            // The loader would import whatever these values are at run
                            // time; the walk cannot name it.
                            self.out.uncallable.push(Import {
                                module: String::new(),
                                name: format!(
                                    "<STACK_GLOBAL of {} and {}>",
                                    module.kind(),
                                    name.kind()
                                ),
                                offset: self.base + at,
                                opcode: "STACK_GLOBAL",
                            });
                            Some(Val::Opaque)
                        }
                    }
                }
                0x82..=0x84 => {
                    let code = match op {
                        0x82 => u32::from(r.u8()?),
                        0x83 => u32::from(u16::from_le_bytes(r.le::<2>()?)),
                        _ => i32::from_le_bytes(r.le::<4>()?) as u32,
                    };
                    // The copyreg extension registry maps codes to globals the walk
                    // cannot see: recorded under a name no allowlist holds.
                    let key = format!("ext:{code}");
                    self.out
                        .imports
                        .entry(key.clone())
                        .or_insert_with(|| Import {
                            module: String::new(),
                            name: key.clone(),
                            offset: self.base + at,
                            opcode: "EXT",
                        });
                    Some(Val::Global(key.into()))
                }
                b'R' => {
                    let args = self.pop(r)?;
                    let callable = self.pop(r)?;
                    let args = match args {
                        Val::Tuple(t) => t.as_ref().clone(),
                        _ => Vec::new(),
                    };
                    Some(self.call(&callable, at, "REDUCE", args))
                }
                0x81 => {
                    let args = self.pop(r)?;
                    let cls = self.pop(r)?;
                    let args = match args {
                        Val::Tuple(t) => t.as_ref().clone(),
                        _ => Vec::new(),
                    };
                    Some(self.call(&cls, at, "NEWOBJ", args))
                }
                0x92 => {
                    let _kwargs = self.pop(r)?;
                    let args = self.pop(r)?;
                    let cls = self.pop(r)?;
                    let args = match args {
                        Val::Tuple(t) => t.as_ref().clone(),
                        _ => Vec::new(),
                    };
                    Some(self.call(&cls, at, "NEWOBJ_EX", args))
                }
                b'i' => {
                    let module = r.line()?;
                    let name = r.line()?;
                    let args = self.pop_mark(r)?;
                    let g = self.import(&lossy(&module), &lossy(&name), at, "INST");
                    Some(self.call(&g, at, "INST", args))
                }
                b'o' => {
                    let mut items = self.pop_mark(r)?;
                    if items.is_empty() {
                        return Err(r.err("OBJ with no class".into()));
                    }
                    let cls = items.remove(0);
                    Some(self.call(&cls, at, "OBJ", items))
                }
                b'b' => {
                    let state = self.pop(r)?;
                    let target = self.top(r)?.clone();
                    self.build(r, &target, state, at)?;
                    None
                }
                b'P' => {
                    let l = r.line()?;
                    let id = self.text(l);
                    Some(self.persistent(vec![id]))
                }
                b'Q' => {
                    let pid = self.pop(r)?;
                    let items = match pid {
                        Val::Tuple(t) => t.as_ref().clone(),
                        other => vec![other],
                    };
                    Some(self.persistent(items))
                }
                0x80 => {
                    let proto = r.u8()?;
                    if proto > 5 {
                        return Err(r.err(format!("unknown pickle protocol {proto}")));
                    }
                    None
                }
                0x95 => {
                    // FRAME: a length hint for buffering; the opcodes that follow are read
                    // one by one either way.
                    r.le::<8>()?;
                    None
                }
                other => {
                    return Err(Malformed {
                        offset: at,
                        cause: format!("unknown opcode 0x{other:02x}"),
                        fatal: false,
                    });
                }
            };
            if let Some(v) = pushed {
                self.push(v).map_err(|c| r.fatal(c.to_owned()))?;
            }
            // A joblib array wrapper that BUILD just completed: its data follows.
            if op == b'b' {
                self.after_build(r)?;
            }
        }
    }
}
