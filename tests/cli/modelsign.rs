//! `poisongate sign` and `verify --model`: OpenSSF model-signing bundles, offline. The same
//! cases against the reference implementation run in scripts/modelsign/interop.sh.

use std::path::{Path, PathBuf};

use poisongate::modelsign::{bundle, keys, manifest, tree};

use crate::common::{code, run, signing_file, stderr, stdout};

/// A model directory: config, tokenizer, weight shards, an empty file, git metadata.
fn model(root: &Path) -> PathBuf {
    let dir = root.join("model");
    for sub in ["tokenizer", "weights/extra", ".git"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("config.json"), b"{\"hidden\": 16}\n").unwrap();
    std::fs::write(dir.join("tokenizer/vocab.txt"), b"a\nb\n").unwrap();
    for i in 1..=3u8 {
        let bytes: Vec<u8> = (0..9000u32)
            .map(|j| (j as u8).wrapping_mul(i).wrapping_add(i))
            .collect();
        std::fs::write(dir.join(format!("weights/shard-{i}.bin")), bytes).unwrap();
    }
    std::fs::write(dir.join("weights/extra/empty.bin"), b"").unwrap();
    std::fs::write(dir.join(".git/HEAD"), b"ref: refs/heads/main\n").unwrap();
    dir
}

fn sign(dir: &Path, private: &str) {
    let out = run(&[
        "sign",
        "--model",
        dir.to_str().unwrap(),
        "--key",
        &signing_file(private),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

fn verify(dir: &Path, sig: &Path, public: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "verify",
        "--model",
        dir.to_str().unwrap(),
        "--bundle",
        sig.to_str().unwrap(),
    ];
    let k = signing_file(public);
    args.extend(["--public-key", &k]);
    args.extend(extra);
    run(&args)
}

fn expect(out: &std::process::Output, want: i32, needle: &str) {
    let text = format!("{}{}", stdout(out), stderr(out));
    assert_eq!(code(out), want, "{text}");
    assert!(text.contains(needle), "no {needle:?} in:\n{text}");
}

#[test]
fn every_curve_signs_and_verifies_and_p256_signing_is_deterministic() {
    for (private, public) in [
        ("p256.pem", "p256.pub"),
        ("p384-pkcs8.pem", "p384.pub"),
        ("p521.pem", "p521.pub"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = model(tmp.path());
        sign(&dir, private);
        let sig = dir.join("model.sig");
        expect(
            &verify(&dir, &sig, public, &[]),
            0,
            "OK: signature verified",
        );
        expect(&verify(&dir, &sig, public, &[]), 0, "6 file(s)");
        expect(
            &verify(&dir, &sig, "other.pub", &[]),
            1,
            "does not verify with this public key",
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    sign(&dir, "p256.pem");
    let first = std::fs::read(dir.join("model.sig")).unwrap();
    sign(&dir, "p256.pem");
    assert_eq!(first, std::fs::read(dir.join("model.sig")).unwrap());
}

#[test]
fn tampered_models_fail_naming_each_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    sign(&dir, "p256.pem");
    let sig = tmp.path().join("model.sig");
    std::fs::rename(dir.join("model.sig"), &sig).unwrap();
    expect(&verify(&dir, &sig, "p256.pub", &[]), 0, "OK");

    let mut w = std::fs::read(dir.join("weights/shard-2.bin")).unwrap();
    w[100] ^= 1;
    std::fs::write(dir.join("weights/shard-2.bin"), &w).unwrap();
    std::fs::write(dir.join("weights/backdoor.bin"), b"x").unwrap();
    std::fs::remove_file(dir.join("tokenizer/vocab.txt")).unwrap();
    std::fs::rename(
        dir.join("weights/shard-1.bin"),
        dir.join("weights/shard-9.bin"),
    )
    .unwrap();
    let out = verify(&dir, &sig, "p256.pub", &[]);
    expect(&out, 1, "weights/shard-2.bin: FAILED: changed");
    expect(
        &out,
        1,
        "weights/backdoor.bin: FAILED: not signed (an extra file",
    );
    expect(&out, 1, "tokenizer/vocab.txt: FAILED: signed but missing");
    expect(
        &out,
        1,
        "weights/shard-9.bin: FAILED: renamed from the signed weights/shard-1.bin (same content; weights/shard-1.bin is missing)",
    );
    expect(&out, 1, "4 problem(s)");
    // --ignore-unsigned-files forgives the extra files, never the missing or changed ones.
    let out = verify(&dir, &sig, "p256.pub", &["--ignore-unsigned-files"]);
    expect(&out, 1, "3 problem(s)");
    assert!(!stdout(&out).contains("backdoor"), "{}", stdout(&out));
}

#[test]
fn git_paths_and_the_signature_are_skipped_but_symlinks_and_special_files_block() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    sign(&dir, "p256.pem");
    let sig = dir.join("model.sig");
    std::fs::write(dir.join(".git/HEAD"), b"changed\n").unwrap();
    expect(&verify(&dir, &sig, "p256.pub", &[]), 0, "OK");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/etc/hostname", dir.join("weights/link.bin")).unwrap();
        expect(
            &verify(&dir, &sig, "p256.pub", &[]),
            1,
            "weights/link.bin: a symbolic link, which the signed policy does not allow",
        );
        // Signing refuses what verifying would refuse.
        let out = run(&[
            "sign",
            "--model",
            dir.to_str().unwrap(),
            "--key",
            &signing_file("p256.pem"),
            "--signature",
            tmp.path().join("s.sig").to_str().unwrap(),
        ]);
        expect(&out, 2, "symbolic link");
        std::fs::remove_file(dir.join("weights/link.bin")).unwrap();
        // A FIFO is reported, never opened (opening it would block).
        let fifo = dir.join("weights/pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            expect(
                &verify(&dir, &sig, "p256.pub", &[]),
                1,
                "weights/pipe: not a regular file",
            );
        }
    }
}

#[test]
fn an_allowed_symlink_is_hashed_as_its_target() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    #[cfg(unix)]
    std::os::unix::fs::symlink("weights/shard-1.bin", dir.join("alias.bin")).unwrap();
    let out = run(&[
        "sign",
        "--model",
        dir.to_str().unwrap(),
        "--key",
        &signing_file("p256.pem"),
        "--allow-symlinks",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let sig = dir.join("model.sig");
    expect(&verify(&dir, &sig, "p256.pub", &[]), 0, "7 file(s)");
    std::fs::write(dir.join("weights/shard-1.bin"), b"swapped").unwrap();
    expect(
        &verify(&dir, &sig, "p256.pub", &[]),
        1,
        "alias.bin: FAILED: changed",
    );
}

/// Signs `statement` with the test P-256 key into a bundle at `path`.
fn write_signed(path: &Path, payload: &[u8]) {
    let pem = std::fs::read_to_string(signing_file("p256.pem")).unwrap();
    let k = keys::PrivateKey::from_pem(pem.trim()).unwrap();
    let sig = k.sign(&bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, payload));
    let b = serde_json::json!({
        "mediaType": bundle::MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": k.public_key().hint().unwrap()}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": bundle::encode_b64(payload),
            "payloadType": bundle::IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": bundle::encode_b64(&sig), "keyid": ""}],
        },
    });
    std::fs::write(path, serde_json::to_vec(&b).unwrap()).unwrap();
}

