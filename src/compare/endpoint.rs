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
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use polars::prelude::*;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::finding::num;
use crate::source::Batch;

/// Longest server message kept in an error.
const CAUSE_CHARS: usize = 300;

/// Longest wait a `Retry-After` header can ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// First backoff; doubled on every retry.
const BACKOFF: Duration = Duration::from_millis(200);

/// Tolerance on a probability row's sum.
const PROBA_SUM_TOLERANCE: f64 = 0.01;

/// A feature's values, as the protocol carries them.
#[derive(Debug, Clone)]
pub enum Column {
    /// Floats (`FP64`).
    F64(Vec<f64>),
    /// Integers (`INT64`).
    I64(Vec<i64>),
    /// Booleans (`BOOL`).
    Bool(Vec<bool>),
    /// Text (`BYTES`, sent as JSON strings).
    Text(Vec<String>),
}

/// A value a probe sets a feature to.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A float.
    F64(f64),
    /// An integer.
    I64(i64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Text(String),
}

impl Cell {
    fn to_json(&self) -> Value {
        match self {
            Self::F64(x) => json!(x),
            Self::I64(x) => json!(x),
            Self::Bool(x) => json!(x),
            Self::Text(x) => json!(x),
        }
    }

    /// The value as reports show it.
    #[must_use]
    pub fn text(&self) -> String {
        match self {
            Self::F64(x) => num(*x),
            Self::I64(x) => x.to_string(),
            Self::Bool(x) => x.to_string(),
            Self::Text(x) => x.clone(),
        }
    }
}

/// One model input.
#[derive(Debug, Clone)]
pub struct Feature {
    /// Column (and input) name.
    pub name: String,
    /// Values, one per row.
    pub values: Column,
}

impl Feature {
    fn datatype(&self) -> &'static str {
        match self.values {
            Column::F64(_) => "FP64",
            Column::I64(_) => "INT64",
            Column::Bool(_) => "BOOL",
            Column::Text(_) => "BYTES",
        }
    }

    /// Whether the feature is categorical (text or boolean).
    #[must_use]
    pub fn is_categorical(&self) -> bool {
        matches!(self.values, Column::Text(_) | Column::Bool(_))
    }

    /// The value of `row`.
    #[must_use]
    pub fn cell(&self, row: usize) -> Cell {
        match &self.values {
            Column::F64(v) => Cell::F64(v[row]),
            Column::I64(v) => Cell::I64(v[row]),
            Column::Bool(v) => Cell::Bool(v[row]),
            Column::Text(v) => Cell::Text(v[row].clone()),
        }
    }

    /// Whether `row` holds `value` (without copying text).
    #[must_use]
    pub fn holds(&self, row: usize, value: &Cell) -> bool {
        match (&self.values, value) {
            (Column::F64(v), Cell::F64(x)) => v[row] == *x,
            (Column::I64(v), Cell::I64(x)) => v[row] == *x,
            (Column::Bool(v), Cell::Bool(x)) => v[row] == *x,
            (Column::Text(v), Cell::Text(x)) => v[row] == *x,
            _ => false,
        }
    }

    /// Parses a value as reports write it into this feature's type; `None` when it does not
    /// fit (a text value for a numeric feature, a fraction for an integer one).
    #[must_use]
    pub fn parse(&self, text: &str) -> Option<Cell> {
        match self.values {
            Column::F64(_) => text.trim().parse::<f64>().ok().map(Cell::F64),
            Column::I64(_) => {
                let x = text.trim().parse::<f64>().ok()?;
                (x.fract() == 0.0 && x.abs() < 9.0e15).then_some(Cell::I64(x as i64))
            }
            Column::Bool(_) => match text.trim() {
                "true" => Some(Cell::Bool(true)),
                "false" => Some(Cell::Bool(false)),
                _ => None,
            },
            Column::Text(_) => Some(Cell::Text(text.to_owned())),
        }
    }

    fn json(&self, rows: &[usize], set: Option<&Cell>) -> Vec<Value> {
        if let Some(c) = set {
            let v = c.to_json();
            return vec![v; rows.len()];
        }
        match &self.values {
            Column::F64(v) => rows.iter().map(|&r| json!(v[r])).collect(),
            Column::I64(v) => rows.iter().map(|&r| json!(v[r])).collect(),
            Column::Bool(v) => rows.iter().map(|&r| json!(v[r])).collect(),
            Column::Text(v) => rows.iter().map(|&r| json!(v[r])).collect(),
        }
    }

    fn f64_at(&self, row: usize, set: Option<&Cell>) -> Option<f64> {
        match (set, &self.values) {
            (Some(Cell::F64(x)), _) => Some(*x),
            (Some(Cell::I64(x)), _) => Some(*x as f64),
            (Some(Cell::Bool(x)), _) => Some(f64::from(u8::from(*x))),
            (Some(Cell::Text(_)), _) => None,
            (None, Column::F64(v)) => Some(v[row]),
            (None, Column::I64(v)) => Some(v[row] as f64),
            (None, Column::Bool(v)) => Some(f64::from(u8::from(v[row]))),
            (None, Column::Text(_)) => None,
        }
    }
}

