//! Request coalescing for Python callers: the core's single-flight (`cache::coalesce`) over
//! Python objects. One caller per key leads (makes the call), the others follow and get what
//! it lands: its answer, its exception, or word that it gave up. With a semantic cache a
//! near-duplicate its rule would answer follows too (`cache::near_flights`).

use std::sync::Arc;
use std::time::Duration;

use langscale_core::cache::coalesce::{Flight as CoreFlight, Flights, Landing, Role, Ticket};
use langscale_core::cache::near_flights::{Begun, NearFlights};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::args;
use crate::semantic::{SemanticCache, SplitPrompt};

type Obj = Arc<Py<PyAny>>;

/// One leader per key, the rest follow; a follower waits at most `bound` seconds from the
/// flight's start, after which the next caller leads a fresh one.
#[pyclass(frozen, module = "langscale._core")]
pub struct Coalescer {
    flights: Arc<Flights<String, Obj, Obj>>,
    near: Arc<NearFlights<Obj, Obj>>,
}

fn role(role: Role<Obj, Obj>) -> (Option<u64>, Option<Flight>) {
    match role {
        Role::Lead(Ticket(t)) => (Some(t), None),
        Role::Follow(flight) => (None, Some(Flight { flight })),
    }
}

#[pymethods]
impl Coalescer {
    #[new]
    #[pyo3(signature = (bound=None))]
    fn new(bound: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let bound = args::seconds("bound", bound)?.unwrap_or(Duration::from_secs(60));
        Ok(Self {
            flights: Arc::new(Flights::new(bound)),
            near: Arc::new(NearFlights::new(bound)),
        })
    }

    /// `(ticket, None)`: lead, then land a value or a failure; `(None, flight)`: follow.
    fn begin(&self, key: &Bound<'_, PyAny>) -> PyResult<(Option<u64>, Option<Flight>)> {
        let key = args::text("key", key)?.to_owned();
        Ok(role(self.flights.begin(key)))
    }

    /// `begin` for a prompt `cache` split (`split_prompt`): follow the flight of the same
    /// prompt, or of one the cache would answer it with (same scope, similar, the guard
    /// agreeing), or lead; land with the `*_similar` methods. `vector`: the embedding of
    /// the split's text (None: the cache's own embedder, if it has one, when needed).
    /// `defer`: `(None, None)` instead of running the cache's embedder here (call again
    /// without it, off the event loop).
    #[pyo3(signature = (cache, split, vector=None, defer=false))]
    fn begin_similar(
        &self,
        py: Python<'_>,
        cache: &SemanticCache,
        split: &SplitPrompt,
        vector: Option<Vec<f32>>,
        defer: bool,
    ) -> (Option<u64>, Option<Flight>) {
        let near = &self.near;
        let begun = py.detach(|| near.begin(cache.core(), cache.probe(split, vector), defer));
        match begun {
            Begun::Role(r) => role(r),
            Begun::Deferred(_) => (None, None),
        }
    }

    /// The answer of the flight led with `ticket` (from `begin_similar`).
    fn land_similar(&self, ticket: u64, value: Py<PyAny>) -> bool {
        self.near
            .land(Ticket(ticket), Landing::Value(Arc::new(value)))
    }

    /// The call led with `ticket` raised `error`: every follower raises it too.
    fn fail_similar(&self, ticket: u64, error: Py<PyAny>) -> bool {
        self.near
            .land(Ticket(ticket), Landing::Failed(Arc::new(error)))
    }

    /// The leader with `ticket` gave up: its followers make their own call.
    fn abandon_similar(&self, ticket: u64) -> bool {
        self.near.land(Ticket(ticket), Landing::Abandoned)
    }

    /// The answer for `key`: every follower gets it.
    fn land_value(&self, key: &Bound<'_, PyAny>, value: Py<PyAny>) -> PyResult<()> {
        let key = args::text("key", key)?.to_owned();
        self.flights.land_value(&key, Arc::new(value));
        Ok(())
    }

    /// The leader's call raised `error`: every follower raises it too. False when the
    /// flight is no longer this leader's (it went stale and another leads).
    fn land_failure(
        &self,
        key: &Bound<'_, PyAny>,
        ticket: u64,
        error: Py<PyAny>,
    ) -> PyResult<bool> {
        let key = args::text("key", key)?.to_owned();
        Ok(self
            .flights
            .land_failure(&key, Ticket(ticket), Landing::Failed(Arc::new(error))))
    }

    /// The leader gave up (cancelled, or nothing to share): followers make their own call.
    fn abandon(&self, key: &Bound<'_, PyAny>, ticket: u64) -> PyResult<bool> {
        let key = args::text("key", key)?.to_owned();
        Ok(self
            .flights
            .land_failure(&key, Ticket(ticket), Landing::Abandoned))
    }

    /// led, followed (the same prompt or a near-duplicate), similar (of followed, those
    /// that waited for a near-duplicate), in_flight.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.flights.stats();
        let n = self.near.stats();
        let d = PyDict::new(py);
        d.set_item("led", s.led + n.flights.led)?;
        d.set_item("followed", s.followed + n.flights.followed)?;
        d.set_item("similar", n.similar)?;
        d.set_item("in_flight", s.in_flight + n.flights.in_flight)?;
        Ok(d)
    }
}

/// A flight another caller leads.
#[pyclass(frozen, module = "langscale._core")]
pub struct Flight {
    flight: Arc<CoreFlight<Obj, Obj>>,
}

/// What a follower got: ("value", answer), ("failed", exception), ("abandoned", None) or
/// ("stale", None) when the flight outlived its bound.
fn outcome(
    py: Python<'_>,
    landing: Option<Landing<Obj, Obj>>,
) -> (&'static str, Option<Py<PyAny>>) {
    match landing {
        Some(Landing::Value(v)) => ("value", Some(v.clone_ref(py))),
        Some(Landing::Failed(e)) => ("failed", Some(e.clone_ref(py))),
        Some(Landing::Abandoned) => ("abandoned", None),
        None => ("stale", None),
    }
}

#[pymethods]
impl Flight {
    /// Wait on this thread (GIL released) for what the leader lands.
    fn wait(&self, py: Python<'_>) -> (&'static str, Option<Py<PyAny>>) {
        let flight = Arc::clone(&self.flight);
        let landing = py.detach(move || flight.wait_blocking());
        outcome(py, landing)
    }

    /// The same as an awaitable; cancelling it stops waiting and changes nothing.
    fn wait_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let flight = Arc::clone(&self.flight);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let landing = flight.wait().await;
            Ok(Python::attach(|py| outcome(py, landing)))
        })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Coalescer>()?;
    m.add_class::<Flight>()?;
    Ok(())
}
