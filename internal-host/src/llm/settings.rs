//! Which model answers and how to reach it: command-line flags with environment fallbacks, to be
//! flattened into the host's command line, checked before anything starts, and turned into a
//! [`Provider`]. The API key comes only from the environment or a file, never from a flag, and
//! never prints.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::anthropic::Anthropic;
use super::http::{ApiKey, Timeouts};
use super::openai::{OpenAiCompatible, ToolMode};
use super::{ModelInfo, Provider};
use crate::error::Error;

/// The environment variable that may hold the API key itself.
pub const API_KEY_ENV: &str = "INTERNAL_HOST_LLM_API_KEY";

/// The wire format the model server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderKind {
    /// Chat Completions: OpenAI, Ollama, vLLM, LM Studio, llama.cpp's llama-server.
    OpenaiCompatible,
    /// Anthropic Messages.
    Anthropic,
}

/// The language-model settings of the host.
#[derive(Debug, Clone, clap::Args)]
pub struct LlmSettings {
    /// The wire format of the model server.
    #[arg(
        long = "llm-provider",
        env = "INTERNAL_HOST_LLM_PROVIDER",
        value_enum,
        default_value_t = ProviderKind::OpenaiCompatible
    )]
    pub provider: ProviderKind,
    /// The server's base URL [default: https://api.openai.com/v1, or https://api.anthropic.com].
    #[arg(long = "llm-base-url", env = "INTERNAL_HOST_LLM_BASE_URL")]
    pub base_url: Option<String>,
    /// The model's name, as the server knows it.
    #[arg(long = "llm-model", env = "INTERNAL_HOST_LLM_MODEL")]
    pub model: Option<String>,
    /// A file holding the API key (or set INTERNAL_HOST_LLM_API_KEY).
    #[arg(long = "llm-api-key-file", env = "INTERNAL_HOST_LLM_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// The key from INTERNAL_HOST_LLM_API_KEY, read when the command line is parsed.
    /// Set with [`LlmSettings::with_api_key`].
    #[arg(skip = Secret::from_environment(API_KEY_ENV))]
    pub api_key: Option<Secret>,
    /// The model's context window in tokens [default: 8192, or 200000 for Anthropic].
    #[arg(long = "llm-context-window", env = "INTERNAL_HOST_LLM_CONTEXT_WINDOW")]
    pub context_window: Option<u32>,
    /// How tools are offered: the server's native tool calls, or a JSON-schema-constrained reply
    /// for weak local models.
    #[arg(
        long = "llm-tool-mode",
        env = "INTERNAL_HOST_LLM_TOOL_MODE",
        value_enum,
        default_value_t = ToolMode::Native
    )]
    pub tool_mode: ToolMode,
    /// A small local model answers (the page says its answers are weak).
    #[arg(
        long = "llm-local",
        env = "INTERNAL_HOST_LLM_LOCAL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub local: bool,
    /// The longest wait for a connection to the model server.
    #[arg(
        long = "llm-connect-timeout-seconds",
        env = "INTERNAL_HOST_LLM_CONNECT_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub connect_timeout_seconds: u64,
    /// The longest silence of the model server (before its first byte, and between bytes).
    #[arg(
        long = "llm-idle-timeout-seconds",
        env = "INTERNAL_HOST_LLM_IDLE_TIMEOUT_SECONDS",
        default_value_t = 120
    )]
    pub idle_timeout_seconds: u64,
}

/// A secret as given, checked by [`LlmSettings::validate`]; never printed.
#[derive(Clone)]
pub struct Secret(String);