/// How features travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One input per column, named as the column, with `content_type: pd` (MLServer's pandas
    /// codec: a scikit-learn pipeline gets a DataFrame).
    Columns,
    /// One `[rows, features]` FP64 tensor with this input name, columns in the given order.
    Tensor(String),
}

/// The model inputs of the evaluation rows.
#[derive(Debug, Clone)]
pub struct Features {
    /// Inputs, in the order they are sent.
    pub columns: Vec<Feature>,
    /// Rows.
    pub rows: usize,
    /// Where the rows came from, for errors.
    pub path: PathBuf,
}

impl Features {
    /// Reads the input columns from the batch: `select` in that order, or every column but
    /// `exclude` in file order.
    ///
    /// # Errors
    /// A missing column, a null value (the protocol's tensors carry none), or a type the
    /// protocol has no datatype for.
    pub fn from_batch(batch: &Batch, select: &[String], exclude: &[&str]) -> Result<Self> {
        let path = PathBuf::from(batch.inputs.first().map_or("-", |m| m.path.as_str()));
        let names: Vec<String> = if select.is_empty() {
            batch
                .schema()
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| !exclude.contains(&n.as_str()))
                .collect()
        } else {
            select.to_vec()
        };
        if names.is_empty() {
            return Err(Error::input(
                &path,
                "no feature columns to send to the models",
            ));
        }
        let rows = usize::try_from(batch.rows()).unwrap_or(usize::MAX);
        let mut columns = Vec::with_capacity(names.len());
        for name in names {
            let mut parts = Vec::with_capacity(batch.frames.len());
            for (df, meta) in batch.frames.iter().zip(&batch.inputs) {
                let col = df.column(&name).map_err(|_| {
                    Error::input(
                        std::path::Path::new(&meta.path),
                        format!("feature column `{name}` (--input-col) is missing"),
                    )
                })?;
                parts.push((col.as_materialized_series().clone(), meta.path.clone()));
            }
            columns.push(Feature {
                values: column_values(&name, &parts)?,
                name,
            });
        }
        Ok(Self {
            columns,
            rows,
            path,
        })
    }

    /// The index of the feature named `name`.
    #[must_use]
    pub fn index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The request body for `rows`, with feature `set.0` set to `set.1` on every row.
    fn request(
        &self,
        layout: &Layout,
        outputs: &[String],
        rows: &[usize],
        set: Option<&(usize, Cell)>,
    ) -> std::result::Result<Value, String> {
        let n = rows.len();
        let mut body = serde_json::Map::new();
        match layout {
            Layout::Columns => {
                let inputs: Vec<Value> = self
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(j, f)| {
                        let cell = set.filter(|(k, _)| *k == j).map(|(_, c)| c);
                        let mut input = json!({
                            "name": f.name,
                            "shape": [n],
                            "datatype": f.datatype(),
                            "data": f.json(rows, cell),
                        });
                        if matches!(f.values, Column::Text(_)) {
                            input["parameters"] = json!({"content_type": "str"});
                        }
                        input
                    })
                    .collect();
                body.insert("parameters".into(), json!({"content_type": "pd"}));
                body.insert("inputs".into(), Value::Array(inputs));
            }
            Layout::Tensor(name) => {
                let k = self.columns.len();
                let mut data = Vec::with_capacity(n * k);
                for &r in rows {
                    for (j, f) in self.columns.iter().enumerate() {
                        let cell = set.filter(|(i, _)| *i == j).map(|(_, c)| c);
                        data.push(json!(f.f64_at(r, cell).ok_or_else(|| format!(
                            "feature `{}` is text; a tensor input carries numbers only (use --input-layout columns)",
                            f.name
                        ))?));
                    }
                }
                body.insert(
                    "inputs".into(),
                    json!([{"name": name, "shape": [n, k], "datatype": "FP64", "data": data}]),
                );
            }
        }
        if !outputs.is_empty() {
            body.insert(
                "outputs".into(),
                Value::Array(outputs.iter().map(|o| json!({ "name": o })).collect()),
            );
        }
        Ok(Value::Object(body))
    }
}

