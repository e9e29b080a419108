//! The native driver: for deployments that are all native endpoints, one loop on tokio does
//! what the request's [`Run`] says — permits, calls with their timeouts, backoff sleeps,
//! hedges, tenant budgets — for plain and streamed answers alike, without leaving Rust
//! between attempts. Every decision (and every reservation and settlement) is the run's;
//! this file is I/O.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use super::client::{ChatStream, Endpoint};
use super::error::ProviderError;
use super::types::{ChatRequest, ChatResponse, StreamDelta};
use crate::clock::SystemClock;
use crate::limit::{AnyLimiter, LimitError};
use crate::route::blocking_if;
use crate::route::{
    Action, AttemptId, BreakerConfig, Deployment, FailReason, Limits, RequestInfo,
    RetryBudgetConfig, RetryPolicy, Router, RouterConfig, Run, Spend,
};
use crate::spend::Budgets;

/// One deployment: its endpoint and its own limiter, if any.
#[derive(Debug, Clone)]
pub struct NativeDeployment {
    pub endpoint: Arc<Endpoint>,
    pub limiter: Option<AnyLimiter>,
}

/// A router over native endpoints; one per logical model, shared by every request.
#[derive(Debug)]
pub struct RoutedEndpoints {
    router: Arc<Router>,
    endpoints: Vec<Arc<Endpoint>>,
    /// Limits for the whole model, then each deployment's own.
    limits: Limits,
}

/// A routed result and where it came from.
#[derive(Debug)]
pub struct Routed<T> {
    pub value: T,
    pub deployment: usize,
    pub attempts: usize,
}

/// One failed attempt of a routed request.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedAttempt {
    pub attempt: AttemptId,
    pub deployment: usize,
    pub error: ProviderError,
}

/// Failed attempts by attempt id: the order they were made in.
type Failures = BTreeMap<AttemptId, FailedAttempt>;

/// Why a routed request failed. `attempts` lists every failed attempt of the request in the
/// order they were made, so the caller can tell what each deployment answered.
#[derive(Debug, thiserror::Error)]
pub enum RoutedError {
    /// The error of the attempt that decided the outcome, as the provider gave it (it is
    /// also in `attempts`).
    #[error("{error}")]
    Provider {
        deployment: usize,
        error: Box<ProviderError>,
        attempts: Vec<FailedAttempt>,
    },
    /// The router gave up without an attempt's error to show (e.g. every breaker open).
    #[error("{reason}")]
    Failed {
        reason: FailReason,
        attempts: Vec<FailedAttempt>,
    },
    /// A limiter refused the request outright (more tokens than its bucket holds).
    #[error("{0}")]
    Limit(LimitError),
    #[error("{0}")]
    Config(String),
}

impl RoutedEndpoints {
    /// `deployments` line up with the router's, by index; `shared` limits the whole model.
    pub fn new(
        router: Arc<Router>,
        deployments: Vec<NativeDeployment>,
        shared: Option<AnyLimiter>,
    ) -> Result<Self, RoutedError> {
        let expected = router.snapshot().deployments.len();
        if deployments.len() != expected {
            return Err(RoutedError::Config(format!(
                "the router has {expected} deployments but {} endpoints were given",
                deployments.len()
            )));
        }
        let (endpoints, own) = deployments
            .into_iter()
            .map(|d| (d.endpoint, d.limiter))
            .unzip();
        Ok(Self {
            router,
            endpoints,
            limits: Limits { shared, own },
        })
    }

