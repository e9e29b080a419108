//! What the router knows about each deployment (its config), and about each request (enough to
//! route it: size, tools, depth, an optional complexity hint).

use std::time::Duration;

use super::RouteError;

/// The tokens one call used, as providers report them: `input` counts every prompt token,
/// those read from (`cache_read`) or written to (`cache_write`) the provider's prompt cache
/// included (LangChain's `usage_metadata` and OpenAI's `usage` both count them so).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Usage {
    /// Input and output tokens, nothing from a prompt cache.
    pub fn new(input: u64, output: u64) -> Self {
        Self {
            input,
            output,
            ..Self::default()
        }
    }

    /// Input plus output tokens.
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }

    /// The same with the cached parts within `input` (a provider's odd report never makes
    /// a negative count of uncached tokens).
    pub fn clamped(&self) -> Self {
        let cache_read = self.cache_read.min(self.input);
        let cache_write = self.cache_write.min(self.input - cache_read);
        Self {
            cache_read,
            cache_write,
            ..*self
        }
    }
}

/// One place a request can be sent: a chat model with its routing settings. The caller keeps
/// the model itself (and its rate limiter); the router refers to it by its index.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub name: String,
    /// Share of traffic under the weighted strategy (> 0).
    pub weight: f64,
    /// Lower is tried first by the priority strategy (and breaks ties in the others).
    pub priority: i32,
    /// Price per 1,000 input tokens, in any currency (>= 0).
    pub price_in: f64,
    /// Price per 1,000 output tokens.
    pub price_out: f64,
    /// Price per 1,000 input tokens read from the provider's prompt cache; `None`: `price_in`.
    pub price_cache_read: Option<f64>,
    /// Price per 1,000 input tokens written to the provider's prompt cache; `None`:
    /// `price_in`.
    pub price_cache_write: Option<f64>,
    /// Input + output tokens the model accepts; `None` if unknown.
    pub context_window: Option<u64>,
    pub tags: Vec<String>,
}

impl Deployment {
    /// A deployment with weight 1, priority 0, free, unknown context window, no tags.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            weight: 1.0,
            priority: 0,
            price_in: 0.0,
            price_out: 0.0,
            price_cache_read: None,
            price_cache_write: None,
            context_window: None,
            tags: Vec::new(),
        }
    }

    /// The price of a call with these token counts (no prompt cache involved).
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        self.charge(&Usage::new(input_tokens, output_tokens))
    }

    /// The price of a call with this usage: input tokens read from or written to the
    /// provider's prompt cache at their own prices where the deployment has them.
    pub fn charge(&self, usage: &Usage) -> f64 {
        let usage = usage.clamped();
        let plain = usage.input - usage.cache_read - usage.cache_write;
        // u64 -> f64 is exact below 2^53 tokens.
        (self.price_in * plain as f64
            + self.price_cache_read.unwrap_or(self.price_in) * usage.cache_read as f64
            + self.price_cache_write.unwrap_or(self.price_in) * usage.cache_write as f64
            + self.price_out * usage.output as f64)
            / 1000.0
    }

    /// Every setting in range, else an error naming the deployment and the setting.
    pub fn validate(&self) -> Result<(), RouteError> {
        let name = &self.name;
        if name.is_empty() {
            return Err(RouteError::Config(
                "a deployment name must not be empty".into(),
            ));
        }
        if !(self.weight.is_finite() && self.weight > 0.0) {
            return Err(RouteError::Config(format!(
                "deployment {name:?} has weight {}; it must be a finite number above 0",
                self.weight
            )));
        }
        for (field, price) in [
            ("price_in", self.price_in),
            ("price_out", self.price_out),
            ("price_cache_read", self.price_cache_read.unwrap_or(0.0)),
            ("price_cache_write", self.price_cache_write.unwrap_or(0.0)),
        ] {
            if !(price.is_finite() && price >= 0.0) {
                return Err(RouteError::Config(format!(
                    "deployment {name:?} has {field} {price}; it must be a finite number >= 0"
                )));
            }
        }
        if self.context_window == Some(0) {
            return Err(RouteError::Config(format!(
                "deployment {name:?} has context_window 0; leave it unset if unknown"
            )));
        }
        Ok(())
    }
}