/// One column's values across the batch's frames.
fn column_values(name: &str, parts: &[(Series, String)]) -> Result<Column> {
    let first = &parts[0].0;
    let dtype = first.dtype().clone();
    let err = |path: &str, cause: String| Error::input(std::path::Path::new(path), cause);
    let null = |path: &str, s: &Series| -> Result<()> {
        if s.null_count() > 0 {
            let row = s
                .is_null()
                .iter()
                .position(|v| v == Some(true))
                .unwrap_or(0);
            return Err(err(
                path,
                format!(
                    "feature column `{name}` is null at row {row}; the inference protocol's tensors carry no nulls (fill them, or leave the column out with --input-col)"
                ),
            ));
        }
        Ok(())
    };
    let cast = |s: &Series, path: &str, to: &DataType| -> Result<Series> {
        s.cast(to)
            .map_err(|e| err(path, format!("feature column `{name}`: {e}")))
    };
    if dtype.is_float() {
        let mut out = Vec::new();
        for (s, path) in parts {
            null(path, s)?;
            let f = cast(s, path, &DataType::Float64)?;
            let ca = f.f64().map_err(|e| err(path, e.to_string()))?;
            for (row, x) in ca.into_no_null_iter().enumerate() {
                if !x.is_finite() {
                    return Err(err(
                        path,
                        format!(
                            "feature column `{name}` holds {x} at row {row}; JSON carries finite numbers only"
                        ),
                    ));
                }
                out.push(x);
            }
        }
        return Ok(Column::F64(out));
    }
    if dtype.is_integer() {
        let mut out = Vec::new();
        for (s, path) in parts {
            null(path, s)?;
            let f = cast(s, path, &DataType::Int64)?;
            let ca = f.i64().map_err(|e| err(path, e.to_string()))?;
            out.extend(ca.into_no_null_iter());
        }
        return Ok(Column::I64(out));
    }
    if dtype.is_bool() {
        let mut out = Vec::new();
        for (s, path) in parts {
            null(path, s)?;
            let ca = s.bool().map_err(|e| err(path, e.to_string()))?;
            out.extend(ca.iter().map(|v| v.unwrap_or_default()));
        }
        return Ok(Column::Bool(out));
    }
    if dtype.is_string() || matches!(dtype, DataType::Categorical(..)) {
        let mut out = Vec::new();
        for (s, path) in parts {
            null(path, s)?;
            let t = cast(s, path, &DataType::String)?;
            let ca = t.str().map_err(|e| err(path, e.to_string()))?;
            out.extend(ca.iter().map(|v| v.unwrap_or_default().to_owned()));
        }
        return Ok(Column::Text(out));
    }
    Err(err(
        &parts[0].1,
        format!(
            "feature column `{name}` has type {dtype}, which the inference protocol cannot carry; leave it out with --input-col"
        ),
    ))
}