fn files_serialization() -> manifest::Serialization {
    manifest::Serialization {
        method: "files".into(),
        hash_type: "sha256".into(),
        allow_symlinks: false,
        ignore_paths: vec![".git".into(), "model.sig".into()],
        shard_size: None,
    }
}

#[test]
fn validly_signed_but_hostile_manifests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    std::fs::write(tmp.path().join("secret.txt"), b"outside").unwrap();
    let walk = tree::walk(
        &dir,
        &{
            let mut s = tree::Skip::default();
            s.add(".git");
            s
        },
        false,
    )
    .unwrap();
    let actual = tree::hash(&walk.files, None).unwrap();
    let sig = tmp.path().join("evil.sig");

    // A name that leaves the directory, signed by the trusted key: refused, never read.
    let mut st = manifest::statement("model", files_serialization(), &actual);
    st.predicate.resources.push(manifest::Resource {
        name: "../secret.txt".into(),
        algorithm: "sha256".into(),
        digest: poisongate::integrity::sha256_hex(b"outside"),
    });
    write_signed(&sig, &serde_json::to_vec(&st).unwrap());
    expect(
        &verify(&dir, &sig, "p256.pub", &[]),
        1,
        "signed resource \"../secret.txt\" refused",
    );
    for name in ["/etc/passwd", "weights/./shard-1.bin"] {
        st.predicate.resources.last_mut().unwrap().name = name.into();
        write_signed(&sig, &serde_json::to_vec(&st).unwrap());
        expect(&verify(&dir, &sig, "p256.pub", &[]), 1, "refused");
    }
    // A resource listed twice, and a root digest that does not match the resources.
    let mut st = manifest::statement("model", files_serialization(), &actual);
    let dup = st.predicate.resources[0].clone();
    st.predicate.resources.push(dup);
    write_signed(&sig, &serde_json::to_vec(&st).unwrap());
    expect(&verify(&dir, &sig, "p256.pub", &[]), 1, "listed twice");
    let mut st = manifest::statement("model", files_serialization(), &actual);
    st.subject[0]
        .digest
        .insert("sha256".into(), "00".repeat(32));
    write_signed(&sig, &serde_json::to_vec(&st).unwrap());
    expect(
        &verify(&dir, &sig, "p256.pub", &[]),
        1,
        "the manifest is inconsistent",
    );
    // The signed policy decides: a manifest that ignores `weights` skips it, no flag can.
    let mut ser = files_serialization();
    ser.ignore_paths.push("weights".into());
    let kept: std::collections::BTreeMap<_, _> = actual
        .iter()
        .filter(|(k, _)| k.path[0] != "weights")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    write_signed(
        &sig,
        &serde_json::to_vec(&manifest::statement("model", ser, &kept)).unwrap(),
    );
    expect(&verify(&dir, &sig, "p256.pub", &[]), 0, "2 file(s)");
}

