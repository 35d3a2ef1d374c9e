//! `poisongate verify`.

use std::fmt::Write;
use std::path::Path;

use poisongate::integrity::{self, SignatureCheck};
use poisongate::report::Verdict;
use poisongate::source::{ObjectRef, S3Options, Sources};

use super::{SignArgs, VerifyArgs};

pub fn run(args: &VerifyArgs) -> poisongate::Result<Verdict> {
    let sources = Sources::new(S3Options {
        endpoint: args.s3_endpoint.clone(),
    });
    if args.scan {
        return scan(args, &sources);
    }
    if let (Some(attestation), Some(key)) = (&args.attestation, &args.public_key) {
        return attestation_check(args, &sources, attestation, key);
    }
    if let (Some(dir), Some(bundle)) = (&args.model, &args.bundle) {
        return model(args, dir, bundle);
    }
    if args.signature.is_some() != args.public_key.is_some() {
        return Err(poisongate::Error::Usage(
            "--signature and --public-key go together (or --model DIR --bundle SIG --public-key PEM)".into(),
        ));
    }
    // What S3 reported for each object read, for --require-sse-kms.
    let mut objects: Vec<(String, Option<ObjectRef>)> = Vec::new();
    let checked = match (&args.sha256_file, &args.signature, &args.public_key) {
        (Some(sums), _, _) => {
            let (bytes, _) = sources.read_bytes(sums, poisongate::Error::input)?;
            let text = String::from_utf8(bytes).map_err(|_| {
                poisongate::Error::input(Path::new(sums), "not a UTF-8 sha256sum file")
            })?;
            integrity::check_sha256sum(sums, &text, &args.files, |name| {
                let (path, object) = sources.open(name)?;
                objects.push((name.to_owned(), object));
                Ok(path)
            })?
        }
        (None, Some(signature), Some(public_key)) => {
            let [file] = args.files.as_slice() else {
                return Err(poisongate::Error::Usage(format!(
                    "--signature verifies exactly one FILE, got {}",
                    args.files.len()
                )));
            };
            let (bytes, object) = sources.read_bytes(file, poisongate::Error::input)?;
            objects.push((file.clone(), object));
            let check = SignatureCheck {
                signature: signature.clone(),
                public_key: public_key.clone(),
            };
            let ok = check.verify(&bytes)?;
            vec![integrity::Checked {
                path: file.clone(),
                sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
                expected: None,
                ok,
            }]
        }
        _ => {
            return Err(poisongate::Error::Usage(
                "give --sha256-file F, or --signature SIG with --public-key PEM".into(),
            ));
        }
    };
    let mut out = String::new();
    for c in &checked {
        let what = match (&c.expected, c.ok) {
            (Some(_), true) => "OK".to_owned(),
            (Some(e), false) => format!("FAILED: sha256 {} differs from the pinned {e}", c.sha256),
            (None, true) => format!("OK: signature verified (sha256 {})", c.sha256),
            (None, false) => format!(
                "FAILED: the signature does not verify with this public key (sha256 {})",
                c.sha256
            ),
        };
        let _ = writeln!(out, "{}: {what}", c.path);
    }
    let failed = checked.iter().filter(|c| !c.ok).count() + sse_refusals(args, &objects, &mut out);
    let _ = writeln!(
        out,
        "poisongate verify: {} ({} of {} check(s) failed)",
        if failed == 0 {
            "PASS (exit 0)"
        } else {
            "BLOCKED (exit 1)"
        },
        failed,
        checked.len() + args.sse.requirement().map_or(0, |_| objects.len())
    );
    printed_verdict(&out, failed)
}

/// Appends the summary line of a check that counts problems, then prints as
/// [`printed_verdict`].
fn problems_verdict(mut out: String, failed: usize) -> poisongate::Result<Verdict> {
    let _ = writeln!(
        out,
        "poisongate verify: {} ({failed} problem(s))",
        if failed == 0 {
            "PASS (exit 0)"
        } else {
            "BLOCKED (exit 1)"
        }
    );
    printed_verdict(&out, failed)
}

/// Prints `out`; the verdict is a pass only with no failure and a stdout that took it.
fn printed_verdict(out: &str, failed: usize) -> poisongate::Result<Verdict> {
    let printed = super::stdout(out);
    Ok(if failed == 0 {
        // A pass nobody could read is not a pass: exit 2. A failure stays a failure.
        printed?;
        Verdict::Pass
    } else {
        Verdict::Blocked
    })
}