/// Where the bearer token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A file, re-read whenever its modification time or size changes.
    File(PathBuf),
    /// An environment variable, read once.
    Env(String),
}

/// The token with the file state it was read at.
#[derive(Debug)]
struct Token {
    source: TokenSource,
    cached: Mutex<Option<(Option<SystemTime>, u64, String)>>,
}

impl Token {
    fn get(&self) -> Result<String> {
        match &self.source {
            TokenSource::Env(var) => {
                let t = std::env::var(var).map_err(|_| {
                    Error::Usage(format!("--token-env {var}: the variable is not set"))
                })?;
                let t = t.trim().to_owned();
                if t.is_empty() {
                    return Err(Error::Usage(format!(
                        "--token-env {var}: the variable is empty"
                    )));
                }
                Ok(t)
            }
            TokenSource::File(path) => {
                let bad = |cause: String| {
                    Error::Usage(format!("--token-file {}: {cause}", path.display()))
                };
                let meta = std::fs::metadata(path).map_err(|e| bad(crate::error::io_cause(&e)))?;
                let stamp = (meta.modified().ok(), meta.len());
                let mut cached = self
                    .cached
                    .lock()
                    .map_err(|_| Error::Internal("token cache poisoned".into()))?;
                if let Some((m, l, t)) = cached.as_ref()
                    && (*m, *l) == stamp
                    && stamp.0.is_some()
                {
                    return Ok(t.clone());
                }
                let text =
                    std::fs::read_to_string(path).map_err(|e| bad(crate::error::io_cause(&e)))?;
                let t = text.trim().to_owned();
                if t.is_empty() {
                    return Err(bad("the file is empty".into()));
                }
                *cached = Some((stamp.0, stamp.1, t.clone()));
                Ok(t)
            }
        }
    }

    /// The token as last read, for scrubbing messages.
    fn last(&self) -> Option<String> {
        match &self.source {
            TokenSource::Env(var) => std::env::var(var).ok().map(|t| t.trim().to_owned()),
            TokenSource::File(_) => self
                .cached
                .lock()
                .ok()
                .and_then(|c| c.as_ref().map(|(_, _, t)| t.clone())),
        }
    }
}

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
        let token = options.token.clone().map(|source| {
            Arc::new(Token {
                source,
                cached: Mutex::new(None),
            })
        });
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

/// A decoded output tensor.
struct Output<'a> {
    name: &'a str,
    shape: Vec<i64>,
    datatype: &'a str,
    data: Vec<&'a Value>,
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => {
            for i in items {
                flatten(i, out);
            }
        }
        other => out.push(other),
    }
}

