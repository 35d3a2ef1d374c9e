use std::io::Write;

use super::npy::npy_itemsize;
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
    let lit = literal::parse(
        "{'descr': [('a', '<i8'), ('b', '<f8', (2,))], 'fortran_order': False, 'shape': (3, 4), }",
    )
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
