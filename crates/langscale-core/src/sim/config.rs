//! Settings of the simulated providers: what each one answers, how fast, how often it fails,
//! and when. Read from TOML (`langscale sim --config`) or JSON (Python's `sim.serve`), then
//! checked so that a bad value is named in the error instead of misbehaving later.

use serde::Deserialize;

use super::SimError;
use crate::tokens::Encoding;

/// Every simulated provider started together.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// `[[provider]]` tables in TOML, `provider` (or `providers`) in JSON.
    #[serde(default, alias = "providers")]
    pub provider: Vec<ProviderConfig>,
}

/// One OpenAI-compatible provider on its own port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// Name in counters and URLs; unique within one simulator.
    pub name: String,
    /// Loopback by default; anything else is the caller's explicit choice.
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// Listed by `/v1/models`; any model name is answered.
    pub models: Vec<String>,
    /// Seconds before the first token (or the whole answer when not streaming starts arriving).
    pub time_to_first_token: f64,
    /// Generation speed after the first token; `None` answers at once.
    pub tokens_per_second: Option<f64>,
    /// Each delay is multiplied by a uniform factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// Request quota; over it the provider answers 429 with `Retry-After` and `x-ratelimit-*`.
    pub requests_per_minute: Option<f64>,
    /// Token quota (prompt plus completion tokens of each request), as above.
    pub tokens_per_minute: Option<f64>,
    /// How many seconds of each quota may be spent at once (60: a whole minute, as OpenAI;
    /// less enforces the rate over shorter spans, as some providers do).
    pub quota_burst_seconds: f64,
    /// Share of requests answered 500.
    pub error_rate: f64,
    /// Share of requests answered 503.
    pub unavailable_rate: f64,
    /// Share of requests that hang (no answer for `hang_seconds`, then 504).
    pub hang_rate: f64,
    /// Share of requests whose connection is reset before any answer.
    pub reset_rate: f64,
    /// How long a hanging request hangs before it gets a 504.
    pub hang_seconds: f64,
    /// Length of answers in tokens, chosen per request between these (then capped by `max_tokens`).
    pub min_completion_tokens: u32,
    pub max_completion_tokens: u32,
    /// Prompts longer than this (in tokens) get 400 `context_length_exceeded`.
    pub context_window: Option<u64>,
    /// Default length of `/v1/embeddings` vectors when the request names no `dimensions`.
    pub embedding_dimensions: usize,
    /// When set, requests must carry `Authorization: Bearer <api_key>` (else 401).
    pub api_key: Option<String>,
    /// Changes every generated answer; the same seed and request give the same answer.
    pub seed: u64,
    /// Scheduled faults, in seconds since the provider started.
    pub faults: Vec<Fault>,
    /// Count prompt tokens with this OpenAI encoding (`o200k_base`, `cl100k_base`), as
    /// OpenAI's usage does; unset: about four characters a token (cheaper under load).
    pub tokenizer: Option<String>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            host: "127.0.0.1".to_owned(),
            port: 0,
            models: vec!["sim-model".to_owned()],
            time_to_first_token: 0.0,
            tokens_per_second: None,
            jitter: 0.0,
            requests_per_minute: None,
            tokens_per_minute: None,
            quota_burst_seconds: 60.0,
            error_rate: 0.0,
            unavailable_rate: 0.0,
            hang_rate: 0.0,
            reset_rate: 0.0,
            hang_seconds: 300.0,
            min_completion_tokens: 12,
            max_completion_tokens: 48,
            context_window: None,
            embedding_dimensions: 256,
            api_key: None,
            seed: 0,
            faults: Vec::new(),
            tokenizer: None,
        }
    }
}

/// What a provider does wrong during a scheduled window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 503 Service Unavailable.
    Down,
    /// 500 Internal Server Error.
    Error,
    /// 429 with `Retry-After` until the window ends.
    RateLimit,
    /// No answer for `hang_seconds`.
    Hang,
    /// Connection reset before any answer.
    Reset,
    /// Every delay multiplied by `factor`.
    Slow,
}

/// A fault from `start` to `end` seconds after the provider started (`end` absent: for ever),
/// hitting a `rate` share of the requests in that window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub start: f64,
    #[serde(default)]
    pub end: Option<f64>,
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub rate: f64,
    #[serde(default = "ten")]
    pub factor: f64,
}