    /// One endpoint retried by the router's rules (the same loop as every routed call): up to
    /// `max_retries` more attempts after a rate limit (after its Retry-After), a server error,
    /// a timeout or a broken connection, with full-jitter backoff from 0.5 s up to 8 s. No
    /// breaker and no retry budget: the caller asked for exactly these retries.
    pub fn retrying(endpoint: Arc<Endpoint>, max_retries: u32) -> Result<Self, RoutedError> {
        let config = RouterConfig {
            retry: RetryPolicy {
                max_attempts_per_deployment: max_retries.saturating_add(1),
                backoff_base: Duration::from_millis(500),
                backoff_cap: Duration::from_secs(8),
            },
            breaker: BreakerConfig {
                minimum_requests: u32::MAX,
                ..BreakerConfig::default()
            },
            budget: RetryBudgetConfig {
                ratio: f64::from(max_retries.max(1)),
                min_per_second: f64::from(max_retries.max(1)),
                ..RetryBudgetConfig::default()
            },
            ..RouterConfig::default()
        };
        let deployment = Deployment::new(endpoint.model().to_owned());
        let router = Router::new(vec![deployment], config, Arc::new(SystemClock))
            .map_err(|e| RoutedError::Config(e.to_string()))?;
        let native = NativeDeployment {
            endpoint,
            limiter: None,
        };
        Self::new(Arc::new(router), vec![native], None)
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    fn endpoint(&self, d: usize) -> Result<&Arc<Endpoint>, ProviderError> {
        self.endpoints
            .get(d)
            .ok_or_else(|| ProviderError::Invalid(format!("no deployment {d}")))
    }

    /// The loop: `call` makes one attempt on a deployment within its timeout; `usage` reads
    /// the tokens off a success. Returns the winning value and its run (which
    /// holds the permits and budget reservation while a stream is read).
    async fn drive<'a, T, F, Fut>(
        &'a self,
        info: RequestInfo,
        tokens: u64,
        spend: Option<Spend>,
        call: F,
        usage: fn(&T) -> crate::route::Usage,
    ) -> Result<(Routed<T>, Steps), RoutedError>
    where
        F: Fn(Arc<Endpoint>, Option<Duration>) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>> + 'a,
    {
        let remote = spend.as_ref().is_some_and(|s| is_remote(&s.budgets));
        let run = Run::new(self.router.start(info), self.limits.clone(), tokens).with_spend(spend);
        let mut run = Steps { run, remote };
        let mut running = FuturesUnordered::new();
        let mut errors = Failures::new();
        let mut results: HashMap<AttemptId, T> = HashMap::new();
        loop {
            match run.step(Run::next) {
                Action::Call {
                    attempt,
                    deployment,
                    timeout,
                    ..
                } => {
                    let pending = self
                        .endpoint(deployment)
                        .map(|e| call(Arc::clone(e), timeout));
                    running.push(async move {
                        let result = match pending {
                            Ok(fut) => fut.await,
                            Err(e) => Err(e),
                        };
                        (attempt, deployment, result)
                    });
                }
                Action::Acquire(request) => {
                    let granted = request.acquire().await;
                    run.step(|r| r.permitted(granted));
                }
                Action::Wait(limit) => {
                    let finished = match limit {
                        Some(d) => tokio::time::timeout(d, running.next()).await.ok().flatten(),
                        None => running.next().await,
                    };
                    let Some((attempt, deployment, result)) = finished else {
                        continue;
                    };
                    match result {
                        Ok(value) => {
                            let used = usage(&value);
                            run.step(|r| r.succeeded(attempt, used));
                            results.insert(attempt, value);
                        }
                        Err(error) => {
                            let kind = error.kind();
                            run.step(|r| r.failed(attempt, kind));
                            errors.insert(
                                attempt,
                                FailedAttempt {
                                    attempt,
                                    deployment,
                                    error,
                                },
                            );
                        }
                    }
                }
                Action::Sleep(d) => tokio::time::sleep(d).await,
                Action::Done {
                    attempt,
                    deployment,
                } => {
                    let attempts = run.run.execution().attempts();
                    return match results.remove(&attempt) {
                        Some(value) => Ok((
                            Routed {
                                value,
                                deployment,
                                attempts,
                            },
                            run,
                        )),
                        None => Err(failure(
                            FailReason::Exhausted { last: None },
                            errors,
                            &run.run,
                        )),
                    };
                }
                Action::Fail(reason) => return Err(failure(reason, errors, &run.run)),
            }
        }
    }

    /// One completion, routed: retries, fallbacks, cool-downs, breakers and hedges as the
    /// router decides. `tokens` is the estimate the limiters are charged before the call;
    /// with `spend`, every call reserves from the tenant's budgets first and the answer
    /// settles with its real usage.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        info: RequestInfo,
        tokens: u64,
        spend: Option<Spend>,
    ) -> Result<Routed<ChatResponse>, RoutedError> {
        let call =
            |endpoint: Arc<Endpoint>, timeout| async move { endpoint.chat(req, timeout).await };
        let (routed, _run) = self.drive(info, tokens, spend, call, chat_usage).await?;
        Ok(routed)
    }

    /// A stream, routed: fails over until the first delta arrives, then it is that
    /// deployment's stream. Limiter permits (and the budget reservation) are held until the
    /// stream ends: settled with the final chunk's usage, or for a stream cut short, the
    /// input estimate and what was received.
    pub async fn stream(
        &self,
        req: &ChatRequest,
        info: RequestInfo,
        tokens: u64,
        spend: Option<Spend>,
    ) -> Result<Routed<RoutedStream>, RoutedError> {
        let call = |endpoint: Arc<Endpoint>, timeout| async move {
            first_delta(&endpoint, req, timeout).await
        };
        let (routed, run) = self
            .drive(info, tokens, spend, call, |_| {
                crate::route::Usage::default()
            })
            .await?;
        let (stream, first) = routed.value;
        Ok(Routed {
            value: RoutedStream {
                first,
                stream,
                run: Some(run),
                tokens,
                received: 0,
                usage: None,
            },
            deployment: routed.deployment,
            attempts: routed.attempts,
        })
    }
}

fn chat_usage(response: &ChatResponse) -> crate::route::Usage {
    route_usage(response.usage.unwrap_or_default())
}

fn route_usage(usage: super::types::Usage) -> crate::route::Usage {
    crate::route::Usage {
        cache_read: usage.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
        ..crate::route::Usage::new(usage.prompt_tokens, usage.completion_tokens)
    }
}