/// The predicted classes and probabilities in an inference answer.
fn decode(answer: &Value, n: usize, options: &Options) -> std::result::Result<Answers, String> {
    let outputs = answer
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or("the answer has no `outputs`")?;
    let mut parsed = Vec::with_capacity(outputs.len());
    for o in outputs {
        let name = o.get("name").and_then(Value::as_str).unwrap_or("");
        let shape: Vec<i64> = o
            .get("shape")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        let datatype = o.get("datatype").and_then(Value::as_str).unwrap_or("");
        let mut data = Vec::new();
        if let Some(d) = o.get("data") {
            flatten(d, &mut data);
        }
        parsed.push(Output {
            name,
            shape,
            datatype,
            data,
        });
    }
    let names = || {
        parsed
            .iter()
            .map(|o| format!("`{}` {:?} {}", o.name, o.shape, o.datatype))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let by_name = |want: &str| -> std::result::Result<&Output<'_>, String> {
        parsed
            .iter()
            .find(|o| o.name == want)
            .ok_or_else(|| format!("no output `{want}`; the model returned {}", names()))
    };
    let columns = |o: &Output<'_>| -> Option<usize> {
        match o.shape.as_slice() {
            [r] if *r as usize == n => Some(1),
            [r, c] if *r as usize == n && *c >= 1 => Some(*c as usize),
            _ => None,
        }
    };
    let is_float = |o: &Output<'_>| o.datatype.starts_with("FP");
    let label_out = match &options.label_output {
        Some(name) => Some(by_name(name)?),
        None => parsed.iter().find(|o| columns(o) == Some(1)),
    };
    let proba_out = match &options.proba_output {
        Some(name) => Some(by_name(name)?),
        None => parsed
            .iter()
            .find(|o| is_float(o) && columns(o).is_some_and(|c| c >= 2)),
    };
    let mut out = Answers::default();
    if let Some(name) = answer.get("model_name").and_then(Value::as_str) {
        out.model = Some(match answer.get("model_version").and_then(Value::as_str) {
            Some(v) => format!("{name} version {v}"),
            None => name.to_owned(),
        });
    }
    if let Some(p) = proba_out {
        let c = columns(p).ok_or_else(|| {
            format!(
                "output `{}` has shape {:?}, not [{n}, classes]",
                p.name, p.shape
            )
        })?;
        if c < 2 || p.data.len() != n * c {
            return Err(format!(
                "output `{}` has shape {:?} and {} values; class probabilities need [{n}, classes] with at least 2 classes",
                p.name,
                p.shape,
                p.data.len()
            ));
        }
        let mut proba = Vec::with_capacity(n * c);
        for v in &p.data {
            let x = v
                .as_f64()
                .ok_or_else(|| format!("output `{}` holds {v}, not a number", p.name))?;
            proba.push(x);
        }
        for (r, row) in proba.chunks(c).enumerate() {
            let sum: f64 = row.iter().sum();
            if row.iter().any(|x| !(-1e-9..=1.0 + 1e-9).contains(x))
                || (sum - 1.0).abs() > PROBA_SUM_TOLERANCE
            {
                return Err(format!(
                    "output `{}` is not class probabilities (row {r} sums to {}); name the probability output with --proba-output, or the class output alone with --label-output",
                    p.name,
                    num(sum)
                ));
            }
        }
        out.proba = proba.into_iter().map(|x| x.clamp(0.0, 1.0)).collect();
        out.proba_classes = c;
    }
    match label_out {
        Some(l) if !std::ptr::eq(l, proba_out.map_or(std::ptr::null(), |p| p as *const _)) => {
            if l.data.len() != n {
                return Err(format!(
                    "output `{}` has {} values for {n} rows",
                    l.name,
                    l.data.len()
                ));
            }
            out.labels = l
                .data
                .iter()
                .map(|v| class_text(v, l))
                .collect::<std::result::Result<_, _>>()?;
        }
        _ => {
            if out.proba_classes == 0 {
                return Err(format!(
                    "cannot tell the predicted class from the outputs ({}); name it with --label-output",
                    names()
                ));
            }
            // Only probabilities: the class is the column of the largest (its index, which is
            // scikit-learn's class for integer labels 0..k-1).
            out.labels = out
                .proba
                .chunks(out.proba_classes)
                .map(|row| {
                    let mut best = 0;
                    for (j, &x) in row.iter().enumerate() {
                        if x > row[best] {
                            best = j;
                        }
                    }
                    best.to_string()
                })
                .collect();
        }
    }
    Ok(out)
}