/// What the router needs to know about one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestInfo {
    /// Estimated prompt tokens. Deployments whose context window is smaller are skipped
    /// (unless none is large enough), and the cost strategy prices it.
    pub estimated_input_tokens: u64,
    /// Expected completion tokens, for the cost strategy; `None` uses the router's default.
    pub expected_output_tokens: Option<u64>,
    /// Tools bound to the request.
    pub tools: usize,
    /// Messages in the conversation so far.
    pub turns: usize,
    /// A complexity score from the user's own callable; replaces the built-in heuristic
    /// (compared with the complexity strategy's threshold as is, so any scale works).
    pub complexity_hint: Option<f64>,
    /// Overall deadline for this request; `None` uses the router's.
    pub deadline: Option<Duration>,
    /// The tenant it is for: its waits for permits take the tenant's fair share.
    pub tenant: Option<std::sync::Arc<str>>,
}

impl RequestInfo {
    /// How hard the request looks, in `[0, 1]` for the built-in heuristic: half from length
    /// (saturating at 8,000 tokens), a quarter from tools (at 4), a quarter from conversation
    /// depth (at 10 turns). A finite `complexity_hint` wins.
    pub fn complexity(&self) -> f64 {
        if let Some(hint) = self.complexity_hint.filter(|h| h.is_finite()) {
            return hint;
        }
        // Precision loss in these conversions only matters far past the saturation points.
        let length = (self.estimated_input_tokens as f64 / 8000.0).min(1.0);
        let tools = (self.tools as f64 / 4.0).min(1.0);
        let turns = (self.turns as f64 / 10.0).min(1.0);
        0.5 * length + 0.25 * tools + 0.25 * turns
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_grows_with_length_tools_and_depth() {
        let simple = RequestInfo {
            estimated_input_tokens: 200,
            turns: 1,
            ..Default::default()
        };
        let agentic = RequestInfo {
            estimated_input_tokens: 3000,
            tools: 6,
            turns: 12,
            ..Default::default()
        };
        assert!(simple.complexity() < 0.1, "{}", simple.complexity());
        assert!(agentic.complexity() > 0.6, "{}", agentic.complexity());
        let huge = RequestInfo {
            estimated_input_tokens: u64::MAX,
            tools: usize::MAX,
            turns: usize::MAX,
            ..Default::default()
        };
        assert!((huge.complexity() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_finite_hint_replaces_the_heuristic() {
        let mut info = RequestInfo {
            complexity_hint: Some(7.5),
            ..Default::default()
        };
        assert_eq!(info.complexity(), 7.5);
        info.complexity_hint = Some(f64::NAN);
        assert_eq!(info.complexity(), 0.0);
    }

    #[test]
    fn cost_is_per_thousand_tokens() {
        let d = Deployment {
            price_in: 0.5,
            price_out: 1.5,
            ..Deployment::new("m")
        };
        assert!((d.cost(2000, 1000) - 2.5).abs() < 1e-12);
    }

    #[test]
    fn prompt_cache_tokens_are_charged_at_their_own_prices() {
        let usage = Usage {
            input: 1000,
            output: 100,
            cache_read: 600,
            cache_write: 200,
        };
        let plain = Deployment {
            price_in: 1.0,
            price_out: 4.0,
            ..Deployment::new("m")
        };
        // no cache prices: every input token at price_in
        assert!((plain.charge(&usage) - 1.4).abs() < 1e-12);
        let cached = Deployment {
            price_cache_read: Some(0.1),
            price_cache_write: Some(1.25),
            ..plain.clone()
        };
        // 200 plain + 600 read + 200 written + 100 out
        let want = (200.0 * 1.0 + 600.0 * 0.1 + 200.0 * 1.25 + 100.0 * 4.0) / 1000.0;
        assert!((cached.charge(&usage) - want).abs() < 1e-12);
        // cached counts past the input are held to it, never a negative plain count
        let odd = Usage {
            input: 100,
            output: 0,
            cache_read: 80,
            cache_write: 500,
        };
        assert_eq!(odd.clamped().cache_write, 20);
        assert!((cached.charge(&odd) - (80.0 * 0.1 + 20.0 * 1.25) / 1000.0).abs() < 1e-12);
        let bad = Deployment {
            price_cache_read: Some(f64::NAN),
            ..plain
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("price_cache_read"));
    }

    #[test]
    fn bad_values_are_named() {
        let err = Deployment {
            weight: 0.0,
            ..Deployment::new("gpt")
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"gpt\"") && err.contains("weight 0"), "{err}");
        let err = Deployment {
            price_out: f64::NAN,
            ..Deployment::new("gpt")
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("price_out NaN"), "{err}");
        assert!(Deployment::new("").validate().is_err());
        assert!(Deployment {
            context_window: Some(0),
            ..Deployment::new("x")
        }
        .validate()
        .is_err());
    }
}
