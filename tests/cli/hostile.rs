//! The fuzz targets' seeds and every input a fuzzer found (`fuzz/regressions/`), replayed
//! through the same entry points (`poisongate::fuzzing`): each must come back as read or
//! refused, never as a panic. The well-formed seeds must be read, so that a harness that
//! refused everything would fail here.

use std::path::Path;

use poisongate::fuzzing::TARGETS;

/// Seeds that are well-formed inputs and must be read.
const READABLE: &[(&str, &str)] = &[
    ("baseline", "bundled.json"),
    ("check_csv", "clean.csv"),
    ("check_csv", "hostile_values.csv"),
    ("noise", "pinned.json"),
    ("parent_report", "flip10.json"),
    ("policy", "template.toml"),
    ("policy", "strict.toml"),
    ("read_csv", "small.csv"),
    ("read_ipc", "small.arrow"),
    ("read_ipc", "types.arrow"),
    ("read_ipc", "types.lz4.arrow"),
    ("read_ipc", "types.zstd.arrow"),
    ("read_ndjson", "small.ndjson"),
    ("read_parquet", "small.parquet"),
    ("sha256sum", "plain.sha256"),
    ("sha256sum", "escaped.sha256"),
    ("signature", "valid"),
    ("signature", "raw_der"),
];

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn hostile_inputs_are_read_or_refused_never_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let seeds = files(&root.join("seeds").join(name));
        assert!(!seeds.is_empty(), "fuzz/seeds/{name} is empty");
        for path in seeds
            .iter()
            .chain(&files(&root.join("regressions").join(name)))
        {
            let bytes = std::fs::read(path).unwrap();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let outcome = std::panic::catch_unwind(|| target(&bytes))
                .unwrap_or_else(|_| panic!("{name}: {} panicked", path.display()));
            if READABLE.contains(&(*name, file.as_str())) {
                assert!(outcome.is_ok(), "{name}: {file} refused: {outcome:?}");
            } else if let Err(e) = &outcome {
                // A refusal is one line, as the command line prints it.
                assert!(!e.is_empty() && !e.contains('\n'), "{name}: {file}: {e:?}");
            }
            replayed += 1;
        }
    }
    assert!(
        replayed >= TARGETS.len() * 2,
        "only {replayed} inputs replayed"
    );
}

/// Arrow IPC buffers that claim more memory than the file can hold are refused by the walk of
/// the file's messages, naming the message, before the decoder allocates what they claim.
#[test]
fn ipc_buffers_claiming_more_than_the_file_are_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/read_ipc");
    let (_, read_ipc) = TARGETS.iter().find(|(n, _)| *n == "read_ipc").unwrap();
    for (file, cause) in [
        ("dictionary_buffer_87tb.arrow", "record batch 0"),
        (
            "compressed_claims_1pib.arrow",
            "dictionary batch 0: a compressed buffer of 29 bytes declares 1125899906842624 decompressed",
        ),
    ] {
        let err = read_ipc(&std::fs::read(dir.join(file)).unwrap()).unwrap_err();
        assert!(err.contains(cause), "{file}: {err}");
    }
}

/// A Parquet page that claims more values than its column chunk (the decoder would size a
/// buffer from the claim and abort) is refused by the walk of the page headers, naming the
/// row group and the claim.
#[test]
fn parquet_pages_claiming_more_than_their_chunk_are_refused() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions/read_parquet/negative_page_values.parquet");
    let (_, read_parquet) = TARGETS.iter().find(|(n, _)| *n == "read_parquet").unwrap();
    let err = read_parquet(&std::fs::read(file).unwrap()).unwrap_err();
    assert!(
        err.contains("row group 0: a page declares")
            && err.contains("more than its column chunk's"),
        "{err}"
    );
}