#[test]
fn shards_are_verified_shard_by_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    let mut skip = tree::Skip::default();
    skip.add(".git");
    let walk = tree::walk(&dir, &skip, false).unwrap();
    let shards = tree::hash(&walk.files, Some(4096)).unwrap();
    // 3 files of 9,000 bytes in 3 shards each, 2 small files; an empty file has no shard.
    assert_eq!(shards.len(), 3 * 3 + 2);
    let mut ser = files_serialization();
    ser.method = "shards".into();
    ser.shard_size = Some(4096);
    let sig = tmp.path().join("shards.sig");
    write_signed(
        &sig,
        &serde_json::to_vec(&manifest::statement("model", ser, &shards)).unwrap(),
    );
    expect(
        &verify(&dir, &sig, "p256.pub", &[]),
        0,
        "shards serialization (sha256), 11 signed resource(s)",
    );
    let mut w = std::fs::read(dir.join("weights/shard-3.bin")).unwrap();
    w[5000] ^= 1;
    std::fs::write(dir.join("weights/shard-3.bin"), &w).unwrap();
    expect(
        &verify(&dir, &sig, "p256.pub", &[]),
        1,
        "weights/shard-3.bin: FAILED: bytes 4096..8192 changed",
    );
    w.push(0);
    std::fs::write(dir.join("weights/shard-3.bin"), &w).unwrap();
    expect(
        &verify(&dir, &sig, "p256.pub", &[]),
        1,
        "weights/shard-3.bin: FAILED: changed (its size differs",
    );
}

