//! Splitting a LangChain prompt for the semantic cache: the text of the last user turn (the
//! only part compared by similarity) and a scope key over everything else, so a semantic hit
//! is only possible between prompts that agree on model, parameters, system prompt, earlier
//! turns, tools and namespace.

use super::key::{cache_key, CacheKey, ReadPrompt};

/// A prompt split for the semantic cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scoped {
    /// Exact key of the whole prompt (the same as the exact cache's key).
    pub exact: CacheKey,
    /// Key of everything but the last user turn's text.
    pub scope: CacheKey,
    /// The text compared by similarity.
    pub text: String,
}

const PLAIN_SCOPE: &str = "\u{0}langscale:plain-prompt";
const CHAT_SCOPE: &str = "\u{0}langscale:chat-scope";

/// Split `prompt` (LangChain `dumps(messages)` JSON, or a plain string prompt). The prompt is
/// parsed once, by the exact cache's JSON reader (`key.rs`), for both keys and the text.
pub fn split_prompt(namespace: &str, llm_string: &str, prompt: &str) -> Scoped {
    let read = ReadPrompt::new(prompt);
    let exact = read.key(namespace, llm_string);
    if let Some(turn) = read.last_human() {
        let scope = read.scope_key(namespace, &format!("{llm_string}{CHAT_SCOPE}"), &turn);
        return Scoped {
            exact,
            scope,
            text: turn.text,
        };
    }
    if read.is_message_list() {
        // A chat prompt with no user turn has nothing to compare by similarity: it gets a
        // scope of its own, so only the very same prompt can answer it.
        return Scoped {
            exact,
            scope: exact,
            text: prompt.to_owned(),
        };
    }
    let scope = cache_key(namespace, &format!("{llm_string}{PLAIN_SCOPE}"), "");
    Scoped {
        exact,
        scope,
        text: prompt.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn human(text: &str) -> String {
        format!(
            r#"{{"lc":1,"type":"constructor","id":["langchain","schema","messages","HumanMessage"],"kwargs":{{"content":{},"type":"human"}}}}"#,
            serde_json::Value::String(text.to_owned())
        )
    }

    fn system(text: &str) -> String {
        format!(
            r#"{{"lc":1,"type":"constructor","id":["langchain","schema","messages","SystemMessage"],"kwargs":{{"content":"{text}","type":"system"}}}}"#
        )
    }

    #[test]
    fn last_user_turn_is_the_text_and_the_rest_is_the_scope() {
        let a = split_prompt(
            "",
            "m",
            &format!("[{},{}]", system("be brief"), human("Weather in Paris?")),
        );
        let b = split_prompt(
            "",
            "m",
            &format!("[{},{}]", system("be brief"), human("weather in paris")),
        );
        assert_eq!(a.text, "Weather in Paris?");
        assert_eq!(a.scope, b.scope);
        assert_ne!(a.exact, b.exact);
    }

    #[test]
    fn system_prompt_earlier_turns_model_and_namespace_change_the_scope() {
        let base = split_prompt("", "m", &format!("[{},{}]", system("be brief"), human("q")));
        let other_system =
            split_prompt("", "m", &format!("[{},{}]", system("be long"), human("q")));
        let earlier = split_prompt(
            "",
            "m",
            &format!("[{},{},{}]", system("be brief"), human("hi"), human("q")),
        );
        let model = split_prompt(
            "",
            "m2",
            &format!("[{},{}]", system("be brief"), human("q")),
        );
        let namespace = split_prompt(
            "v2",
            "m",
            &format!("[{},{}]", system("be brief"), human("q")),
        );
        for other in [other_system, earlier, model, namespace] {
            assert_ne!(base.scope, other.scope);
        }
    }

    #[test]
    fn text_blocks_are_joined_and_other_blocks_stay_in_scope() {
        let with_image = |url: &str| {
            format!(
                r#"[{{"lc":1,"type":"constructor","id":["langchain","schema","messages","HumanMessage"],"kwargs":{{"type":"human","content":[{{"type":"text","text":"what is this?"}},{{"type":"image_url","image_url":{{"url":"{url}"}}}}]}}}}]"#
            )
        };
        let a = split_prompt("", "m", &with_image("a.png"));
        let b = split_prompt("", "m", &with_image("b.png"));
        assert_eq!(a.text, "what is this?");
        assert_ne!(a.scope, b.scope);
    }

    #[test]
    fn plain_prompts_are_matched_whole_within_the_llm_string() {
        let a = split_prompt("", "m", "Tell me a joke");
        let b = split_prompt("", "m", "tell me a joke please");
        let c = split_prompt("", "other", "Tell me a joke");
        assert_eq!(a.text, "Tell me a joke");
        assert_eq!(a.scope, b.scope);
        assert_ne!(a.scope, c.scope);
        let garbage = split_prompt("", "m", "[not json");
        assert_eq!(garbage.text, "[not json");
        assert_eq!(garbage.scope, a.scope);
    }

    #[test]
    fn chat_prompts_without_a_user_turn_are_exact_only() {
        let a = split_prompt("", "m", &format!("[{}]", system("You are a cat.")));
        let b = split_prompt("", "m", &format!("[{}]", system("You are a dog.")));
        assert_ne!(a.scope, b.scope);
        assert_eq!(a.scope, a.exact);
    }
}
