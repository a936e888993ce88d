//! Provider routing: which provider route a message goes to (the longest matching
//! prefix, else a route for its country, else the first route for anything), each
//! route's fallbacks, and a circuit breaker per route.

use crate::clock::EngineClock;
use crate::domain::{Country, CountryOf, Millis, PhoneNumber};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Where a route takes messages from, and where it passes them on.
#[derive(Debug, Clone, Default)]
pub struct RoutingRules {
    /// ISO 3166-1 alpha-2 countries whose numbers it takes.
    pub countries: Vec<Country>,
    /// E.164 prefixes (`+57300`) whose numbers it takes; the longest match wins.
    pub prefixes: Vec<String>,
    /// Routes (by provider name) a message goes to, in order, when this one gives up on
    /// it or its circuit is open.
    pub fallback: Vec<String>,
}

impl RoutingRules {
    /// A route for anything: no countries, no prefixes.
    fn is_default(&self) -> bool {
        self.countries.is_empty() && self.prefixes.is_empty()
    }
}

/// When a route's circuit opens and for how long.
#[derive(Debug, Clone, Copy)]
pub struct CircuitSettings {
    /// Failed attempts in a row that open it.
    pub failures: u32,
    /// How long it stays open before one probe is let through.
    pub open_for: Duration,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        Self {
            failures: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Millis,
    },
    /// One probe is on its way; the others stay away until it is back.
    HalfOpen,
}

/// A circuit breaker: closed while sends succeed; open after `failures` transient
/// failures in a row, so the route is skipped (its messages go to a fallback); after
/// `open_for`, one probe decides whether it closes again.
pub struct Circuit {
    settings: CircuitSettings,
    state: Mutex<State>,
    /// `state` is `Closed { failures: 0 }`: the common case, read without the lock (every
    /// send asks and reports).
    clear: std::sync::atomic::AtomicBool,
    clock: EngineClock,
    /// 0 closed, 1 open, 2 half-open.
    gauge: metrics::Gauge,
}

/// What the circuit lets an attempt do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// The only attempt let through while half-open.
    Probe,
    Refused,
}

impl Circuit {
    pub fn new(provider: &str, settings: CircuitSettings, clock: EngineClock) -> Self {
        let gauge =
            metrics::gauge!(crate::metrics::PROVIDER_CIRCUIT, "provider" => provider.to_owned());
        gauge.set(0.0);
        Self {
            settings,
            state: Mutex::new(State::Closed { failures: 0 }),
            clear: std::sync::atomic::AtomicBool::new(true),
            clock,
            gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, state: &mut State, next: State) {
        *state = next;
        self.clear.store(
            next == State::Closed { failures: 0 },
            std::sync::atomic::Ordering::Release,
        );
        self.gauge.set(match next {
            State::Closed { .. } => 0.0,
            State::Open { .. } => 1.0,
            State::HalfOpen => 2.0,
        });
    }

    fn is_clear(&self) -> bool {
        self.clear.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether an attempt may go to the provider now.
    pub fn admit(&self) -> Admission {
        if self.is_clear() {
            return Admission::Go;
        }
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Admission::Go,
            State::Open { until } if self.clock.now() >= until => {
                self.set(&mut state, State::HalfOpen);
                Admission::Probe
            }
            State::Open { .. } | State::HalfOpen => Admission::Refused,
        }
    }

    /// Whether the circuit refuses attempts now (without taking the probe).
    pub fn is_open(&self) -> bool {
        if self.is_clear() {
            return false;
        }
        match *self.lock() {
            State::Closed { .. } => false,
            State::Open { until } => self.clock.now() < until,
            State::HalfOpen => true,
        }
    }

    /// The provider took an attempt.
    pub fn succeeded(&self) {
        if self.is_clear() {
            return;
        }
        let mut state = self.lock();
        if *state != (State::Closed { failures: 0 }) {
            self.set(&mut state, State::Closed { failures: 0 });
        }
    }

    /// An attempt failed in a way that says the provider is unwell (a transient error).
    pub fn failed(&self) {
        let mut state = self.lock();
        let open = State::Open {
            until: self.clock.now() + self.settings.open_for.as_millis() as Millis,
        };
        match *state {
            State::Closed { failures } if failures + 1 >= self.settings.failures.max(1) => {
                self.set(&mut state, open);
            }
            State::Closed { failures } => self.set(
                &mut state,
                State::Closed {
                    failures: failures + 1,
                },
            ),
            State::HalfOpen => self.set(&mut state, open),
            State::Open { .. } => {}
        }
    }
}

/// Every route of this dispatcher, filled in once all their actors are started (a route
/// names its fallbacks, which may start after it). `A` is how a route is reached (its
/// actor's address).
pub struct RouteTable<A> {
    routes: OnceLock<Vec<TableEntry<A>>>,
}

impl<A> Default for RouteTable<A> {
    fn default() -> Self {
        Self {
            routes: OnceLock::new(),
        }
    }
}

pub(super) struct TableEntry<A> {
    pub(super) name: String,
    pub(super) addr: A,
    pub(super) rules: RoutingRules,
    pub(super) circuit: Arc<Circuit>,
}

impl<A> RouteTable<A> {
    pub(super) fn fill(&self, routes: Vec<TableEntry<A>>) {
        let _ = self.routes.set(routes);
    }

