//! Asking live models: the Open Inference Protocol client behind `compare --before-endpoint`
//! and `--after-endpoint`.
//!
//! The protocol is KServe's V2 REST API, spoken by KServe, MLServer, Triton and Seldon
//! (<https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol>):
//! `GET {model}/ready`, then `POST {model}/infer` with
//! `{"inputs": [{"name", "shape", "datatype", "data"}], "outputs": [{"name"}]}`, where
//! `{model}` is `{base}/v2/models/{name}[/versions/{version}]`. Features travel either as one
//! input per column (with the request parameter `content_type: pd`, which MLServer decodes
//! into a pandas DataFrame for a scikit-learn pipeline) or as one `[rows, features]` FP64
//! tensor (KServe's sklearnserver, Triton's FIL backend, ONNX models).
//!
//! Every failure is an [`Error::Endpoint`] naming the model URL and the cause: 401, 403, 404,
//! a model that is not ready, a server's own error (MLServer answers a model exception with
//! a plain-text traceback and 500; its last line is the cause), a timeout, an answer that is
//! not predictions. 429 and 5xx are retried with exponential backoff (honouring
//! `Retry-After`), so a rolling restart does not fail the gate, but the gate never passes
//! on a model it could not ask. The bearer token is read from a file (re-read when the file
//! changes, as projected service-account tokens rotate) or from an environment variable, and
//! is scrubbed from every message a server sends back.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

mod answer;
mod features;
mod token;

use answer::decode;
pub use features::{Cell, Column, Feature, Features, Layout};
use token::Token;
pub use token::TokenSource;

/// Longest server message kept in an error.
const CAUSE_CHARS: usize = 300;

/// Longest wait a `Retry-After` header can ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// First backoff; doubled on every retry.
const BACKOFF: Duration = Duration::from_millis(200);

/// A model's URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `{base}/v2/models/{name}[/versions/{v}]`, without a trailing slash.
    pub model_url: String,
}

impl Endpoint {
    /// Parses a model URL; a trailing `/infer` or `/ready` is dropped.
    ///
    /// # Errors
    /// Not http(s), credentials in the URL, or no `/v2/models/{name}` path.
    pub fn parse(url: &str, flag: &str) -> Result<Self> {
        let mut u = url.trim().trim_end_matches('/').to_owned();
        for tail in ["/infer", "/ready"] {
            if let Some(s) = u.strip_suffix(tail) {
                u = s.to_owned();
            }
        }
        let Some(rest) = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"))
        else {
            return Err(Error::Usage(format!(
                "{flag} must start with http:// or https://, got `{url}`"
            )));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains('@') {
            return Err(Error::Usage(format!(
                "{flag}: credentials in the URL are not accepted (they would show in reports); use --token-file or --token-env"
            )));
        }
        let path = &rest[authority.len()..];
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let model_at = parts.windows(2).position(|w| w == ["v2", "models"]);
        let ok = match model_at {
            Some(i) => {
                let tail = &parts[i + 2..];
                tail.len() == 1 || (tail.len() == 3 && tail[1] == "versions")
            }
            None => false,
        };
        if !ok || authority.is_empty() {
            return Err(Error::Usage(format!(
                "{flag} `{url}` is not a model URL of the inference protocol: expected {{base}}/v2/models/{{name}}[/versions/{{version}}]"
            )));
        }
        Ok(Self { model_url: u })
    }
}

/// What a model answered for a set of rows.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    /// Predicted class of each row, as text.
    pub labels: Vec<String>,
    /// Row-major class probabilities, `rows x proba_classes`; empty when the model returned
    /// none.
    pub proba: Vec<f64>,
    /// Columns of `proba`.
    pub proba_classes: usize,
    /// The model's name and version as the server states them (`model_name`,
    /// `model_version`), for the audit trail.
    pub model: Option<String>,
}

impl Answers {
    fn extend(&mut self, other: Self) -> std::result::Result<(), String> {
        if self.labels.is_empty() {
            *self = other;
            return Ok(());
        }
        if other.proba_classes != self.proba_classes {
            return Err(format!(
                "batches returned {} and {} probability columns",
                self.proba_classes, other.proba_classes
            ));
        }
        self.labels.extend(other.labels);
        self.proba.extend(other.proba);
        Ok(())
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// How features travel.
    pub layout: Layout,
    /// Name of the output holding the predicted class (else found by shape).
    pub label_output: Option<String>,
    /// Name of the output holding class probabilities (else found by shape).
    pub proba_output: Option<String>,
    /// Bearer token.
    pub token: Option<TokenSource>,
    /// PEM bundle of the CAs to trust instead of the system's.
    pub ca_bundle: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Requests in flight per model.
    pub concurrency: usize,
    /// Rows per request.
    pub batch_rows: usize,
    /// Retries of a request answered 429 or 5xx, or that could not connect.
    pub retries: u32,
}

/// An Open Inference Protocol client.
pub struct Client {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    token: Option<Arc<Token>>,
    options: Options,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Client")
            .field("layout", &self.options.layout)
            .finish_non_exhaustive()
    }
}