fn one() -> f64 {
    1.0
}

fn ten() -> f64 {
    10.0
}

impl Fault {
    /// Whether `elapsed` seconds since start fall in this fault's window.
    pub fn active(&self, elapsed: f64) -> bool {
        elapsed >= self.start && self.end.is_none_or(|end| elapsed < end)
    }
}

impl SimConfig {
    /// Parse `[[provider]]` tables; unknown keys and wrong types are errors naming the key.
    pub fn from_toml(text: &str) -> Result<Self, SimError> {
        let config: Self = toml::from_str(text).map_err(|e| SimError::Config(e.to_string()))?;
        config.validated()
    }

    /// Parse the JSON that Python's `sim.serve` sends; errors name the path of the bad value.
    pub fn from_json(text: &str) -> Result<Self, SimError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let config: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            SimError::Config(format!("{path}: {}", e.into_inner()))
        })?;
        config.validated()
    }

    /// Fill in default names and check every value; the message names the provider and field.
    pub fn validated(mut self) -> Result<Self, SimError> {
        if self.provider.is_empty() {
            self.provider.push(ProviderConfig::default());
        }
        for (i, p) in self.provider.iter_mut().enumerate() {
            if p.name.is_empty() {
                p.name = if i == 0 {
                    "default".to_owned()
                } else {
                    format!("provider{i}")
                };
            }
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.provider {
            if !names.insert(p.name.as_str()) {
                return Err(SimError::Config(format!(
                    "provider names must be unique, {:?} appears twice",
                    p.name
                )));
            }
            p.check()?;
        }
        Ok(self)
    }
}

fn bad(provider: &str, field: &str, what: &str, value: impl std::fmt::Display) -> SimError {
    SimError::Config(format!(
        "provider {provider:?}: {field} must be {what}, got {value}"
    ))
}

impl ProviderConfig {
    /// The encoding prompt tokens are counted with, if any (checked by `check`).
    pub fn encoding(&self) -> Option<Encoding> {
        self.tokenizer.as_deref().and_then(Encoding::from_name)
    }

