//! The whole executor loop for deployments that are all native endpoints: the router's
//! state machine decides, this drives it on tokio — limiter permits, calls with their
//! timeouts, backoff sleeps, hedges — without leaving Rust between attempts.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use super::client::{ChatStream, Endpoint};
use super::error::ProviderError;
use super::types::{ChatRequest, ChatResponse, StreamDelta};
use crate::limit::{LimitError, Limiter, Permit, Priority};
use crate::route::{AttemptId, FailReason, Outcome, RequestInfo, Router, Step};

/// One deployment: its endpoint and its own limiter, if any.
#[derive(Debug, Clone)]
pub struct NativeDeployment {
    pub endpoint: Arc<Endpoint>,
    pub limiter: Option<Limiter>,
}

/// A router over native endpoints; one per logical model, shared by every request.
#[derive(Debug)]
pub struct RoutedEndpoints {
    router: Arc<Router>,
    deployments: Vec<NativeDeployment>,
    /// Limits for the whole model, acquired before the deployment's own.
    shared: Option<Limiter>,
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

enum AttemptError {
    Provider(ProviderError),
    Limit(LimitError),
}

type AttemptFuture<'a> = Pin<
    Box<
        dyn Future<
                Output = (
                    AttemptId,
                    usize,
                    Result<ChatResponse, AttemptError>,
                    Duration,
                ),
            > + Send
            + 'a,
    >,
>;

impl RoutedEndpoints {
    /// `deployments` line up with the router's, by index.
    pub fn new(
        router: Arc<Router>,
        deployments: Vec<NativeDeployment>,
        shared: Option<Limiter>,
    ) -> Result<Self, RoutedError> {
        let expected = router.snapshot().deployments.len();
        if deployments.len() != expected {
            return Err(RoutedError::Config(format!(
                "the router has {expected} deployments but {} endpoints were given",
                deployments.len()
            )));
        }
        Ok(Self {
            router,
            deployments,
            shared,
        })
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    async fn permits(&self, d: usize, tokens: u64) -> Result<Vec<Permit>, LimitError> {
        let own = self.deployments.get(d).and_then(|x| x.limiter.as_ref());
        let mut permits = Vec::new();
        for limiter in [self.shared.as_ref(), own].into_iter().flatten() {
            permits.push(limiter.acquire(tokens, Priority::Standard, None).await?);
        }
        Ok(permits)
    }

    fn endpoint(&self, d: usize) -> Result<&Arc<Endpoint>, ProviderError> {
        self.deployments
            .get(d)
            .map(|x| &x.endpoint)
            .ok_or_else(|| ProviderError::Invalid(format!("no deployment {d}")))
    }

    fn attempt<'a>(
        &'a self,
        id: AttemptId,
        d: usize,
        req: &'a ChatRequest,
        timeout: Option<Duration>,
        tokens: u64,
    ) -> AttemptFuture<'a> {
        Box::pin(async move {
            let mut permits = match self.permits(d, tokens).await {
                Ok(p) => p,
                Err(e) => return (id, d, Err(AttemptError::Limit(e)), Duration::ZERO),
            };
            let started = Instant::now();
            let result = match self.endpoint(d) {
                Ok(endpoint) => endpoint.chat(req, timeout).await,
                Err(e) => Err(e),
            };
            let latency = started.elapsed();
            if let Ok(response) = &result {
                let used = response.usage.map_or(0, |u| u.total_tokens);
                for p in &mut permits {
                    p.settle(if used > 0 { used } else { tokens });
                }
            }
            (id, d, result.map_err(AttemptError::Provider), latency)
        })
    }