impl LlmSettings {
    /// An OpenAI-compatible server at `base_url` (e.g. `http://127.0.0.1:8080/v1`), no key, the
    /// other settings at their defaults. Reads no environment.
    pub fn openai_compatible(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            provider: ProviderKind::OpenaiCompatible,
            base_url: Some(base_url.into()),
            model: Some(model.into()),
            api_key_file: None,
            api_key: None,
            context_window: None,
            tool_mode: ToolMode::Native,
            local: false,
            connect_timeout_seconds: Timeouts::DEFAULT.connect.as_secs(),
            idle_timeout_seconds: Timeouts::DEFAULT.idle.as_secs(),
        }
    }

    /// An Anthropic server at `base_url` (e.g. `https://api.anthropic.com`), no key. Reads no
    /// environment.
    pub fn anthropic(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            provider: ProviderKind::Anthropic,
            ..Self::openai_compatible(base_url, model)
        }
    }

    /// The same settings with `key` as the API key.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Secret(key.into()));
        self
    }

    /// Whether a model is named at all (without one there is no assistant to build).
    pub fn is_configured(&self) -> bool {
        self.model.is_some()
    }

    /// The base URL, or the provider's public endpoint.
    pub fn base_url(&self) -> &str {
        match (&self.base_url, self.provider) {
            (Some(url), _) => url,
            (None, ProviderKind::OpenaiCompatible) => "https://api.openai.com/v1",
            (None, ProviderKind::Anthropic) => "https://api.anthropic.com",
        }
    }

    /// The context window, or the provider's usual one.
    pub fn context_window(&self) -> u32 {
        match (self.context_window, self.provider) {
            (Some(window), _) => window,
            (None, ProviderKind::OpenaiCompatible) => 8_192,
            (None, ProviderKind::Anthropic) => 200_000,
        }
    }

    /// Refuses settings that would be unsafe (a key sent in the clear, a key in the URL) or
    /// useless (no model, a hosted API without a key, timeouts of zero).
    pub fn validate(&self) -> Result<(), Error> {
        let startup = |message: String| Err(Error::Startup(message));
        let Some(model) = self.model.as_deref() else {
            return startup("no language model: set INTERNAL_HOST_LLM_MODEL".into());
        };
        if model.trim().is_empty() || model.len() > 200 || model.chars().any(char::is_control) {
            return startup(
                "the model name must be 1 to 200 characters without control characters".into(),
            );
        }
        let base_url = self.base_url();
        let Ok(url) = reqwest::Url::parse(base_url) else {
            return startup(format!("the model server's URL {base_url:?} is not a URL"));
        };
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return startup(format!(
                "the model server's URL must be http:// or https:// with a host, not {base_url:?}"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // Not quoted: the URL holds a secret.
            return startup(
                "the model server's URL must not hold credentials: give the key in \
                 INTERNAL_HOST_LLM_API_KEY or INTERNAL_HOST_LLM_API_KEY_FILE"
                    .into(),
            );
        }
        if url.query().is_some() || url.fragment().is_some() {
            return startup(
                "the model server's URL must not have a query or a fragment (it may hold a key)"
                    .into(),
            );
        }
        if self.api_key.is_some() && self.api_key_file.is_some() {
            return startup(format!(
                "give the API key either in a file or in {API_KEY_ENV}, not both"
            ));
        }
        if let Some(Secret(key)) = &self.api_key {
            ApiKey::new(key.clone())
                .map_err(|problem| Error::Startup(format!("{problem} ({API_KEY_ENV})")))?;
        }
        let has_key = self.api_key.is_some() || self.api_key_file.is_some();
        let host = url.host_str().unwrap_or_default();
        if has_key && url.scheme() == "http" && !is_loopback(host) {
            return startup(format!(
                "the API key would travel unencrypted to {host}: use https://, or no key"
            ));
        }
        if !has_key && matches!(host, "api.openai.com" | "api.anthropic.com") {
            return startup(format!(
                "{host} needs an API key: set {API_KEY_ENV} or INTERNAL_HOST_LLM_API_KEY_FILE"
            ));
        }
        if self.provider == ProviderKind::Anthropic && self.tool_mode == ToolMode::JsonSchema {
            return startup(
                "the json-schema tool mode is for OpenAI-compatible servers only".into(),
            );
        }
        if let Some(window) = self.context_window
            && !(1_024..=10_000_000).contains(&window)
        {
            return startup(
                "the context window must be between 1,024 and 10,000,000 tokens".into(),
            );
        }
        if !(1..=300).contains(&self.connect_timeout_seconds) {
            return startup("the model server's connect timeout must be 1 to 300 s".into());
        }
        if !(1..=3_600).contains(&self.idle_timeout_seconds) {
            return startup("the model server's idle timeout must be 1 to 3,600 s".into());
        }
        Ok(())
    }

    /// The provider these settings describe, once [`LlmSettings::validate`] passed (it is called
    /// here) and the key file was read.
    pub fn build(&self) -> Result<Arc<dyn Provider>, Error> {
        self.validate()?;
        let api_key = self.api_key()?;
        let model = ModelInfo {
            provider: String::new(),
            name: self.model.clone().unwrap_or_default(),
            context_window: self.context_window(),
            local: self.local,
        };
        let timeouts = Timeouts {
            connect: Duration::from_secs(self.connect_timeout_seconds),
            idle: Duration::from_secs(self.idle_timeout_seconds),
        };
        let base_url = self.base_url().trim_end_matches('/').to_owned();
        let provider: Arc<dyn Provider> = match self.provider {
            ProviderKind::OpenaiCompatible => Arc::new(
                OpenAiCompatible::new(base_url, model, api_key, self.tool_mode, timeouts)
                    .map_err(|error| Error::Startup(error.to_string()))?,
            ),
            ProviderKind::Anthropic => Arc::new(
                Anthropic::new(base_url, model, api_key, timeouts)
                    .map_err(|error| Error::Startup(error.to_string()))?,
            ),
        };
        Ok(provider)
    }

    fn api_key(&self) -> Result<Option<ApiKey>, Error> {
        let key = match (&self.api_key, &self.api_key_file) {
            (Some(Secret(key)), _) => key.clone(),
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|error| {
                Error::Startup(format!(
                    "cannot read the API key file {}: {error}",
                    path.display()
                ))
            })?,
            (None, None) => return Ok(None),
        };
        ApiKey::new(key)
            .map(Some)
            .map_err(|problem| Error::Startup(format!("{problem} (the model server's API key)")))
    }
}