    fn check(&self) -> Result<(), SimError> {
        let n = self.name.as_str();
        let non_negative = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(bad(n, field, "a finite number >= 0", v))
            }
        };
        let share = |field: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(bad(n, field, "between 0 and 1", v))
            }
        };
        let positive = |field: &str, v: Option<f64>| match v {
            Some(v) if !(v.is_finite() && v > 0.0) => Err(bad(n, field, "a positive number", v)),
            _ => Ok(()),
        };
        if self.name.chars().any(char::is_control) || self.name.len() > 200 {
            return Err(bad(
                n,
                "name",
                "printable and at most 200 bytes",
                &self.name,
            ));
        }
        if self.host.parse::<std::net::IpAddr>().is_err() && self.host != "localhost" {
            return Err(bad(n, "host", "an IP address or localhost", &self.host));
        }
        non_negative("time_to_first_token", self.time_to_first_token)?;
        if self.time_to_first_token > 3600.0 {
            return Err(bad(
                n,
                "time_to_first_token",
                "at most 3600 seconds",
                self.time_to_first_token,
            ));
        }
        positive("tokens_per_second", self.tokens_per_second)?;
        share("jitter", self.jitter)?;
        positive("requests_per_minute", self.requests_per_minute)?;
        positive("tokens_per_minute", self.tokens_per_minute)?;
        if !(self.quota_burst_seconds.is_finite()
            && self.quota_burst_seconds > 0.0
            && self.quota_burst_seconds <= 3600.0)
        {
            return Err(bad(
                n,
                "quota_burst_seconds",
                "in (0, 3600]",
                self.quota_burst_seconds,
            ));
        }
        if let Some(name) = &self.tokenizer {
            if Encoding::from_name(name).is_none() {
                return Err(bad(
                    n,
                    "tokenizer",
                    "o200k_base or cl100k_base",
                    format!("{name:?}"),
                ));
            }
        }
        share("error_rate", self.error_rate)?;
        share("unavailable_rate", self.unavailable_rate)?;
        share("hang_rate", self.hang_rate)?;
        share("reset_rate", self.reset_rate)?;
        let total = self.error_rate + self.unavailable_rate + self.hang_rate + self.reset_rate;
        if total > 1.0 {
            return Err(bad(
                n,
                "error_rate + unavailable_rate + hang_rate + reset_rate",
                "at most 1",
                total,
            ));
        }
        non_negative("hang_seconds", self.hang_seconds)?;
        if self.hang_seconds > 86_400.0 {
            return Err(bad(n, "hang_seconds", "at most 86400", self.hang_seconds));
        }
        if self.max_completion_tokens == 0 || self.max_completion_tokens > 100_000 {
            return Err(bad(
                n,
                "max_completion_tokens",
                "between 1 and 100000",
                self.max_completion_tokens,
            ));
        }
        if self.min_completion_tokens > self.max_completion_tokens {
            return Err(bad(
                n,
                "min_completion_tokens",
                "at most max_completion_tokens",
                self.min_completion_tokens,
            ));
        }
        if self.context_window == Some(0) {
            return Err(bad(n, "context_window", "a positive integer", 0));
        }
        if !(1..=16_384).contains(&self.embedding_dimensions) {
            return Err(bad(
                n,
                "embedding_dimensions",
                "between 1 and 16384",
                self.embedding_dimensions,
            ));
        }
        for (i, f) in self.faults.iter().enumerate() {
            let field = |name: &str| format!("faults[{i}].{name}");
            if !(f.start.is_finite() && f.start >= 0.0) {
                return Err(bad(n, &field("start"), "a finite number >= 0", f.start));
            }
            if let Some(end) = f.end {
                if !(end.is_finite() && end > f.start) {
                    return Err(bad(n, &field("end"), "a finite number above start", end));
                }
            }
            if !(0.0..=1.0).contains(&f.rate) {
                return Err(bad(n, &field("rate"), "between 0 and 1", f.rate));
            }
            if !(f.factor.is_finite() && f.factor > 0.0 && f.factor <= 1000.0) {
                return Err(bad(n, &field("factor"), "in (0, 1000]", f.factor));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_faults_parses() {
        let config = SimConfig::from_toml(
            r#"
            [[provider]]
            name = "primary"
            requests_per_minute = 60
            time_to_first_token = 0.2
            tokens_per_second = 80
            [[provider.faults]]
            start = 10
            end = 20
            kind = "down"

            [[provider]]
            name = "fallback"
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.provider.len(), 2);
        let primary = &config.provider[0];
        assert_eq!(primary.requests_per_minute, Some(60.0));
        assert_eq!(primary.faults[0].kind, FaultKind::Down);
        assert!(primary.faults[0].active(10.0));
        assert!(!primary.faults[0].active(20.0));
        assert_eq!(config.provider[1].host, "127.0.0.1");
    }

    #[test]
    fn a_tokenizer_is_an_openai_encoding() {
        let ok = SimConfig::from_toml("[[provider]]\nname = \"p\"\ntokenizer = \"o200k_base\"\n")
            .and_then(SimConfig::validated);
        assert_eq!(
            ok.map(|c| c.provider[0].encoding()).ok().flatten(),
            Some(Encoding::O200kBase)
        );
        let err = SimConfig::from_toml("[[provider]]\nname = \"p\"\ntokenizer = \"gpt2\"\n")
            .and_then(SimConfig::validated)
            .map(|_| ())
            .map_or_else(|e| e.to_string(), |()| String::new());
        assert!(err.contains("tokenizer") && err.contains("gpt2"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = SimConfig::from_toml("[[provider]]\nname = \"p\"\njitter = 1.5\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("jitter") && err.contains("1.5"), "{err}");
        let err = SimConfig::from_toml("[[provider]]\nrpm = 3\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("rpm"), "{err}");
        let err =
            SimConfig::from_json(r#"{"provider": [{"name": "a", "tokens_per_second": "fast"}]}"#)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
        assert!(err.contains("tokens_per_second"), "{err}");
        let err = SimConfig::from_json(r#"{"provider": [{"name": "a"}, {"name": "a"}]}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unique"), "{err}");
        let err = SimConfig::from_json(
            r#"{"provider": [{"faults": [{"start": 5, "end": 2, "kind": "down"}]}]}"#,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("faults[0].end"), "{err}");
    }

    #[test]
    fn empty_config_gives_one_default_provider() {
        let config = SimConfig::from_json("{}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.provider.len(), 1);
        assert_eq!(config.provider[0].name, "default");
    }
}
