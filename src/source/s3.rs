//! S3 objects as inputs: `s3://bucket/key` and `s3://bucket/prefix/`.
//!
//! Objects are streamed chunk by chunk into a private temporary directory (the "spill") and
//! decoded from there by the same readers as local files, so memory stays bounded by the
//! chunk size times the number of downloads in flight, and an S3 copy of a file gives exactly
//! the findings of the local copy. Every object is recorded with its SHA-256, size, ETag,
//! version id and server-side encryption.
//!
//! Credentials come from aws-config's default chain (environment, shared profile, web
//! identity / IRSA, ECS container and EC2 instance metadata). The endpoint is `--s3-endpoint`,
//! else `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`; a custom endpoint implies path-style
//! addressing, which S3-compatible stores expect.
//!
//! Errors name the URI and a short cause. They are built from the service's error code and
//! HTTP status, never from request headers, so credentials cannot leak into them.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Downloads in flight at once.
const CONCURRENCY: usize = 8;
/// Attempts per object when the body stream breaks after the response started; the SDK's
/// own retries (standard mode, with backoff) cover failures before that.
const BODY_ATTEMPTS: u32 = 3;

/// A parsed `s3://bucket/key` URI. A key that is empty or ends with `/` is a prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct S3Uri {
    /// Bucket name.
    pub bucket: String,
    /// Object key or prefix (no leading `/`).
    pub key: String,
}

impl S3Uri {
    /// Whether the argument names an S3 location.
    #[must_use]
    pub fn is_s3(arg: &str) -> bool {
        arg.starts_with("s3://")
    }

    /// Parses `s3://bucket[/key]`.
    ///
    /// # Errors
    /// Not an `s3://` URI, or an empty bucket name.
    pub fn parse(arg: &str) -> Result<Self> {
        let rest = arg
            .strip_prefix("s3://")
            .ok_or_else(|| Error::Usage(format!("`{arg}` is not an s3:// URI")))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::s3(arg, "the URI has no bucket name"));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Whether this names every object under a prefix rather than one object.
    #[must_use]
    pub fn is_prefix(&self) -> bool {
        self.key.is_empty() || self.key.ends_with('/')
    }

    /// The prefix `key/`: the objects a key names when read as a directory.
    #[must_use]
    pub fn as_dir(&self) -> Self {
        Self {
            bucket: self.bucket.clone(),
            key: format!("{}/", self.key),
        }
    }

    /// The last path segment of the key.
    #[must_use]
    pub fn basename(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// What an S3 object was when it was read, recorded in reports and baselines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    /// The object's ETag, quotes removed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub etag: Option<String>,
    /// The object's version id (versioned buckets).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version_id: Option<String>,
    /// Server-side encryption (`aws:kms`, `aws:kms:dsse`, `AES256`), when the store reports it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sse: Option<String>,
    /// The KMS key of SSE-KMS encryption.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sse_kms_key_id: Option<String>,
}

impl ObjectRef {
    /// One line for human reports: `etag E, version V, aws:kms KEY`.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(e) = &self.etag {
            parts.push(format!("etag {e}"));
        }
        if let Some(v) = &self.version_id {
            parts.push(format!("version {v}"));
        }
        match (&self.sse, &self.sse_kms_key_id) {
            (Some(sse), Some(key)) => parts.push(format!("{sse} {key}")),
            (Some(sse), None) => parts.push(sse.clone()),
            (None, _) => parts.push("no server-side encryption reported".to_owned()),
        }
        parts.join(", ")
    }

    /// Whether the object is SSE-KMS encrypted, with `key` when one is required.
    ///
    /// A required key matches the reported key id exactly, or its last `/` segment (a key id
    /// matches the key ARN `arn:aws:kms:REGION:ACCOUNT:key/ID`).
    #[must_use]
    pub fn sse_kms_matches(&self, key: Option<&str>) -> bool {
        let kms = self
            .sse
            .as_deref()
            .is_some_and(|s| s == "aws:kms" || s == "aws:kms:dsse");
        if !kms {
            return false;
        }
        match key {
            None => true,
            Some(want) => self.sse_kms_key_id.as_deref().is_some_and(|have| {
                have == want || have.rsplit('/').next() == Some(want) || {
                    // A key id given, the ARN required (or the reverse).
                    want.rsplit('/').next() == Some(have)
                }
            }),
        }
    }
}

/// A downloaded object: where its bytes are on disk and what it was.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The object.
    pub uri: S3Uri,
    /// The spilled copy, hashed and decoded by the readers of local files.
    pub path: PathBuf,
    /// ETag, version and encryption.
    pub object: ObjectRef,
}

