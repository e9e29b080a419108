//! Python face of the native provider: `_core.Endpoint` (one OpenAI-compatible endpoint),
//! `_core.NativeRouter` (the executor loop in Rust over endpoints), `_core.ChatStream`.
//! Calls run on the shared tokio runtime; sync calls release the GIL while they wait.
//! Requests arrive as one JSON object (messages, tools, tool_choice, stop, parameters);
//! answers leave as plain tuples that `langscale.endpoint` turns into LangChain messages.

use std::sync::Arc;

use langscale_core::provider::{
    self, ChatRequest, ChatResponse, EndpointConfig, NativeDeployment,
    ProviderError as CoreProviderError, RoutedEndpoints, RoutedError, RoutedStream, StreamDelta,
};
use langscale_core::route::{RequestInfo, Spend};
use langscale_core::spend::{Budgets, Who};
use pyo3::exceptions::{PyStopAsyncIteration, PyStopIteration};
use pyo3::prelude::*;

use crate::args::{self, OutputTokens};
use crate::errors::{config_error, provider_error, routed_error};
use crate::route::Router;

/// (id, model, content, [(id, name, arguments)], finish_reason, (input, output, total))
type PyResponse = (
    Option<String>,
    Option<String>,
    String,
    Vec<(String, String, String)>,
    Option<String>,
    Option<(u64, u64, u64)>,
);

/// (content, [(index, id, name, arguments)], finish_reason, usage, model, id)
type PyDelta = (
    String,
    Vec<(u32, Option<String>, Option<String>, Option<String>)>,
    Option<String>,
    Option<(u64, u64, u64)>,
    Option<String>,
    Option<String>,
);

fn response(r: ChatResponse) -> PyResponse {
    (
        r.id,
        r.model,
        r.content,
        r.tool_calls
            .into_iter()
            .map(|c| (c.id, c.function.name, c.function.arguments))
            .collect(),
        r.finish_reason,
        r.usage
            .map(|u| (u.prompt_tokens, u.completion_tokens, u.total_tokens)),
    )
}

fn delta(d: StreamDelta) -> PyDelta {
    (
        d.content,
        d.tool_calls
            .into_iter()
            .map(|t| (t.index, t.id, t.name, t.arguments))
            .collect(),
        d.finish_reason,
        d.usage
            .map(|u| (u.prompt_tokens, u.completion_tokens, u.total_tokens)),
        d.model,
        d.id,
    )
}

args::text_arg! {
    /// A chat request as one JSON object (built by `langscale.endpoint.request_json`).
    RequestJson = "request_json";
}

fn request(json: RequestJson<'_>) -> PyResult<Arc<ChatRequest>> {
    ChatRequest::from_json(json.0)
        .map(Arc::new)
        .map_err(config_error)
}

/// `[(name, value), ...]` header pairs.
fn headers(value: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, String)>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(Vec::new());
    };
    args::items("headers", value)?
        .iter()
        .enumerate()
        .map(|(i, pair)| match args::items("headers", pair)?.as_slice() {
            [name, value] => Ok((
                args::text(&format!("headers[{i}] name"), name)?.to_owned(),
                args::secret_text(&format!("the value of headers[{i}]"), value)?.to_owned(),
            )),
            _ => Err(config_error(format!(
                "headers[{i}] must be a (name, value) pair, got {}",
                args::describe(pair)
            ))),
        })
        .collect()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// One OpenAI-compatible chat-completions endpoint with its connection pool.
#[pyclass(frozen, module = "langscale._core")]
pub struct Endpoint {
    pub(crate) inner: Arc<provider::Endpoint>,
    max_retries: u32,
}