#[test]
fn what_cannot_be_verified_is_exit_2_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    sign(&dir, "p256.pem");
    let sig = dir.join("model.sig");
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    let bad = tmp.path().join("bad.sig");

    let mut keyless = good.clone();
    keyless["verificationMaterial"] = serde_json::json!({"certificate": {"rawBytes": "MIIB"}, "tlogEntries": [{"logIndex": "1"}]});
    std::fs::write(&bad, serde_json::to_vec(&keyless).unwrap()).unwrap();
    expect(
        &verify(&dir, &bad, "p256.pub", &[]),
        2,
        "keyless Sigstore bundle",
    );

    std::fs::write(&bad, b"{not json").unwrap();
    expect(
        &verify(&dir, &bad, "p256.pub", &[]),
        2,
        "not a Sigstore bundle",
    );
    let mut old = good.clone();
    old["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1".into();
    std::fs::write(&bad, serde_json::to_vec(&old).unwrap()).unwrap();
    expect(
        &verify(&dir, &bad, "p256.pub", &[]),
        2,
        "is not a v0.3 Sigstore bundle",
    );

    // Validly signed statements of a kind this verifier does not implement.
    let mut v02 = manifest::statement("model", files_serialization(), &Default::default());
    v02.predicate_type = "https://model_signing/Digests/v0.1".into();
    write_signed(&bad, &serde_json::to_vec(&v02).unwrap());
    expect(&verify(&dir, &bad, "p256.pub", &[]), 2, "model_signing 0.2");
    let mut blake = files_serialization();
    blake.hash_type = "blake2".into();
    write_signed(
        &bad,
        &serde_json::to_vec(&manifest::statement("model", blake, &Default::default())).unwrap(),
    );
    expect(
        &verify(&dir, &bad, "p256.pub", &[]),
        2,
        "hash type \"blake2\" is not supported",
    );

    expect(
        &verify(&dir, &tmp.path().join("missing.sig"), "p256.pub", &[]),
        2,
        "no such file",
    );
    expect(
        &verify(&tmp.path().join("nowhere"), &sig, "p256.pub", &[]),
        2,
        "no such file",
    );
    expect(
        &verify(&dir.join("config.json"), &sig, "p256.pub", &[]),
        2,
        "not a directory",
    );
    // A private key where a public key belongs, and a key on no supported curve.
    expect(
        &verify(&dir, &sig, "p256.pem", &[]),
        2,
        "not a PEM public key on P-256, P-384 or P-521",
    );
    let out = run(&[
        "sign",
        "--model",
        dir.to_str().unwrap(),
        "--key",
        &signing_file("p256.pub"),
    ]);
    expect(&out, 2, "not an unencrypted PEM EC private key");
    // The stderr error is one line plus the hint.
    let out = verify(&dir, &bad, "p256.pub", &[]);
    assert!(stderr(&out).lines().count() <= 2, "{}", stderr(&out));
}