/// `verify --scan`: every FILE judged by what loading it would import.
fn scan(args: &VerifyArgs, sources: &Sources) -> poisongate::Result<Verdict> {
    if args.files.is_empty() {
        return Err(poisongate::Error::Usage(
            "--scan needs at least one FILE".into(),
        ));
    }
    let pin = args
        .imports
        .as_deref()
        .map(poisongate::scan::verdict::load_pin)
        .transpose()?;
    let mut files = Vec::with_capacity(args.files.len());
    let mut objects: Vec<(String, Option<ObjectRef>)> = Vec::new();
    for name in &args.files {
        let (path, object) = sources.open(name)?;
        objects.push((name.clone(), object));
        files.push((name.clone(), path));
    }
    let mut report =
        poisongate::scan::scan_all(&files, &args.allow, pin.as_ref(), &Default::default())?;
    report.refuse(
        sse_findings(args, &objects)
            .into_iter()
            .map(|f| format!("{}: {}", f.code, f.message)),
    );
    let mut text = report.text();
    if let Some(path) = &args.json {
        let mut json = serde_json::to_vec_pretty(&report)
            .map_err(|e| poisongate::Error::Internal(format!("scan report: {e}")))?;
        json.push(b'\n');
        poisongate::output::write_atomic(path, &json)?;
    }
    let passed = report.passed();
    if let Some(path) = &args.pin_imports {
        if passed {
            let pin = report.pin();
            let mut json = serde_json::to_vec_pretty(&pin)
                .map_err(|e| poisongate::Error::Internal(format!("imports pin: {e}")))?;
            json.push(b'\n');
            poisongate::output::write_atomic(path, &json)?;
            let _ = writeln!(
                text,
                "pinned {} import(s) of {} file(s) to {}",
                pin.imports.len(),
                pin.sources.len(),
                path.display()
            );
        } else {
            let _ = writeln!(
                text,
                "nothing pinned: an unsafe artifact is not a trusted one"
            );
        }
    }
    let printed = super::stdout(&text);
    Ok(if passed {
        printed?;
        Verdict::Pass
    } else {
        Verdict::Blocked
    })
}

/// With --require-sse-kms, a finding for every object read that is not encrypted as
/// required.
fn sse_findings(
    args: &VerifyArgs,
    objects: &[(String, Option<ObjectRef>)],
) -> Vec<poisongate::finding::Finding> {
    let Some(key) = args.sse.requirement() else {
        return Vec::new();
    };
    let stored: Vec<integrity::Stored<'_>> = objects
        .iter()
        .map(|(name, object)| integrity::Stored {
            name,
            object: object.as_ref(),
        })
        .collect();
    integrity::sse_kms_findings(key, &stored)
}

/// A `FAILED` line for every object read that is not encrypted as required; returns how
/// many.
fn sse_refusals(
    args: &VerifyArgs,
    objects: &[(String, Option<ObjectRef>)],
    out: &mut String,
) -> usize {
    let refused = sse_findings(args, objects);
    for f in &refused {
        let _ = writeln!(out, "FAILED: {}: {}", f.code, f.message);
    }
    refused.len()
}

/// `verify --model DIR --bundle SIG --public-key PEM|--certificate-chain CA.pem`: an OpenSSF
/// model-signing bundle.
fn model(args: &VerifyArgs, dir: &Path, bundle: &Path) -> poisongate::Result<Verdict> {
    use poisongate::modelsign;
    if !args.files.is_empty() || args.sse.requirement().is_some() {
        return Err(poisongate::Error::Usage(
            "--model verifies a local directory: give no FILE and no --require-sse-kms".into(),
        ));
    }
    let trust = match (&args.public_key, args.certificate_chain.as_slice()) {
        (Some(key), []) => modelsign::Trust::Key(modelsign::keys::PublicKey::from_pem_file(key)?),
        (None, cas) if !cas.is_empty() => {
            modelsign::Trust::Cas(modelsign::certs::TrustedCas::from_pem_files(cas)?)
        }
        _ => {
            return Err(poisongate::Error::Usage(
                "--model needs --public-key PEM (key mode) or --certificate-chain CA.pem (certificate mode)".into(),
            ));
        }
    };
    let options = modelsign::VerifyOptions {
        ignore_unsigned_files: args.ignore_unsigned_files,
    };
    let v = modelsign::verify(dir, bundle, &trust, options)?;
    let mut out = String::new();
    for p in &v.problems {
        let _ = writeln!(out, "{p}");
    }
    if let Some(ser) = &v.serialization {
        let mut what = format!(
            "{}: model {:?}, {} serialization ({}), {} signed resource(s), {} file(s), {} bytes hashed",
            dir.display(),
            v.model_name,
            ser.method,
            ser.hash_type,
            v.signed,
            v.files,
            v.bytes
        );
        if v.unsigned_ignored > 0 {
            let _ = write!(what, ", {} unsigned file(s) ignored", v.unsigned_ignored);
        }
        let _ = writeln!(
            out,
            "{what}: {}",
            if v.problems.is_empty() {
                format!(
                    "OK: signature verified ({}), every file signed and unchanged",
                    v.signer
                )
            } else {
                "FAILED".to_owned()
            }
        );
    }
    let failed = v.problems.len();
    problems_verdict(out, failed)
}