#[pymethods]
impl Endpoint {
    #[new]
    #[pyo3(signature = (base_url, model, *, api_key=None, timeout=None, connect_timeout=None, max_retries=None, params_json=None, headers=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        base_url: &Bound<'_, PyAny>,
        model: &Bound<'_, PyAny>,
        api_key: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
        connect_timeout: Option<&Bound<'_, PyAny>>,
        max_retries: Option<&Bound<'_, PyAny>>,
        params_json: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut config = EndpointConfig::new(
            args::text("base_url", base_url)?,
            args::text("model", model)?,
        );
        config.api_key = match api_key.filter(|k| !k.is_none()) {
            Some(key) => Some(args::secret_text("api_key", key)?.to_owned()),
            None => None,
        };
        config.headers = self::headers(headers)?;
        let params_json = args::optional_text("params_json", params_json)?;
        if let Some(t) = args::seconds("timeout", timeout)? {
            config.timeout = t;
        }
        if let Some(t) = args::seconds("connect_timeout", connect_timeout)? {
            config.connect_timeout = t;
        }
        if let Some(json) = params_json {
            config.defaults = match serde_json::from_str(json) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => {
                    return Err(config_error(format!(
                        "model parameters must be a JSON object, got {json:?}"
                    )))
                }
            };
        }
        let max_retries = args::count("max_retries", max_retries)?.unwrap_or(0);
        let max_retries = u32::try_from(max_retries)
            .map_err(|_| config_error(format!("max_retries is too large: {max_retries}")))?;
        let inner = provider::Endpoint::new(config).map_err(|e| provider_error(&e))?;
        Ok(Self {
            inner: Arc::new(inner),
            max_retries,
        })
    }

    #[getter]
    fn url(&self) -> &str {
        self.inner.url()
    }

    #[getter]
    fn model(&self) -> &str {
        self.inner.model()
    }

    /// One completion (blocking, GIL released).
    #[pyo3(signature = (request_json, timeout=None))]
    fn chat(
        &self,
        py: Python<'_>,
        request_json: RequestJson<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyResponse> {
        let (req, timeout) = (request(request_json)?, args::seconds("timeout", timeout)?);
        let call = self.call(&req, timeout)?;
        py.detach(move || runtime().block_on(call))
            .map(response)
            .map_err(|e| provider_error(&e))
    }

    /// An awaitable of one completion.
    #[pyo3(signature = (request_json, timeout=None))]
    fn achat<'py>(
        &self,
        py: Python<'py>,
        request_json: RequestJson<'_>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (req, timeout) = (request(request_json)?, args::seconds("timeout", timeout)?);
        let call = self.call(&req, timeout)?;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            call.await.map(response).map_err(|e| provider_error(&e))
        })
    }

    /// Open a stream (blocking until the provider accepts it).
    #[pyo3(signature = (request_json, timeout=None))]
    fn stream(
        &self,
        py: Python<'_>,
        request_json: RequestJson<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<ChatStream> {
        let (req, timeout) = (request(request_json)?, args::seconds("timeout", timeout)?);
        let inner = Arc::clone(&self.inner);
        py.detach(move || runtime().block_on(inner.stream(&req, timeout)))
            .map(|s| ChatStream::new(Source::Plain(s)))
            .map_err(|e| provider_error(&e))
    }

    /// An awaitable of an open stream.
    #[pyo3(signature = (request_json, timeout=None))]
    fn astream<'py>(
        &self,
        py: Python<'py>,
        request_json: RequestJson<'_>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (req, timeout) = (request(request_json)?, args::seconds("timeout", timeout)?);
        let inner = Arc::clone(&self.inner);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            inner
                .stream(&req, timeout)
                .await
                .map(|s| ChatStream::new(Source::Plain(s)))
                .map_err(|e| provider_error(&e))
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Endpoint({:?}, model={:?})",
            self.inner.url(),
            self.inner.model()
        )
    }
}

impl Endpoint {
    /// One completion: a plain call, or with `max_retries`, through the router's one loop.
    fn call(
        &self,
        req: &Arc<ChatRequest>,
        timeout: Option<std::time::Duration>,
    ) -> PyResult<impl std::future::Future<Output = Result<ChatResponse, CoreProviderError>>> {
        let (inner, req) = (Arc::clone(&self.inner), Arc::clone(req));
        let routed = match self.max_retries {
            0 => None,
            n => Some(RoutedEndpoints::retrying(Arc::clone(&inner), n).map_err(routed_error)?),
        };
        Ok(async move {
            match routed {
                None => inner.chat(&req, timeout).await,
                Some(routed) => routed
                    .chat(&req, RequestInfo::default(), 0, None)
                    .await
                    .map(|r| r.value)
                    .map_err(|e| match e {
                        RoutedError::Provider { error, .. } => *error,
                        other => CoreProviderError::Invalid(other.to_string()),
                    }),
            }
        })
    }
}

enum Source {
    Plain(provider::ChatStream),
    Routed(Box<RoutedStream>),
    /// Dropped (its settlement done).
    Gone,
}

impl Source {
    async fn next(&mut self) -> Option<Result<StreamDelta, CoreProviderError>> {
        match self {
            Self::Plain(s) => s.next().await,
            Self::Routed(s) => s.next().await,
            Self::Gone => None,
        }
    }
}

/// A streamed answer: iterate (blocking) or async-iterate for delta tuples.
#[pyclass(frozen, module = "langscale._core")]
pub struct ChatStream {
    source: Arc<tokio::sync::Mutex<Source>>,
}