    fn routes(&self) -> &[TableEntry<A>] {
        self.routes.get().map_or(&[], Vec::as_slice)
    }

    pub(super) fn len(&self) -> usize {
        self.routes().len()
    }

    pub(super) fn addr(&self, route: usize) -> Option<&A> {
        self.routes().get(route).map(|r| &r.addr)
    }

    pub(super) fn name(&self, route: usize) -> &str {
        self.routes().get(route).map_or("", |r| r.name.as_str())
    }

    /// The route for `to`: the longest prefix any route names, else the first route for
    /// its country, else the first route for anything (else the first route).
    pub(super) fn pick(&self, to: &PhoneNumber, countries: &mut CountryOf) -> usize {
        let routes = self.routes();
        let number = to.as_str();
        let by_prefix = routes
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.rules.prefixes.iter().map(move |p| (i, p)))
            .filter(|(_, p)| number.starts_with(p.as_str()))
            .max_by_key(|(_, p)| p.len())
            .map(|(i, _)| i);
        if let Some(i) = by_prefix {
            return i;
        }
        let country = countries.of(to);
        country
            .and_then(|c| routes.iter().position(|r| r.rules.countries.contains(&c)))
            .or_else(|| routes.iter().position(|r| r.rules.is_default()))
            .unwrap_or(0)
    }

    /// The route a message leaves `route` for: the first of its fallbacks not `tried`
    /// whose circuit is closed, else the first not tried; `None` when there is none.
    pub(super) fn fallback(&self, route: usize, tried: u64) -> Option<usize> {
        let routes = self.routes();
        let candidates: Vec<usize> = routes
            .get(route)?
            .rules
            .fallback
            .iter()
            .filter_map(|name| routes.iter().position(|r| &r.name == name))
            .filter(|i| *i < 64 && tried & (1 << i) == 0)
            .collect();
        candidates
            .iter()
            .copied()
            .find(|i| !routes[*i].circuit.is_open())
            .or_else(|| candidates.first().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_circuit_opens_after_failures_in_a_row_and_one_probe_closes_it() {
        let clock = EngineClock::default();
        let settings = CircuitSettings {
            failures: 3,
            open_for: Duration::from_millis(50),
        };
        let circuit = Circuit::new("test", settings, clock);
        circuit.failed();
        circuit.failed();
        circuit.succeeded();
        circuit.failed();
        circuit.failed();
        assert_eq!(circuit.admit(), Admission::Go, "not three in a row");
        circuit.failed();
        assert_eq!(circuit.admit(), Admission::Refused);
        assert!(circuit.is_open());
        tokio::time::advance(Duration::from_millis(49)).await;
        assert_eq!(circuit.admit(), Admission::Refused, "open for 50 ms");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(circuit.admit(), Admission::Probe);
        assert_eq!(circuit.admit(), Admission::Refused, "one probe at a time");
        circuit.failed();
        assert_eq!(
            circuit.admit(),
            Admission::Refused,
            "the probe failed: open again"
        );
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(circuit.admit(), Admission::Probe);
        circuit.succeeded();
        assert_eq!(circuit.admit(), Admission::Go);
        assert!(!circuit.is_open());
    }
}
