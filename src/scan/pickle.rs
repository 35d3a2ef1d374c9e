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

/// A mutable object: what a call or `NEWOBJ` made. Shared so that `BUILD` through a memo
/// reference updates every copy, as in the real unpickler.
#[derive(Debug, Default)]
struct Object {
    /// The class or function that made it (`module.name`), if it was an imported global.
    made_by: Option<String>,
    /// The positional arguments of the call (kept for `numpy.dtype` and
    /// `torch._utils._rebuild_tensor_v2`).
    args: Vec<Val>,
    /// The state `BUILD` applied.
    state: Option<Val>,
}

#[derive(Debug, Clone)]
enum Val {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside i64, or a float.
    Number,
    Str(Rc<str>),
    /// A string or bytes value too long to keep, by its length.
    Long,
    Bytes,
    Tuple(Rc<Vec<Val>>),
    List(Rc<RefCell<Vec<Val>>>),
    Dict(Rc<RefCell<Vec<(Val, Val)>>>),
    Set,
    Global(Rc<str>),
    Object(Rc<RefCell<Object>>),
    /// A persistent id's object (a PyTorch storage): the id tuple.
    Persistent(Rc<Vec<Val>>),
    /// Something the walk does not follow (a buffer, an array joblib read).
    Opaque,
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Bool(_) => "a bool",
            Self::Int(_) | Self::Number => "a number",
            Self::Str(_) | Self::Long => "a string",
            Self::Bytes => "bytes",
            Self::Tuple(_) => "a tuple",
            Self::List(_) => "a list",
            Self::Dict(_) => "a dict",
            Self::Set => "a set",
            Self::Global(_) => "a global",
            Self::Object(_) => "an object",
            Self::Persistent(_) => "a persistent object",
            Self::Opaque => "an opaque value",
        }
    }
    fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
    fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
}

/// A reader that counts the offset.
struct Counted<'r> {
    inner: &'r mut dyn Read,
    offset: u64,
}

impl Counted<'_> {
    fn byte(&mut self) -> Res<Option<u8>> {
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.offset += 1;
                    return Ok(Some(b[0]));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.fatal(format!("read error: {e}"))),
            }
        }
    }
    fn exact(&mut self, n: usize) -> Res<Vec<u8>> {
        let mut buf = Vec::new();
        let got = (&mut *self.inner)
            .take(n as u64)
            .read_to_end(&mut buf)
            .map_err(|e| self.fatal(format!("read error: {e}")))?;
        self.offset += got as u64;
        if got < n {
            return Err(self.err(format!(
                "the stream ends inside an argument ({got} of {n} bytes)"
            )));
        }
        Ok(buf)
    }
    fn skip(&mut self, n: u64) -> Res<()> {
        let got = std::io::copy(&mut (&mut *self.inner).take(n), &mut std::io::sink())
            .map_err(|e| self.fatal(format!("read error: {e}")))?;
        self.offset += got;
        if got < n {
            return Err(self.err(format!(
                "the stream ends inside array data ({got} of {n} bytes)"
            )));
        }
        Ok(())
    }
    fn u8(&mut self) -> Res<u8> {
        self.byte()?
            .ok_or_else(|| self.err("the stream ends inside an argument".into()))
    }
    fn le<const N: usize>(&mut self) -> Res<[u8; N]> {
        let v = self.exact(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        Ok(a)
    }
    fn line(&mut self) -> Res<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            match self.byte()? {
                Some(b'\n') => return Ok(out),
                Some(b) => {
                    if out.len() >= KEEP_STRING * 16 {
                        return Err(self.err("a text argument longer than 64 KiB".into()));
                    }
                    out.push(b);
                }
                None => return Err(self.err("the stream ends inside a text argument".into())),
            }
        }
    }
    fn err(&self, cause: String) -> Malformed {
        Malformed {
            offset: self.offset,
            cause,
            fatal: false,
        }
    }
    /// A limit ran out, or the stream failed: see [`Malformed::fatal`].
    fn fatal(&self, cause: String) -> Malformed {
        Malformed {
            offset: self.offset,
            cause,
            fatal: true,
        }
    }
}

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

    fn sized(&mut self, r: &mut Counted<'_>, op: u8, n: u64) -> Res<Val> {
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

    fn put(&mut self, r: &Counted<'_>, k: u64) -> Res<()> {
        let v = self.top(r)?.clone();
        self.budget.value().map_err(|c| r.fatal(c.to_owned()))?;
        self.memo.insert(k, v);
        Ok(())
    }

    fn get(&mut self, r: &Counted<'_>, k: u64) -> Res<Val> {
        self.memo
            .get(&k)
            .cloned()
            .ok_or_else(|| r.err(format!("memo key {k} was never stored")))
    }

    fn append(&mut self, r: &Counted<'_>, items: Vec<Val>) -> Res<()> {
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

    fn set_items(&mut self, r: &Counted<'_>, items: Vec<Val>) -> Res<()> {
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
    fn tensor(&mut self, args: &[Val]) {
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
        self.out.tensors.push(super::TensorRef {
            key,
            offset: args.get(1).and_then(Val::as_int),
            size: ints(args.get(2)),
            stride: ints(args.get(3)),
        });
    }

    fn persistent(&mut self, items: Vec<Val>) -> Val {
        let storage = match items.as_slice() {
            [tag, Val::Global(kind), key, _location, numel, ..]
                if tag.as_str() == Some("storage") =>
            {
                Some(super::StorageRef {
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

    fn build(&mut self, r: &Counted<'_>, target: &Val, state: Val, at: u64) -> Res<()> {
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
    fn after_build(&mut self, r: &mut Counted<'_>) -> Res<()> {
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

struct Dtype {
    itemsize: u64,
    has_object: bool,
}

/// The class joblib writes before each array's bytes.
const WRAPPER: &str = "joblib.numpy_pickle.NumpyArrayWrapper";

/// The size of a NumPy dtype pickled as `numpy.dtype(descr, False, True)` with the state
/// tuple `(version, byteorder, subarray, names, fields, elsize, alignment, flags, ...)`
/// (NumPy `descriptor.c`, `arraydescr_reduce` / `arraydescr_setstate`), sized exactly as
/// NumPy sizes it: a fixed kind by its descr (`f8`: 8 bytes; the state's `elsize` is
/// ignored for it, as `setstate` ignores it), a flexible kind (`V`, `S`, `U`) by the state's
/// `elsize`. Anything else, or a field whose dtype cannot be read, is `None`: the walk then
/// refuses the stream rather than guess how many bytes joblib would read.
fn dtype_of(o: &Object, depth: u32) -> Option<Dtype> {
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

fn pairs(r: &Counted<'_>, items: Vec<Val>) -> Res<Vec<(Val, Val)>> {
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

fn long_le(v: &[u8]) -> Val {
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
fn is_dotted_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let mut c = part.chars();
            c.next()
                .is_some_and(|f| f == '_' || f.is_ascii_alphabetic())
                && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
        })
}

fn parse_u64(l: &[u8]) -> Option<u64> {
    std::str::from_utf8(l).ok()?.trim().parse().ok()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The body of a protocol-0 `STRING` argument: a quoted Python literal. Only the escapes a
/// module or attribute name could carry matter; others are kept as written.
fn unquote(l: &[u8]) -> Option<Vec<u8>> {
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
fn raw_unicode_unescape(l: &[u8]) -> Vec<u8> {
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
