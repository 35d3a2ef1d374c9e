//! Python literals as NumPy writes them in an `.npy` header (`repr` of a dict of strings,
//! booleans, integers, tuples and lists).

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
            while *i < b.len() && (b[*i].is_ascii_alphanumeric() || b[*i] == b'-' || b[*i] == b'_')
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