impl ChatStream {
    fn new(source: Source) -> Self {
        Self {
            source: Arc::new(tokio::sync::Mutex::new(source)),
        }
    }
}

impl Drop for ChatStream {
    /// A routed stream not read to its end settles its budgets now: with budgets in Redis
    /// that is a round trip, made without the GIL (Python drops objects holding it).
    fn drop(&mut self) {
        let remote = self
            .source
            .try_lock()
            .is_ok_and(|s| matches!(&*s, Source::Routed(r) if r.settles_remotely()));
        if !remote {
            return;
        }
        let gone = Arc::new(tokio::sync::Mutex::new(Source::Gone));
        let source = std::mem::replace(&mut self.source, gone);
        Python::attach(|py| py.detach(move || drop(source)));
    }
}

#[pymethods]
impl ChatStream {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<PyDelta> {
        let source = Arc::clone(&self.source);
        let item =
            py.detach(move || runtime().block_on(async { source.lock().await.next().await }));
        match item {
            Some(Ok(d)) => Ok(delta(d)),
            Some(Err(e)) => Err(provider_error(&e)),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let source = Arc::clone(&self.source);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            match source.lock().await.next().await {
                Some(Ok(d)) => Ok(delta(d)),
                Some(Err(e)) => Err(provider_error(&e)),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }
}

/// The executor loop in Rust over endpoints: `Router` decides, this calls.
#[pyclass(frozen, module = "langscale._core")]
pub struct NativeRouter {
    inner: Arc<RoutedEndpoints>,
    /// The router's tenant budgets: every call reserves from them, as `Router.start` does.
    budgets: Option<Budgets>,
}

/// (deployment, response)
type PyRouted = (usize, PyResponse);

#[pymethods]
impl NativeRouter {
    /// `endpoints` line up with the router's deployments; the router's limits apply.
    #[new]
    fn new(router: PyRef<'_, Router>, endpoints: Vec<PyRef<'_, Endpoint>>) -> PyResult<Self> {
        let own = &router.limits.own;
        let deployments = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| NativeDeployment {
                endpoint: Arc::clone(&e.inner),
                limiter: own.get(i).cloned().flatten(),
            })
            .collect();
        let shared = router.limits.shared.clone();
        let inner = RoutedEndpoints::new(Arc::clone(&router.router), deployments, shared)
            .map_err(routed_error)?;
        Ok(Self {
            inner: Arc::new(inner),
            budgets: router.budgets.clone(),
        })
    }

