//! The host's configuration, validated before anything starts: where its own database is, which
//! internal-mcp it calls, the key it signs internal-mcp credentials with, and the limits on every
//! MCP call. Secrets are wrapped so that they never print.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use crate::error::Error;

/// The issuer (`iss`) of the credentials the host mints; internal-mcp trusts it by default.
pub const ISSUER: &str = "internal-host";

#[derive(Debug, Clone)]
pub struct Config {
    /// The host's own login (role `internal_host`); its search path is set to the host's schema.
    pub database: PgConnectOptions,
    /// internal-mcp's unified endpoint, e.g. `http://127.0.0.1:8091/mcp`.
    pub internal_mcp_url: String,
    /// The HS256 key internal-mcp verifies credentials with.
    pub credential_key: CredentialKey,
    pub mcp_limits: McpLimits,
}

/// Limits on every MCP call the host makes.
#[derive(Debug, Clone, Copy)]
pub struct McpLimits {
    /// A call (or the connection set-up) that takes longer is cancelled and reported as a
    /// transport failure.
    pub call_timeout: Duration,
    /// Longer results are cut before they enter the model's context (the full text is kept).
    pub max_result_chars: usize,
    /// How long a minted credential lives; internal-mcp refuses more than 600 seconds.
    pub credential_lifetime: Duration,
}

/// The credential signing key: at least 32 bytes, never printed.
#[derive(Clone)]
pub struct CredentialKey(Arc<[u8]>);

impl McpLimits {
    pub const DEFAULT: McpLimits = McpLimits {
        call_timeout: Duration::from_secs(30),
        max_result_chars: 16_000,
        credential_lifetime: Duration::from_secs(120),
    };
}

impl Config {
    pub fn new(
        database: PgConnectOptions,
        internal_mcp_url: String,
        credential_key: CredentialKey,
    ) -> Self {
        Self {
            database,
            internal_mcp_url,
            credential_key,
            mcp_limits: McpLimits::DEFAULT,
        }
    }

    /// Refuses values that would make the host unsafe or useless.
    pub fn validate(&self) -> Result<(), Error> {
        let url = &self.internal_mcp_url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Startup(format!(
                "the internal-mcp URL must be http:// or https://, not {url:?}"
            )));
        }
        let limits = &self.mcp_limits;
        if limits.call_timeout.is_zero() || limits.call_timeout > Duration::from_secs(600) {
            return Err(Error::Startup(
                "the MCP call timeout must be between 1 ms and 600 s".into(),
            ));
        }
        if !(1_000..=1_000_000).contains(&limits.max_result_chars) {
            return Err(Error::Startup(
                "the result cap must be between 1,000 and 1,000,000 characters".into(),
            ));
        }
        let lifetime = limits.credential_lifetime.as_secs();
        if !(10..=600).contains(&lifetime) {
            return Err(Error::Startup(
                "the credential lifetime must be between 10 and 600 seconds".into(),
            ));
        }
        Ok(())
    }
}

impl CredentialKey {
    /// Shorter keys make HS256 guessable; they are refused.
    pub const MINIMUM_BYTES: usize = 32;

    pub fn new(bytes: Vec<u8>) -> Result<Self, Error> {
        if bytes.len() < Self::MINIMUM_BYTES {
            return Err(Error::Startup(format!(
                "the credential signing key has {} bytes; at least {} are required",
                bytes.len(),
                Self::MINIMUM_BYTES
            )));
        }
        Ok(Self(bytes.into()))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CredentialKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("CredentialKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(
            PgConnectOptions::new(),
            "http://127.0.0.1:8091/mcp".into(),
            CredentialKey::new(vec![7; 32]).expect("a key"),
        )
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(CredentialKey::new(vec![7; 31]).is_err());
    }

    #[test]
    fn the_key_never_prints() {
        let printed = format!("{:?}", config());
        assert!(printed.contains("CredentialKey(..)"), "{printed}");
        assert!(!printed.contains("[7, 7"), "{printed}");
    }

    #[test]
    fn unsafe_values_are_refused() {
        let check = |change: fn(&mut Config)| {
            let mut config = config();
            change(&mut config);
            config.validate()
        };
        assert!(check(|_| {}).is_ok());
        assert!(check(|c| c.internal_mcp_url = "ftp://x/mcp".into()).is_err());
        assert!(check(|c| c.mcp_limits.call_timeout = Duration::ZERO).is_err());
        assert!(check(|c| c.mcp_limits.max_result_chars = 10).is_err());
        assert!(check(|c| c.mcp_limits.credential_lifetime = Duration::from_secs(601)).is_err());
    }
}