async fn first_delta(
    endpoint: &Endpoint,
    req: &ChatRequest,
    timeout: Option<Duration>,
) -> Result<(ChatStream, Option<StreamDelta>), ProviderError> {
    let mut stream = endpoint.stream(req, timeout).await?;
    match stream.next().await {
        Some(Ok(first)) => Ok((stream, Some(first))),
        Some(Err(e)) => Err(e),
        None => Ok((stream, None)),
    }
}

/// The error for a failed request: the deciding attempt's provider error or limiter refusal
/// where there is one, else the router's reason; with every failed attempt either way.
fn failure(reason: FailReason, errors: Failures, run: &Run) -> RoutedError {
    if let Some(refusal) = reason
        .last_error()
        .and_then(|last| run.refusal(last.attempt))
    {
        return RoutedError::Limit(refusal.clone());
    }
    let deciding = reason
        .last_error()
        .and_then(|last| errors.get(&last.attempt))
        .map(|a| (a.deployment, Box::new(a.error.clone())));
    let attempts = errors.into_values().collect();
    match deciding {
        Some((deployment, error)) => RoutedError::Provider {
            deployment,
            error,
            attempts,
        },
        None => RoutedError::Failed { reason, attempts },
    }
}

/// Budgets held in Redis: reserving and settling make a round trip.
fn is_remote(budgets: &Budgets) -> bool {
    matches!(budgets, Budgets::Shared(_))
}

/// A run driven on the runtime. Its steps may reserve, settle or release budgets; with
/// budgets in Redis that is a blocking round trip (the store's own runtime answers it), so
/// such a step tells the runtime first, which moves its other tasks to another worker.
#[derive(Debug)]
struct Steps {
    run: Run,
    remote: bool,
}

impl Steps {
    fn step<R>(&mut self, f: impl FnOnce(&mut Run) -> R) -> R {
        let run = &mut self.run;
        blocking_if(self.remote, || f(run))
    }
}

impl Drop for Steps {
    /// The run ends (its answer in, failed, or the request dropped mid-way): a reservation
    /// still held is settled or released, off the runtime's workers when that is a round trip.
    fn drop(&mut self) {
        let run = &mut self.run;
        blocking_if(self.remote, || run.end());
    }
}

/// A routed stream: the first delta (already read, to know the deployment answered), then
/// the rest.
#[derive(Debug)]
pub struct RoutedStream {
    first: Option<StreamDelta>,
    stream: ChatStream,
    /// Holds the permits and budget reservation while the stream is read; settled with
    /// its usage at the end (then `None`).
    run: Option<Steps>,
    /// The input estimate the run was started with: what a stream cut short is charged
    /// for its prompt.
    tokens: u64,
    /// Characters of content received so far.
    received: usize,
    /// The latest usage a chunk carried (OpenAI's final chunk, with `include_usage`).
    usage: Option<crate::route::Usage>,
}

impl RoutedStream {
    pub async fn next(&mut self) -> Option<Result<StreamDelta, ProviderError>> {
        let next = match self.first.take() {
            Some(first) => Some(Ok(first)),
            None => self.stream.next().await,
        };
        match &next {
            Some(Ok(delta)) => {
                self.received = self.received.saturating_add(delta.content.chars().count());
                if let Some(usage) = delta.usage {
                    self.usage = Some(route_usage(usage));
                }
            }
            // The end (or a broken stream): charged now, not when the stream is dropped.
            Some(Err(_)) | None => self.settle(),
        }
        next
    }

    /// Whether ending it still settles budgets held in Redis (a round trip): the caller
    /// may want to let other threads run meanwhile.
    pub fn settles_remotely(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.remote)
    }

    /// Settles the run once: with the final chunk's usage, else (cut short, or a provider
    /// that sends none) the input estimate and about four characters a token for what was
    /// received, as the Python driver charges it.
    fn settle(&mut self) {
        let Some(mut run) = self.run.take() else {
            return;
        };
        let usage = self.usage.unwrap_or_else(|| {
            let output = u64::try_from(self.received.div_ceil(4)).unwrap_or(u64::MAX);
            crate::route::Usage::new(self.tokens, output)
        });
        run.step(|r| r.settle_usage(usage));
    }
}

impl Drop for RoutedStream {
    fn drop(&mut self) {
        self.settle();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::provider::types::Usage;

    #[test]
    fn cached_prompt_tokens_are_read_off_openai_usage() {
        let usage: Usage = serde_json::from_str(
            r#"{"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280,
                "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0}}"#,
        )
        .unwrap();
        let response = ChatResponse {
            usage: Some(usage),
            ..ChatResponse::default()
        };
        let read = chat_usage(&response);
        assert_eq!((read.input, read.output, read.cache_read), (1200, 80, 1024));
        // null details, or none at all: nothing cached
        let plain: Usage =
            serde_json::from_str(r#"{"prompt_tokens": 5, "prompt_tokens_details": null}"#).unwrap();
        let response = ChatResponse {
            usage: Some(plain),
            ..ChatResponse::default()
        };
        assert_eq!(chat_usage(&response), crate::route::Usage::new(5, 0));
        assert_eq!(
            chat_usage(&ChatResponse::default()),
            crate::route::Usage::default()
        );
    }
}