/// Connection settings.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// `--s3-endpoint`: overrides the environment's endpoint.
    pub endpoint: Option<String>,
}

impl S3Options {
    /// The endpoint in force: the flag, else `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`
    /// (unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is true, as in the AWS SDKs).
    #[must_use]
    pub fn endpoint(&self) -> Option<String> {
        if let Some(e) = &self.endpoint {
            return Some(e.clone());
        }
        let ignore = std::env::var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        if ignore {
            return None;
        }
        ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }
}

/// An S3 client with its runtime and spill directory. Created on first use.
pub struct S3 {
    runtime: tokio::runtime::Runtime,
    client: Client,
    endpoint: Option<String>,
    spill: tempfile::TempDir,
    next: std::sync::atomic::AtomicUsize,
}

impl fmt::Debug for S3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl S3 {
    /// Builds a client from the default credential and region chain.
    ///
    /// # Errors
    /// No region anywhere in the chain (for AWS itself), or no temporary directory.
    pub fn connect(options: &S3Options, first: &str) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("starting the S3 runtime: {e}")))?;
        let endpoint = options.endpoint();
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(Error::Usage(format!(
                "the S3 endpoint must start with http:// or https://, got `{e}`"
            )));
        }
        let config = runtime.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .retry_config(
                    aws_config::retry::RetryConfig::standard()
                        .with_max_attempts(4)
                        .with_initial_backoff(Duration::from_millis(200)),
                )
                .timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(10))
                        .build(),
                )
                .load(),
        );
        let mut builder = aws_sdk_s3::config::Builder::from(&config);
        // An empty AWS_REGION is no region, not a region named "".
        let region = config.region().filter(|r| !r.as_ref().trim().is_empty());
        match (&endpoint, region) {
            (Some(url), region) => {
                builder = builder.endpoint_url(url.clone()).force_path_style(true);
                if region.is_none() {
                    // S3-compatible stores ignore the region but SigV4 needs one.
                    builder = builder.region(aws_sdk_s3::config::Region::from_static("us-east-1"));
                }
            }
            (None, None) => {
                return Err(Error::s3(
                    first,
                    "no AWS region configured: set AWS_REGION or a profile region",
                ));
            }
            (None, Some(_)) => {}
        }
        let spill = tempfile::Builder::new()
            .prefix("poisongate-s3-")
            .tempdir()
            .map_err(|e| Error::Internal(format!("creating a temporary directory: {e}")))?;
        Ok(Self {
            runtime,
            client: Client::from_conf(builder.build()),
            endpoint,
            spill,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Every object key under a prefix, sorted, through paginated `ListObjectsV2`.
    ///
    /// # Errors
    /// Listing fails (missing bucket, access denied, unreachable endpoint).
    pub fn list(&self, prefix: &S3Uri) -> Result<Vec<S3Uri>> {
        self.runtime.block_on(async {
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&prefix.bucket)
                .prefix(&prefix.key)
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| Error::s3(prefix, self.cause(&e)))?;
                for object in page.contents() {
                    if let Some(key) = object.key() {
                        out.push(S3Uri {
                            bucket: prefix.bucket.clone(),
                            key: key.to_owned(),
                        });
                    }
                }
            }
            out.sort();
            Ok(out)
        })
    }

    /// Downloads objects into the spill directory, several at a time, in the given order.
    ///
    /// # Errors
    /// The first object, in the given order, that cannot be read.
    pub fn fetch_all(&self, uris: &[S3Uri]) -> Result<Vec<Fetched>> {
        let progress = crate::progress::files(uris.len() as u64);
        progress.set_message("downloading from S3");
        let jobs: Vec<(S3Uri, PathBuf)> = uris
            .iter()
            .map(|u| (u.clone(), self.spill_path(u)))
            .collect();
        let results = self.runtime.block_on(async {
            let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
            let mut set = tokio::task::JoinSet::new();
            for (i, (uri, path)) in jobs.into_iter().enumerate() {
                let gate = Arc::clone(&gate);
                let client = self.client.clone();
                let endpoint = self.endpoint.clone();
                set.spawn(async move {
                    let _permit = gate.acquire_owned().await;
                    (i, download(&client, endpoint.as_deref(), &uri, &path).await)
                });
            }
            let mut results: Vec<Option<Result<Fetched>>> = Vec::new();
            results.resize_with(uris.len(), || None);
            while let Some(joined) = set.join_next().await {
                match joined {
                    Ok((i, r)) => {
                        progress.inc(1);
                        results[i] = Some(r);
                    }
                    Err(e) => return Err(Error::Internal(format!("S3 download task: {e}"))),
                }
            }
            Ok(results)
        })?;
        progress.finish_and_clear();
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Internal("S3 download lost".into()))))
            .collect()
    }

    /// Downloads one object.
    ///
    /// # Errors
    /// The object cannot be read.
    pub fn fetch(&self, uri: &S3Uri) -> Result<Fetched> {
        let path = self.spill_path(uri);
        self.runtime
            .block_on(download(&self.client, self.endpoint.as_deref(), uri, &path))
    }

    /// A fresh spill path that keeps the key's file name, so its extension tells the format.
    fn spill_path(&self, uri: &S3Uri) -> PathBuf {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name: String = uri
            .basename()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.spill.path().join(format!("{n:07}-{name}"))
    }

    fn cause<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        err: &SdkError<E>,
    ) -> String {
        cause(err, self.endpoint.as_deref())
    }
}

