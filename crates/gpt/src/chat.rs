//! Chat templates: how a conversation becomes the one string a chat model was trained on.
//!
//! Chat models are fine-tuned on conversations rendered with markers around each turn. SmolLM2 uses
//! ChatML:
//!
//! ```text
//! <|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n
//! <|im_start|>user\nWhat is LoRA?<|im_end|>\n
//! <|im_start|>assistant\n          <- the generation prompt: the model writes the answer, then <|im_end|>
//! ```
//!
//! Models ship their template as Jinja source (GGUF `tokenizer.chat_template`, or `chat_template` in a
//! folder's `tokenizer_config.json`). It is rendered here with `minijinja` the way transformers renders it
//! with Jinja2 (`trim_blocks`, `lstrip_blocks`), so the text, and with it the token ids, are the same.

use serde::{Deserialize, Serialize};

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// ChatML without a default system turn: the template of models that ship none.
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + \
                          message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt \
                          %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A compiled chat template.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    source: String,
}

impl ChatTemplate {
    /// Compiles Jinja `source`; a syntax error names the line.
    pub fn new(source: &str) -> Result<Self, String> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Templates call raise_exception("...") to refuse a conversation they cannot render.
        env.add_function(
            "raise_exception",
            |message: String| -> Result<(), minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| format!("the chat template does not compile: {e}"))?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
        })
    }

    /// The Jinja source the template was compiled from (what a saved folder's tokenizer_config.json keeps).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The conversation as text; with `add_generation_prompt`, followed by the opening of the assistant's
    /// turn, so that the model's continuation is its answer.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let template = self.env.get_template("chat").expect("added in new");
        template
            .render(minijinja::context! { messages => messages, add_generation_prompt => add_generation_prompt })
            .map_err(|e| format!("the chat template cannot render this conversation: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_with_generation_prompt() {
        let t = ChatTemplate::new(CHATML).unwrap();
        let text = t.render(&[Message::new("user", "Hi")], true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn template_errors_are_messages() {
        assert!(ChatTemplate::new("{% for %}").is_err());
        let t = ChatTemplate::new("{{ raise_exception('no system turns') }}").unwrap();
        let err = t.render(&[], false).unwrap_err();
        assert!(err.contains("no system turns"), "{err}");
    }
}