/// A predicted class as text: integers as integers, text as is.
fn class_text(v: &Value, o: &Output<'_>) -> std::result::Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(x) => {
            if let Some(i) = x.as_i64() {
                return Ok(i.to_string());
            }
            match x.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(format!("{}", f as i64)),
                _ => Err(format!(
                    "output `{}` ({}) holds {x}, not a class; name the class output with --label-output",
                    o.name, o.datatype
                )),
            }
        }
        other => Err(format!("output `{}` holds {other}, not a class", o.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_urls() {
        let ok = Endpoint::parse("http://h:8080/v2/models/m/infer", "--x").unwrap();
        assert_eq!(ok.model_url, "http://h:8080/v2/models/m");
        let v = Endpoint::parse("https://h/serving/v2/models/m/versions/3/", "--x").unwrap();
        assert_eq!(v.model_url, "https://h/serving/v2/models/m/versions/3");
        for bad in [
            "h:8080/v2/models/m",
            "http://h/v2/models",
            "http://h/v1/models/m:predict",
            "http://u:p@h/v2/models/m",
            "http://h/v2/models/m/extra",
        ] {
            assert!(Endpoint::parse(bad, "--x").is_err(), "{bad}");
        }
    }

    #[test]
    fn messages() {
        assert_eq!(server_message("{\"error\": \"bad shape\"}"), "bad shape");
        assert_eq!(
            server_message(
                "Traceback (most recent call last):\n  File x\nValueError: X has 3 features\n\n"
            ),
            "ValueError: X has 3 features"
        );
    }

    fn opts() -> Options {
        Options {
            layout: Layout::Columns,
            label_output: None,
            proba_output: None,
            token: None,
            ca_bundle: None,
            timeout: Duration::from_secs(1),
            concurrency: 1,
            batch_rows: 10,
            retries: 0,
        }
    }

    #[test]
    fn outputs_by_shape() {
        let a = json!({"outputs": [
            {"name": "predict", "shape": [2, 1], "datatype": "INT64", "data": [0, 1]},
            {"name": "predict_proba", "shape": [2, 2], "datatype": "FP64", "data": [0.9, 0.1, 0.2, 0.8]}
        ]});
        let d = decode(&a, 2, &opts()).unwrap();
        assert_eq!(d.labels, ["0", "1"]);
        assert_eq!(d.proba_classes, 2);
        // Probabilities only: argmax.
        let a = json!({"outputs": [{"name": "o", "shape": [2, 3], "datatype": "FP32", "data": [[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]}]});
        assert_eq!(decode(&a, 2, &opts()).unwrap().labels, ["1", "0"]);
        // Scores that are not probabilities.
        let a = json!({"outputs": [{"name": "o", "shape": [1, 2], "datatype": "FP64", "data": [2.0, -1.0]}]});
        assert!(
            decode(&a, 1, &opts())
                .unwrap_err()
                .contains("not class probabilities")
        );
        // Wrong row count.
        let a = json!({"outputs": [{"name": "o", "shape": [3], "datatype": "BYTES", "data": ["a", "b", "c"]}]});
        assert!(decode(&a, 2, &opts()).is_err());
    }

    #[test]
    fn tensor_rejects_text() {
        let f = Features {
            columns: vec![
                Feature {
                    name: "a".into(),
                    values: Column::F64(vec![1.0, 2.0]),
                },
                Feature {
                    name: "b".into(),
                    values: Column::Text(vec!["x".into(), "y".into()]),
                },
            ],
            rows: 2,
            path: PathBuf::from("f"),
        };
        let layout = Layout::Tensor("input-0".into());
        assert!(f.request(&layout, &[], &[0, 1], None).is_err());
        let body = f
            .request(
                &Layout::Columns,
                &[],
                &[1],
                Some(&(1, Cell::Text("z".into()))),
            )
            .unwrap();
        assert_eq!(body["inputs"][1]["data"], json!(["z"]));
        assert_eq!(body["inputs"][0]["data"], json!([2.0]));
    }
}