/// Streams one object to `path`. A body that breaks mid-stream is fetched
/// again, pinned to the same version and ETag so that a swapped object cannot be mixed in.
async fn download(
    client: &Client,
    endpoint: Option<&str>,
    uri: &S3Uri,
    path: &Path,
) -> Result<Fetched> {
    let mut pinned: Option<ObjectRef> = None;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut request = client.get_object().bucket(&uri.bucket).key(&uri.key);
        if let Some(p) = &pinned {
            if let Some(v) = &p.version_id {
                request = request.version_id(v);
            }
            if let Some(e) = &p.etag {
                request = request.if_match(format!("\"{e}\""));
            }
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                if pinned.is_some() && status == Some(412) {
                    return Err(Error::s3(uri, "the object changed while it was being read"));
                }
                return Err(Error::s3(uri, cause(&e, endpoint)));
            }
        };
        let object = ObjectRef {
            etag: response.e_tag().map(|e| e.trim_matches('"').to_owned()),
            version_id: response.version_id().map(str::to_owned),
            sse: response
                .server_side_encryption()
                .map(|s| s.as_str().to_owned()),
            sse_kms_key_id: response.ssekms_key_id().map(str::to_owned),
        };
        let expected = response
            .content_length()
            .and_then(|n| u64::try_from(n).ok());
        pinned.get_or_insert_with(|| object.clone());
        let mut body = response.body;
        let mut file = std::fs::File::create(path)
            .map_err(|e| Error::s3(uri, format!("cannot spill to {}: {e}", path.display())))?;
        let mut total = 0u64;
        let streamed: std::result::Result<(), String> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| chain(&e))?;
                total += chunk.len() as u64;
                file.write_all(&chunk)
                    .map_err(|e| format!("cannot spill to {}: {e}", path.display()))?;
            }
            Ok(())
        }
        .await;
        let complete = streamed.is_ok() && expected.is_none_or(|n| n == total);
        if complete {
            file.flush()
                .map_err(|e| Error::s3(uri, format!("cannot spill to {}: {e}", path.display())))?;
            return Ok(Fetched {
                uri: uri.clone(),
                path: path.to_path_buf(),
                object,
            });
        }
        if attempt >= BODY_ATTEMPTS {
            let why = streamed.err().unwrap_or_else(|| {
                format!(
                    "body ended after {total} of {} bytes",
                    expected.unwrap_or_default()
                )
            });
            return Err(Error::s3(
                uri,
                format!("reading the object failed {attempt} times: {why}"),
            ));
        }
        // Exponential backoff before reading the body again: 200 ms, 400 ms, ...
        tokio::time::sleep(Duration::from_millis(200 << (attempt - 1))).await;
    }
}