/// `poisongate sign --model DIR --key PEM`.
pub fn sign(args: &SignArgs) -> poisongate::Result<Verdict> {
    use poisongate::modelsign;
    let key = modelsign::keys::PrivateKey::from_pem_file(&args.key)?;
    let signature = args
        .signature
        .clone()
        .unwrap_or_else(|| args.model.join("model.sig"));
    let certificates = match &args.signing_certificate {
        Some(cert) => modelsign::certs::signing_chain(&key, cert, &args.certificate_chain)?,
        None => Vec::new(),
    };
    let options = modelsign::SignOptions {
        ignore_paths: args.ignore_paths.clone(),
        allow_symlinks: args.allow_symlinks,
        certificates,
    };
    let bundle = modelsign::sign(&args.model, &key, &signature, &options)?;
    poisongate::output::write_atomic(&signature, &bundle)?;
    super::stdout(&format!(
        "{}: signed {} ({}); verify with `poisongate verify --model {} --bundle {} {}`\n",
        signature.display(),
        args.model.display(),
        key.public_key().algorithm(),
        args.model.display(),
        signature.display(),
        if args.signing_certificate.is_some() {
            "--certificate-chain CA.pem"
        } else {
            "--public-key KEY.pub"
        }
    ))?;
    Ok(Verdict::Pass)
}

/// `verify --attestation F --public-key PEM DATA...`: the training step's check that the gate
/// passed exactly these files.
fn attestation_check(
    args: &VerifyArgs,
    sources: &Sources,
    attestation: &Path,
    key: &Path,
) -> poisongate::Result<Verdict> {
    if args.files.is_empty() {
        return Err(poisongate::Error::Usage(
            "--attestation needs the DATA files the training step will read".into(),
        ));
    }
    let key = poisongate::modelsign::keys::PublicKey::from_pem_file(key)?;
    // DATA expands as `check` expands it (globs, S3 prefixes), so the training step can name
    // what it reads the way the gate was given it; but a local directory is every file a
    // reader of it would load, whatever its extension, so no file the gate could not read
    // passes unseen.
    let mut files = Vec::new();
    for arg in &args.files {
        let local = Path::new(arg);
        if !arg.starts_with("s3://") && local.is_dir() {
            for path in poisongate::source::every_file(local)? {
                let (sha256, _) = poisongate::digest::sha256_file(&path)?;
                files.push((path.display().to_string(), sha256));
            }
            continue;
        }
        for input in sources.resolve(std::slice::from_ref(arg), None)? {
            let (sha256, _) = poisongate::digest::sha256_file(&input.path)?;
            files.push((input.name(), sha256));
        }
    }
    let command = args.verdict_of.as_str();
    let check = poisongate::attest::verify(attestation, &key, command, files)?;
    let mut out = String::new();
    let mut failed = 0;
    if !check.signed {
        failed += 1;
        let _ = writeln!(
            out,
            "{}: FAILED: the signature does not verify with this public key ({})",
            attestation.display(),
            key.algorithm()
        );
    } else if !check.command_matches {
        failed += 1;
        let _ = writeln!(
            out,
            "{}: FAILED: a verdict of `{}`, not of `{command}` (--verdict-of names the command expected)",
            attestation.display(),
            check.command.as_deref().unwrap_or("no command recorded"),
        );
    } else if check.result.as_deref() != Some("PASSED") {
        failed += 1;
        let _ = writeln!(
            out,
            "{}: FAILED: the verdict is {} ({}, exit {}), not PASSED",
            attestation.display(),
            check.result.as_deref().unwrap_or("missing"),
            check.command.as_deref().unwrap_or("no command recorded"),
            check
                .exit_code
                .map_or_else(|| "?".to_owned(), |c| c.to_string())
        );
    }
    if check.signed {
        use poisongate::attest::Coverage;
        for f in &check.files {
            let what = match f.coverage {
                Coverage::Subject => "OK: sha256 {} is a subject of the verdict",
                Coverage::NotSubject => {
                    "FAILED: sha256 {} is not a subject of the verdict (not the bytes the gate read)"
                }
                Coverage::Repeated => {
                    "FAILED: sha256 {} is a subject, but more files given carry it than the gate read (the same bytes under another name)"
                }
            };
            if f.coverage != Coverage::Subject {
                failed += 1;
            }
            let _ = writeln!(out, "{}: {}", f.name, what.replace("{}", &f.sha256));
        }
        for (name, sha256) in &check.missing {
            failed += 1;
            let _ = writeln!(
                out,
                "{name}: FAILED: read by the gate (sha256 {sha256}) but not among the files given (missing from what would be trained on)"
            );
        }
    }
    problems_verdict(out, failed)
}