/// One failed call: the cause, and whether another attempt may succeed.
struct Failure {
    cause: String,
    retry: bool,
    wait: Option<Duration>,
}

impl Client {
    /// Builds a client.
    ///
    /// # Errors
    /// An unreadable or invalid CA bundle, or a runtime that cannot start.
    pub fn new(options: Options) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("starting the endpoint runtime: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("poisongate/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &options.ca_bundle {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Usage(format!(
                    "--ca-bundle {}: {}",
                    path.display(),
                    crate::error::io_cause(&e)
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Usage(format!(
                    "--ca-bundle {}: not a PEM bundle: {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(Error::Usage(format!(
                    "--ca-bundle {}: no certificate in the file",
                    path.display()
                )));
            }
            builder = builder.tls_built_in_root_certs(false);
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::Internal(format!("building the HTTP client: {e}")))?;
        let token = options
            .token
            .clone()
            .map(|source| Arc::new(Token::new(source)));
        Ok(Self {
            runtime,
            http,
            token,
            options,
        })
    }

    /// Checks that the model is ready (`GET {model}/ready`).
    ///
    /// # Errors
    /// Any answer but 200, or no answer.
    pub fn ready(&self, ep: &Endpoint) -> Result<()> {
        let url = format!("{}/ready", ep.model_url);
        self.runtime
            .block_on(call(
                &self.http,
                self.token.clone(),
                &url,
                None,
                self.options.retries,
            ))
            .map(|_| ())
            .map_err(|f| self.fail(ep, &f, "readiness check"))
    }

    /// Asks the model for `rows` of `features`, with feature `set.0` set to `set.1`.
    ///
    /// # Errors
    /// See [`Client::ready`]; also an answer without usable predictions.
    pub fn predict(
        &self,
        ep: &Endpoint,
        features: &Arc<Features>,
        rows: &[usize],
        set: Option<(usize, Cell)>,
    ) -> Result<Answers> {
        let outputs: Vec<String> = self
            .options
            .label_output
            .iter()
            .chain(&self.options.proba_output)
            .cloned()
            .collect();
        let batch = self.options.batch_rows.max(1);
        let chunks: Vec<Vec<usize>> = rows.chunks(batch).map(<[usize]>::to_vec).collect();
        let url = format!("{}/infer", ep.model_url);
        let set = set.map(Arc::new);
        let results = self.runtime.block_on(async {
            let gate = Arc::new(tokio::sync::Semaphore::new(self.options.concurrency.max(1)));
            let mut tasks = tokio::task::JoinSet::new();
            for (i, chunk) in chunks.into_iter().enumerate() {
                let gate = Arc::clone(&gate);
                let http = self.http.clone();
                let token = self.token.clone();
                let features = Arc::clone(features);
                let options = self.options.clone();
                let outputs = outputs.clone();
                let url = url.clone();
                let set = set.clone();
                tasks.spawn(async move {
                    let _permit = gate.acquire_owned().await;
                    let body = features
                        .request(&options.layout, &outputs, &chunk, set.as_deref())
                        .map_err(|cause| Failure {
                            cause,
                            retry: false,
                            wait: None,
                        })?;
                    let answer = call(&http, token, &url, Some(body), options.retries).await?;
                    decode(&answer, chunk.len(), &options)
                        .map_err(|cause| Failure {
                            cause,
                            retry: false,
                            wait: None,
                        })
                        .map(|a| (i, a))
                });
            }
            let mut parts: Vec<Option<Answers>> = Vec::new();
            let mut first_error: Option<(usize, Failure)> = None;
            let mut index = 0usize;
            while let Some(joined) = tasks.join_next().await {
                index += 1;
                match joined {
                    Ok(Ok((i, a))) => {
                        if parts.len() <= i {
                            parts.resize_with(i + 1, || None);
                        }
                        parts[i] = Some(a);
                    }
                    Ok(Err(f)) => {
                        if first_error.is_none() {
                            first_error = Some((index, f));
                            tasks.abort_all();
                        }
                    }
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => {
                        return Err(Failure {
                            cause: format!("request task failed: {e}"),
                            retry: false,
                            wait: None,
                        });
                    }
                }
            }
            if let Some((_, f)) = first_error {
                return Err(f);
            }
            Ok(parts)
        });
        let parts = results.map_err(|f| self.fail(ep, &f, "inference"))?;
        let mut out = Answers::default();
        for p in parts {
            let p = p.ok_or_else(|| Error::Internal("an inference batch went missing".into()))?;
            out.extend(p).map_err(|cause| {
                self.fail(
                    ep,
                    &Failure {
                        cause,
                        retry: false,
                        wait: None,
                    },
                    "inference",
                )
            })?;
        }
        if out.labels.len() != rows.len() {
            return Err(self.fail(
                ep,
                &Failure {
                    cause: format!("{} predictions for {} rows", out.labels.len(), rows.len()),
                    retry: false,
                    wait: None,
                },
                "inference",
            ));
        }
        Ok(out)
    }