/// A one-line cause from an SDK error: the service's code and status, or the transport's
/// failure. Request and credential details are never included.
fn cause<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: &SdkError<E>,
    endpoint: Option<&str>,
) -> String {
    let at = endpoint.map_or_else(|| "the S3 endpoint".to_owned(), |e| format!("`{e}`"));
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code();
            match (code, status) {
                (Some("NoSuchKey"), _) => "no such object".to_owned(),
                (Some("NoSuchBucket"), _) => "no such bucket".to_owned(),
                (Some("AccessDenied" | "AllAccessDisabled"), _) | (None, 403) => {
                    "access denied (HTTP 403): the credentials in use may not read it".to_owned()
                }
                (Some("ExpiredToken" | "ExpiredTokenException" | "TokenRefreshRequired"), _) => {
                    "the AWS credentials have expired".to_owned()
                }
                (Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken"), _) => {
                    format!("the AWS credentials were rejected ({})", code.unwrap_or(""))
                }
                (None, 404) => "not found (HTTP 404)".to_owned(),
                (Some(code), status) => match service.err().message() {
                    Some(m) => format!("{code} (HTTP {status}): {m}"),
                    None => format!("{code} (HTTP {status})"),
                },
                (None, status) => format!("HTTP {status} from {at}"),
            }
        }
        SdkError::TimeoutError(_) => format!("timed out talking to {at}"),
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => {
            format!("cannot connect to {at}")
        }
        SdkError::DispatchFailure(_) => {
            let text = chain(err);
            if text.contains("credential") {
                "no usable AWS credentials: none of environment, profile, web identity, container or instance metadata provided them".to_owned()
            } else {
                format!("request to {at} failed: {text}")
            }
        }
        SdkError::ResponseError(_) => format!("unreadable response from {at}"),
        SdkError::ConstructionFailure(_) => {
            format!("cannot build the request: {}", chain(err))
        }
        _ => chain(err),
    }
}

/// An error and its sources as `a: b: c`, without the debug dump that the SDK's
/// `DisplayErrorContext` appends (one readable line for the user).
fn chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_objects_and_prefixes() {
        let o = S3Uri::parse("s3://bucket/a/b/batch.parquet").unwrap();
        assert_eq!(o.bucket, "bucket");
        assert_eq!(o.key, "a/b/batch.parquet");
        assert!(!o.is_prefix());
        assert_eq!(o.basename(), "batch.parquet");
        assert_eq!(o.to_string(), "s3://bucket/a/b/batch.parquet");
        assert!(S3Uri::parse("s3://bucket/a/").unwrap().is_prefix());
        assert!(S3Uri::parse("s3://bucket").unwrap().is_prefix());
        assert!(S3Uri::parse("s3:///key").is_err());
        assert!(S3Uri::parse("/local").is_err());
    }

    #[test]
    fn sse_kms_key_matching() {
        let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab";
        let kms = ObjectRef {
            etag: None,
            version_id: None,
            sse: Some("aws:kms".into()),
            sse_kms_key_id: Some(arn.into()),
        };
        assert!(kms.sse_kms_matches(None));
        assert!(kms.sse_kms_matches(Some(arn)));
        assert!(kms.sse_kms_matches(Some("1234abcd-12ab")));
        assert!(!kms.sse_kms_matches(Some("other")));
        let aes = ObjectRef {
            sse: Some("AES256".into()),
            sse_kms_key_id: None,
            ..kms.clone()
        };
        assert!(!aes.sse_kms_matches(None));
        let none = ObjectRef {
            sse: None,
            sse_kms_key_id: None,
            ..kms
        };
        assert!(!none.sse_kms_matches(None));
    }

    /// The service errors a real bucket gives but the loopback test server cannot (it accepts
    /// any credentials): each maps to a short cause that names neither key nor request.
    #[test]
    fn service_errors_map_to_short_causes() {
        use aws_sdk_s3::config::http::HttpResponse;
        use aws_sdk_s3::error::ErrorMetadata;
        use aws_sdk_s3::operation::get_object::GetObjectError;
        use aws_sdk_s3::primitives::SdkBody;
        let error = |code: Option<&str>, status: u16| {
            let mut meta = ErrorMetadata::builder().message("AKIAEXAMPLE request detail");
            if let Some(code) = code {
                meta = meta.code(code);
            }
            let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
            SdkError::service_error(GetObjectError::generic(meta.build()), raw)
        };
        let cases = [
            (Some("NoSuchKey"), 404, "no such object"),
            (Some("NoSuchBucket"), 404, "no such bucket"),
            (Some("AccessDenied"), 403, "access denied (HTTP 403)"),
            (None, 403, "access denied (HTTP 403)"),
            (
                Some("ExpiredToken"),
                400,
                "the AWS credentials have expired",
            ),
            (
                Some("InvalidAccessKeyId"),
                403,
                "the AWS credentials were rejected",
            ),
            (
                Some("SignatureDoesNotMatch"),
                403,
                "the AWS credentials were rejected",
            ),
            (None, 404, "not found (HTTP 404)"),
            (None, 503, "HTTP 503 from `http://store`"),
        ];
        for (code, status, want) in cases {
            let got = cause(&error(code, status), Some("http://store"));
            assert!(got.starts_with(want), "{code:?} {status}: {got}");
            assert!(!got.contains("AKIA"), "{got}");
        }
    }
}