/// Signs `dir` in certificate mode with the private key `key_file` and the certificate
/// `cert_file` (both under testdata/modelsign/), with `chain` after it in the bundle.
fn sign_certified(
    dir: &Path,
    key_file: &str,
    cert_file: &str,
    chain: &[&str],
) -> std::process::Output {
    let mut args: Vec<String> = ["sign", "--model", dir.to_str().unwrap()]
        .map(str::to_owned)
        .into();
    args.extend(["--key".into(), signing_file(key_file)]);
    args.extend(["--signing-certificate".into(), signing_file(cert_file)]);
    for c in chain {
        args.extend(["--certificate-chain".into(), signing_file(c)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args)
}

/// Signs `dir` with `testdata/modelsign/certs/{leaf}.key` and `.pem`, the intermediate CA in
/// the bundle's chain.
fn sign_with_certificate(dir: &Path, leaf: &str) -> std::process::Output {
    sign_certified(
        dir,
        &format!("certs/{leaf}.key"),
        &format!("certs/{leaf}.pem"),
        &["certs/intermediate.pem"],
    )
}

fn verify_with_cas(dir: &Path, cas: &[&str]) -> std::process::Output {
    let sig = dir.join("model.sig");
    let mut args = vec![
        "verify".to_owned(),
        "--model".into(),
        dir.to_str().unwrap().into(),
        "--bundle".into(),
        sig.to_str().unwrap().into(),
    ];
    for ca in cas {
        args.extend([
            "--certificate-chain".into(),
            signing_file(&format!("certs/{ca}")),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args)
}

#[test]
fn certificate_mode_trusts_the_ca_at_the_signing_certificates_start_and_its_usages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    // Signed under the test root through the intermediate: verified against the root alone.
    for leaf in ["leaf", "leaf-eku", "leaf-expired"] {
        let out = sign_with_certificate(&dir, leaf);
        assert_eq!(code(&out), 0, "{leaf}: {}", stderr(&out));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("model.sig")).unwrap()).unwrap();
        let chain = &json["verificationMaterial"]["x509CertificateChain"]["certificates"];
        assert_eq!(chain.as_array().map(Vec::len), Some(2), "{json}");
        assert!(json["verificationMaterial"].get("publicKey").is_none());
        // leaf-expired ended in 2022: the chain is checked at its notBefore (2021), as the
        // reference verifier does, so it still verifies.
        expect(
            &verify_with_cas(&dir, &["root.pem"]),
            0,
            &format!("chained to {}", signing_file("certs/root.pem")),
        );
        let out = verify_with_cas(&dir, &["other-root.pem"]);
        expect(&out, 1, "does not chain to the CA certificates");
        assert!(
            stdout(&out).contains("no path to a trusted CA"),
            "{}",
            stdout(&out)
        );
    }
    // A tampered file still fails in certificate mode, naming the file.
    sign_with_certificate(&dir, "leaf");
    std::fs::write(dir.join("config.json"), b"{\"hidden\": 17}\n").unwrap();
    expect(
        &verify_with_cas(&dir, &["root.pem"]),
        1,
        "config.json: FAILED: changed",
    );
    std::fs::write(dir.join("config.json"), b"{\"hidden\": 16}\n").unwrap();

    // A certificate that may not sign (keyEncipherment, serverAuth) chains but is refused.
    assert_eq!(code(&sign_with_certificate(&dir, "leaf-nosign")), 0);
    expect(&verify_with_cas(&dir, &["root.pem"]), 1, "may not sign");
    // A certificate older than its CA: the chain was not valid at its start.
    assert_eq!(code(&sign_with_certificate(&dir, "leaf-early")), 0);
    expect(
        &verify_with_cas(&dir, &["root.pem"]),
        1,
        "was not valid at that time",
    );
    // Another hierarchy's certificate with this bundle's chain: no path to the root.
    let out = sign_certified(&dir, "certs/other-leaf.key", "certs/other-leaf.pem", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    expect(
        &verify_with_cas(&dir, &["root.pem"]),
        1,
        "no path to a trusted CA",
    );
    expect(
        &verify_with_cas(&dir, &["root.pem", "other-root.pem"]),
        0,
        "OK",
    );

    // A signing certificate swapped for another one under the same CA: the chain is valid,
    // the signature is not.
    assert_eq!(code(&sign_with_certificate(&dir, "leaf")), 0);
    let sig = dir.join("model.sig");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    let other = std::fs::read_to_string(signing_file("certs/leaf-expired.pem")).unwrap();
    let der: String = other.lines().filter(|l| !l.starts_with("-----")).collect();
    json["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"] =
        serde_json::Value::String(der);
    std::fs::write(&sig, serde_json::to_vec(&json).unwrap()).unwrap();
    expect(
        &verify_with_cas(&dir, &["root.pem"]),
        1,
        "does not verify with the signing certificate's key",
    );
}

#[test]
fn certificate_mode_refuses_what_it_cannot_evaluate_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    // CA certificates a verifier must not accept as the anchor of this chain: the root's key
    // and name with path length 0 (the bundle's intermediate exceeds it), or valid in 2020
    // only (not at the signing certificate's notBefore); a certificate that is no CA at all is
    // refused when the CA file is read.
    assert_eq!(code(&sign_with_certificate(&dir, "leaf")), 0);
    expect(
        &verify_with_cas(&dir, &["root-pathlen0.pem"]),
        1,
        "path length constraint (0) is exceeded",
    );
    expect(
        &verify_with_cas(&dir, &["root-expired.pem"]),
        1,
        "the CA certificate was not valid at that time",
    );
    expect(
        &verify_with_cas(&dir, &["leaf-eku.pem"]),
        2,
        "is not a CA certificate",
    );
    // A chain longer than any real one is refused before it is read.
    let sig = dir.join("model.sig");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    let chain = &mut json["verificationMaterial"]["x509CertificateChain"]["certificates"];
    let first = chain[1].clone();
    for _ in 0..12 {
        chain.as_array_mut().unwrap().push(first.clone());
    }
    std::fs::write(&sig, serde_json::to_vec(&json).unwrap()).unwrap();
    expect(
        &verify_with_cas(&dir, &["root.pem"]),
        2,
        "at most 10 are read",
    );
    // A key-signed bundle given CA certificates.
    sign(&dir, "p256.pem");
    expect(
        &verify_with_cas(&dir, &["root.pem"]),
        2,
        "verify it with --public-key",
    );
    // A CA file that holds no certificate.
    expect(
        &verify_with_cas(&dir, &["../p256.pub"]),
        2,
        "holds no PEM certificate",
    );
    // --model with neither a key nor CA certificates.
    let out = run(&[
        "verify",
        "--model",
        dir.to_str().unwrap(),
        "--bundle",
        dir.join("model.sig").to_str().unwrap(),
    ]);
    expect(
        &out,
        2,
        "--public-key PEM (key mode) or --certificate-chain",
    );
    // Signing with a certificate that is not the key's.
    let out = sign_certified(&dir, "p256.pem", "certs/leaf.pem", &[]);
    expect(&out, 2, "not the signing key's");
}