    /// The error for a failed call, scrubbed of the token.
    fn fail(&self, ep: &Endpoint, f: &Failure, what: &str) -> Error {
        let mut cause = format!("{what}: {}", f.cause);
        if let Some(t) = self.token.as_ref().and_then(|t| t.last())
            && t.len() >= 4
        {
            cause = cause.replace(&t, "[token]");
        }
        Error::endpoint(&ep.model_url, cause)
    }
}

/// One request, retried on 429, 5xx and connection failures.
async fn call(
    http: &reqwest::Client,
    token: Option<Arc<Token>>,
    url: &str,
    body: Option<Value>,
    retries: u32,
) -> std::result::Result<Value, Failure> {
    let body = body.map(|b| b.to_string());
    let mut attempt = 0u32;
    loop {
        let result = once(http, token.as_deref(), url, body.as_deref()).await;
        match result {
            Ok(v) => return Ok(v),
            Err(f) if f.retry && attempt < retries => {
                let backoff = BACKOFF * 2u32.saturating_pow(attempt);
                tokio::time::sleep(f.wait.unwrap_or(backoff).min(MAX_RETRY_AFTER)).await;
                attempt += 1;
            }
            Err(mut f) => {
                if attempt > 0 {
                    f.cause = format!("{} (after {} retries)", f.cause, attempt);
                }
                return Err(f);
            }
        }
    }
}

async fn once(
    http: &reqwest::Client,
    token: Option<&Token>,
    url: &str,
    body: Option<&str>,
) -> std::result::Result<Value, Failure> {
    let fatal = |cause: String| Failure {
        cause,
        retry: false,
        wait: None,
    };
    let mut bearer = None;
    let mut req = match body {
        Some(b) => http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b.to_owned()),
        None => http.get(url),
    };
    if let Some(t) = token {
        let t = t.get().map_err(|e| fatal(e.to_string()))?;
        req = req.bearer_auth(&t);
        bearer = Some(t);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Err(fatal(
                "no answer within the timeout (--endpoint-timeout)".into(),
            ));
        }
        Err(e) => {
            return Err(Failure {
                cause: format!("cannot connect: {}", chain(&e)),
                retry: e.is_connect(),
                wait: None,
            });
        }
    };
    let status = resp.status();
    let wait = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = match resp.text().await {
        Ok(t) => t,
        Err(e) if e.is_timeout() => {
            return Err(fatal(
                "no answer within the timeout (--endpoint-timeout)".into(),
            ));
        }
        Err(e) => {
            return Err(Failure {
                cause: format!("reading the answer: {}", chain(&e)),
                retry: true,
                wait: None,
            });
        }
    };
    if status.is_success() {
        if body.is_none() {
            return Ok(Value::Null);
        }
        return serde_json::from_str(&text)
            .map_err(|e| fatal(format!("the answer is not JSON ({e})")));
    }
    // A server that echoes the request (headers included) must not make us print the token:
    // scrub it before the message is cut short, where a partial copy would escape.
    let text = match &bearer {
        Some(t) => text.replace(t.as_str(), "[token]"),
        None => text,
    };
    let said = server_message(&text);
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    let code = status.as_u16();
    let cause = match code {
        401 => format!(
            "401 Unauthorized: {} token{said}",
            if token.is_some() {
                "the endpoint rejected the"
            } else {
                "the endpoint wants a bearer token (--token-file or --token-env) and got no"
            }
        ),
        403 => format!("403 Forbidden: the caller may not use this model{said}"),
        404 => format!("404 Not Found: no model at this URL{said}"),
        _ if body.is_none() => format!("the model is not ready (HTTP {code}){said}"),
        _ => format!("HTTP {code}{said}"),
    };
    Err(Failure {
        cause,
        retry: code == 429 || status.is_server_error(),
        wait,
    })
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

/// What a server said in an error body: the `error` field of a JSON body, else the last
/// non-empty line of the text (a Python traceback ends with the exception), shortened.
fn server_message(text: &str) -> String {
    let msg = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => match o.get("error").or_else(|| o.get("detail")) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => Value::Object(o).to_string(),
        },
        _ => text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or_default()
            .to_owned(),
    };
    let msg: String = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    if msg.chars().count() > CAUSE_CHARS {
        let cut: String = msg.chars().take(CAUSE_CHARS).collect();
        format!("{cut}…")
    } else {
        msg
    }
}

#[cfg(test)]
mod tests;