    /// One routed completion (blocking, GIL released): (deployment, response).
    #[pyo3(signature = (request_json, estimated_input_tokens=0, tools=0, turns=0, complexity_hint=None, tenant=None, user=None, output_tokens=None, deadline=None))]
    #[allow(clippy::too_many_arguments)]
    fn chat(
        &self,
        py: Python<'_>,
        request_json: RequestJson<'_>,
        estimated_input_tokens: u64,
        tools: usize,
        turns: usize,
        complexity_hint: Option<&Bound<'_, PyAny>>,
        tenant: Option<&Bound<'_, PyAny>>,
        user: Option<&Bound<'_, PyAny>>,
        output_tokens: Option<OutputTokens>,
        deadline: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyRouted> {
        let call = self.routed_call(
            request_json,
            estimated_input_tokens,
            tools,
            turns,
            complexity_hint,
            tenant,
            user,
            output_tokens,
            deadline,
        )?;
        let inner = Arc::clone(&self.inner);
        py.detach(move || {
            runtime().block_on(inner.chat(&call.req, call.info, call.tokens, call.spend))
        })
        .map(|r| (r.deployment, response(r.value)))
        .map_err(routed_error)
    }

    /// An awaitable of one routed completion: (deployment, response).
    #[pyo3(signature = (request_json, estimated_input_tokens=0, tools=0, turns=0, complexity_hint=None, tenant=None, user=None, output_tokens=None, deadline=None))]
    #[allow(clippy::too_many_arguments)]
    fn achat<'py>(
        &self,
        py: Python<'py>,
        request_json: RequestJson<'_>,
        estimated_input_tokens: u64,
        tools: usize,
        turns: usize,
        complexity_hint: Option<&Bound<'py, PyAny>>,
        tenant: Option<&Bound<'py, PyAny>>,
        user: Option<&Bound<'py, PyAny>>,
        output_tokens: Option<OutputTokens>,
        deadline: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let call = self.routed_call(
            request_json,
            estimated_input_tokens,
            tools,
            turns,
            complexity_hint,
            tenant,
            user,
            output_tokens,
            deadline,
        )?;
        let inner = Arc::clone(&self.inner);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            inner
                .chat(&call.req, call.info, call.tokens, call.spend)
                .await
                .map(|r| (r.deployment, response(r.value)))
                .map_err(routed_error)
        })
    }

    /// A routed stream (blocking until a deployment sent its first delta).
    #[pyo3(signature = (request_json, estimated_input_tokens=0, tools=0, turns=0, complexity_hint=None, tenant=None, user=None, output_tokens=None, deadline=None))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        py: Python<'_>,
        request_json: RequestJson<'_>,
        estimated_input_tokens: u64,
        tools: usize,
        turns: usize,
        complexity_hint: Option<&Bound<'_, PyAny>>,
        tenant: Option<&Bound<'_, PyAny>>,
        user: Option<&Bound<'_, PyAny>>,
        output_tokens: Option<OutputTokens>,
        deadline: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(usize, ChatStream)> {
        let call = self.routed_call(
            request_json,
            estimated_input_tokens,
            tools,
            turns,
            complexity_hint,
            tenant,
            user,
            output_tokens,
            deadline,
        )?;
        let inner = Arc::clone(&self.inner);
        py.detach(move || {
            runtime().block_on(inner.stream(&call.req, call.info, call.tokens, call.spend))
        })
        .map(|r| {
            (
                r.deployment,
                ChatStream::new(Source::Routed(Box::new(r.value))),
            )
        })
        .map_err(routed_error)
    }

    /// An awaitable of a routed stream: (deployment, stream).
    #[pyo3(signature = (request_json, estimated_input_tokens=0, tools=0, turns=0, complexity_hint=None, tenant=None, user=None, output_tokens=None, deadline=None))]
    #[allow(clippy::too_many_arguments)]
    fn astream<'py>(
        &self,
        py: Python<'py>,
        request_json: RequestJson<'_>,
        estimated_input_tokens: u64,
        tools: usize,
        turns: usize,
        complexity_hint: Option<&Bound<'py, PyAny>>,
        tenant: Option<&Bound<'py, PyAny>>,
        user: Option<&Bound<'py, PyAny>>,
        output_tokens: Option<OutputTokens>,
        deadline: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let call = self.routed_call(
            request_json,
            estimated_input_tokens,
            tools,
            turns,
            complexity_hint,
            tenant,
            user,
            output_tokens,
            deadline,
        )?;
        let inner = Arc::clone(&self.inner);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            inner
                .stream(&call.req, call.info, call.tokens, call.spend)
                .await
                .map(|r| {
                    (
                        r.deployment,
                        ChatStream::new(Source::Routed(Box::new(r.value))),
                    )
                })
                .map_err(routed_error)
        })
    }
}

/// One request's arguments to the native loop, checked once for every path.
struct RoutedCall {
    req: Arc<ChatRequest>,
    info: RequestInfo,
    /// What the limiters are charged first.
    tokens: u64,
    /// With budgets, what every call of the request reserves.
    spend: Option<Spend>,
}

impl NativeRouter {
    /// The request and its routing info; with budgets, every call reserves for its
    /// tenant/user its input estimate plus `output_tokens` (else the budgets' estimate).
    #[allow(clippy::too_many_arguments)]
    fn routed_call(
        &self,
        request_json: RequestJson<'_>,
        tokens: u64,
        tools: usize,
        turns: usize,
        hint: Option<&Bound<'_, PyAny>>,
        tenant: Option<&Bound<'_, PyAny>>,
        user: Option<&Bound<'_, PyAny>>,
        output_tokens: Option<OutputTokens>,
        deadline: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<RoutedCall> {
        let req = request(request_json)?;
        let info = RequestInfo {
            estimated_input_tokens: tokens,
            tools,
            turns,
            complexity_hint: crate::route::complexity_hint(hint)?,
            tenant: args::optional_text("tenant", tenant)?.map(Arc::from),
            deadline: args::seconds("deadline", deadline)?,
            ..RequestInfo::default()
        };
        let user = args::optional_text("user", user)?;
        let spend = self.budgets.as_ref().map(|b| Spend {
            budgets: b.clone(),
            who: Who::new(info.tenant.as_deref(), user),
            output_tokens: output_tokens.map(|t| t.0),
        });
        Ok(RoutedCall {
            req,
            info,
            tokens,
            spend,
        })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Endpoint>()?;
    m.add_class::<ChatStream>()?;
    m.add_class::<NativeRouter>()?;
    Ok(())
}
