//! The values a walk keeps on its stack and memo, and the counting reader it walks.

use std::cell::RefCell;
use std::io::Read;
use std::rc::Rc;

use super::{KEEP_STRING, Malformed, Res};

/// A mutable object: what a call or `NEWOBJ` made. Shared so that `BUILD` through a memo
/// reference updates every copy, as in the real unpickler.
#[derive(Debug, Default)]
pub(super) struct Object {
    /// The class or function that made it (`module.name`), if it was an imported global.
    pub(super) made_by: Option<String>,
    /// The positional arguments of the call (kept for `numpy.dtype` and
    /// `torch._utils._rebuild_tensor_v2`).
    pub(super) args: Vec<Val>,
    /// The state `BUILD` applied.
    pub(super) state: Option<Val>,
}

#[derive(Debug, Clone)]
pub(super) enum Val {
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
    pub(super) fn kind(&self) -> &'static str {
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
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
    pub(super) fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
}

/// A reader that counts the offset.
pub(super) struct Counted<'r> {
    pub(super) inner: &'r mut dyn Read,
    pub(super) offset: u64,
}

impl Counted<'_> {
    pub(super) fn byte(&mut self) -> Res<Option<u8>> {
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
    pub(super) fn exact(&mut self, n: usize) -> Res<Vec<u8>> {
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
    pub(super) fn skip(&mut self, n: u64) -> Res<()> {
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
    pub(super) fn u8(&mut self) -> Res<u8> {
        self.byte()?
            .ok_or_else(|| self.err("the stream ends inside an argument".into()))
    }
    pub(super) fn le<const N: usize>(&mut self) -> Res<[u8; N]> {
        let v = self.exact(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        Ok(a)
    }
    pub(super) fn line(&mut self) -> Res<Vec<u8>> {
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
    pub(super) fn err(&self, cause: String) -> Malformed {
        Malformed {
            offset: self.offset,
            cause,
            fatal: false,
        }
    }
    /// A limit ran out, or the stream failed: see [`Malformed::fatal`].
    pub(super) fn fatal(&self, cause: String) -> Malformed {
        Malformed {
            offset: self.offset,
            cause,
            fatal: true,
        }
    }
}