    /// One completion, routed: retries, fallbacks, cool-downs, breakers and hedges as the
    /// router decides. `tokens` is the estimate the limiters are charged before the call.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        info: RequestInfo,
        tokens: u64,
    ) -> Result<Routed<ChatResponse>, RoutedError> {
        let mut exec = self.router.start(info);
        let mut running = FuturesUnordered::new();
        let mut errors = Failures::new();
        let mut results: HashMap<AttemptId, ChatResponse> = HashMap::new();
        loop {
            match exec.next() {
                Step::Call {
                    attempt,
                    deployment,
                    timeout,
                    ..
                } => running.push(self.attempt(attempt, deployment, req, timeout, tokens)),
                Step::Wait(limit) => {
                    if running.is_empty() {
                        // The router only waits on calls in flight; never spin.
                        return Err(failure(FailReason::Exhausted { last: None }, errors));
                    }
                    let finished = match limit {
                        Some(d) => tokio::time::timeout(d, running.next()).await.ok().flatten(),
                        None => running.next().await,
                    };
                    let Some((attempt, deployment, result, latency)) = finished else {
                        continue;
                    };
                    match result {
                        Ok(response) => {
                            let usage = response.usage.unwrap_or_default();
                            exec.report(
                                attempt,
                                Outcome::Success {
                                    latency,
                                    input_tokens: usage.prompt_tokens,
                                    output_tokens: usage.completion_tokens,
                                },
                            );
                            results.insert(attempt, response);
                        }
                        Err(AttemptError::Provider(error)) => {
                            exec.report(attempt, Outcome::Failure(error.kind()));
                            errors.insert(
                                attempt,
                                FailedAttempt {
                                    attempt,
                                    deployment,
                                    error,
                                },
                            );
                        }
                        Err(AttemptError::Limit(e)) => return Err(RoutedError::Limit(e)),
                    }
                }
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Done {
                    attempt,
                    deployment,
                } => {
                    let attempts = exec.attempts();
                    return match results.remove(&attempt) {
                        Some(value) => Ok(Routed {
                            value,
                            deployment,
                            attempts,
                        }),
                        None => Err(failure(FailReason::Exhausted { last: None }, errors)),
                    };
                }
                Step::Fail(reason) => return Err(failure(reason, errors)),
            }
        }
    }

    /// A stream, routed: fails over until the first delta arrives, then it is that
    /// deployment's stream. Limiter permits are held until the stream is dropped.
    pub async fn stream(
        &self,
        req: &ChatRequest,
        info: RequestInfo,
        tokens: u64,
    ) -> Result<Routed<RoutedStream>, RoutedError> {
        let mut exec = self.router.start(info);
        let mut errors = Failures::new();
        loop {
            match exec.next() {
                Step::Call {
                    attempt,
                    deployment,
                    timeout,
                    ..
                } => {
                    let permits = self
                        .permits(deployment, tokens)
                        .await
                        .map_err(RoutedError::Limit)?;
                    let started = Instant::now();
                    let opened = match self.endpoint(deployment) {
                        Ok(endpoint) => first_delta(endpoint, req, timeout).await,
                        Err(e) => Err(e),
                    };
                    match opened {
                        Ok((stream, first)) => {
                            let latency = started.elapsed();
                            exec.report(
                                attempt,
                                Outcome::Success {
                                    latency,
                                    input_tokens: 0,
                                    output_tokens: 0,
                                },
                            );
                            return Ok(Routed {
                                value: RoutedStream {
                                    first,
                                    stream,
                                    _permits: permits,
                                },
                                deployment,
                                attempts: exec.attempts(),
                            });
                        }
                        Err(error) => {
                            exec.report(attempt, Outcome::Failure(error.kind()));
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
                Step::Sleep(d) | Step::Wait(Some(d)) => tokio::time::sleep(d).await,
                Step::Wait(None) | Step::Done { .. } => {
                    return Err(failure(FailReason::Exhausted { last: None }, errors))
                }
                Step::Fail(reason) => return Err(failure(reason, errors)),
            }
        }
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

/// The error for a failed request: the deciding attempt's provider error where there is
/// one, else the router's reason; with every failed attempt either way.
fn failure(reason: FailReason, errors: Failures) -> RoutedError {
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

/// A routed stream: the first delta (already read, to know the deployment answered), then
/// the rest.
#[derive(Debug)]
pub struct RoutedStream {
    first: Option<StreamDelta>,
    stream: ChatStream,
    _permits: Vec<Permit>,
}

impl RoutedStream {
    pub async fn next(&mut self) -> Option<Result<StreamDelta, ProviderError>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        self.stream.next().await
    }
}