impl Secret {
    /// The variable's value; an empty one counts as unset.
    fn from_environment(name: &str) -> Option<Secret> {
        let value = std::env::var_os(name)?;
        let value = value.to_string_lossy().into_owned();
        (!value.trim().is_empty()).then_some(Secret(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("..")
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        llm: LlmSettings,
    }

    fn parse(arguments: &[&str]) -> LlmSettings {
        let mut all = vec!["internal-host"];
        all.extend_from_slice(arguments);
        Command::try_parse_from(all).expect("parses").llm
    }

    #[test]
    fn flags_parse() {
        let settings = parse(&[
            "--llm-provider",
            "anthropic",
            "--llm-model",
            "claude",
            "--llm-local",
            "--llm-context-window",
            "4096",
        ]);
        assert_eq!(settings.provider, ProviderKind::Anthropic);
        assert_eq!(settings.base_url(), "https://api.anthropic.com");
        assert!(settings.local);
        assert_eq!(settings.context_window(), 4096);
        let settings = parse(&["--llm-tool-mode", "json-schema", "--llm-local=false"]);
        assert_eq!(settings.tool_mode, ToolMode::JsonSchema);
        assert!(!settings.local);
        assert!(!settings.is_configured());
    }

    #[test]
    fn the_key_never_prints() {
        let settings =
            LlmSettings::openai_compatible("https://h/v1", "m").with_api_key("sk-very-secret");
        let printed = format!("{settings:?}");
        assert!(printed.contains("api_key: Some(..)"), "{printed}");
        assert!(!printed.contains("sk-very-secret"), "{printed}");
        let provider = settings.build().expect("builds");
        let printed = format!("{provider:?}");
        assert!(printed.contains("ApiKey(..)"), "{printed}");
        assert!(!printed.contains("sk-very-secret"), "{printed}");
    }

    #[test]
    fn unsafe_and_useless_values_are_refused() {
        let local = || LlmSettings::openai_compatible("http://127.0.0.1:8080/v1", "gemma");
        let check = |settings: LlmSettings, expected_in_message: &str| {
            let error = settings.validate().expect_err("refused").to_string();
            assert!(error.contains(expected_in_message), "{error}");
            assert!(!error.contains("secret"), "{error}");
        };
        assert!(local().validate().is_ok());
        assert!(local().with_api_key("k").validate().is_ok());
        check(
            LlmSettings::openai_compatible("http://ollama:11434/v1", "m").with_api_key("secret"),
            "unencrypted",
        );
        check(
            LlmSettings::openai_compatible("https://user:secret@h/v1", "m"),
            "credentials",
        );
        check(
            LlmSettings::openai_compatible("https://h/v1?key=secret", "m"),
            "query",
        );
        check(LlmSettings::openai_compatible("ftp://h", "m"), "http");
        check(
            LlmSettings::openai_compatible("not a url", "m"),
            "not a URL",
        );
        check(
            LlmSettings::openai_compatible("https://api.openai.com/v1", "gpt"),
            "needs an API key",
        );
        check(
            LlmSettings {
                model: None,
                ..local()
            },
            "INTERNAL_HOST_LLM_MODEL",
        );
        check(local().with_api_key("se\ncret"), "control");
        check(
            LlmSettings {
                api_key_file: Some("/k".into()),
                ..local().with_api_key("secret")
            },
            "not both",
        );
        check(
            LlmSettings {
                tool_mode: ToolMode::JsonSchema,
                ..LlmSettings::anthropic("http://127.0.0.1:1", "m")
            },
            "json-schema",
        );
        check(
            LlmSettings {
                context_window: Some(10),
                ..local()
            },
            "context window",
        );
        check(
            LlmSettings {
                idle_timeout_seconds: 0,
                ..local()
            },
            "idle timeout",
        );
        check(
            LlmSettings {
                connect_timeout_seconds: 0,
                ..local()
            },
            "connect timeout",
        );
    }

    #[test]
    fn a_missing_key_file_is_a_clear_error() {
        let settings = LlmSettings {
            api_key_file: Some("/nonexistent/llm-key".into()),
            ..LlmSettings::openai_compatible("https://h/v1", "m")
        };
        let error = settings.build().expect_err("no file").to_string();
        assert!(error.contains("cannot read the API key file"), "{error}");
    }
}
