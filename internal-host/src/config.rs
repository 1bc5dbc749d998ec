//! The host's configuration, validated before anything starts: where its own database is, which
//! internal-mcp it calls, the key it signs internal-mcp credentials with, the limits on every
//! MCP call, and the web side (its public URL, sessions, and the product's OAuth server users sign
//! in with). Secrets are wrapped so that they never print.

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
    pub web: WebConfig,
}

/// The web pages: where browsers reach the host, how long sessions live, and sign-in.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The URL browsers use, without a trailing slash, e.g. `http://127.0.0.1:8092`. Cookies are
    /// `Secure` when it is `https`; the OAuth redirect URI is `<public url>/auth/callback`.
    pub public_url: String,
    /// A session ends this long after sign-in, whatever happens.
    pub session_lifetime: Duration,
    /// A page load re-reads the user's role when it was last read longer ago than this (a turn's
    /// start always re-reads it).
    pub role_recheck_after: Duration,
    /// Longer questions are refused with 413.
    pub max_question_chars: usize,
    /// The product's OAuth server; without it nobody can sign in (every page says so).
    pub sign_in: Option<SignInConfig>,
}

/// The host as a confidential client of the product's OAuth authorization server.
#[derive(Debug, Clone)]
pub struct SignInConfig {
    /// The authorization server's issuer, e.g. `http://127.0.0.1:8080` (demo-backend).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: ClientSecret,
    /// How long start-up keeps trying to read the issuer's metadata before it gives up.
    pub discovery_timeout: Duration,
}

/// The OAuth client secret, never printed.
#[derive(Clone)]
pub struct ClientSecret(Arc<str>);

/// Limits on every MCP call the host makes.
#[derive(Debug, Clone, Copy)]
pub struct McpLimits {
    /// A call that takes longer is cancelled and reported as a transport failure.
    pub call_timeout: Duration,
    /// Connecting to a server, and then listing its tools, each get this long (or the call
    /// timeout, if shorter): a server that accepts and never answers is a notice within seconds,
    /// while the turn goes on with the others.
    pub connect_timeout: Duration,
    /// Longer results are cut before they enter the model's context (the full text is kept).
    pub max_result_chars: usize,
    /// How long a minted credential lives; internal-mcp refuses more than 600 seconds.
    pub credential_lifetime: Duration,
}

/// The key the host signs internal-mcp credentials with. Never printed.
#[derive(Clone)]
pub enum CredentialKey {
    /// An Ed25519 private key (EdDSA, PKCS#8 DER); internal-mcp holds only its public half, under
    /// `kid`, so internal-mcp cannot mint what the host mints. What `ops/run` uses.
    Ed25519 { kid: String, pkcs8_der: Arc<[u8]> },
    /// The HS256 key shared with internal-mcp (at least 32 bytes): simple, but whoever can verify
    /// can also mint.
    Shared(Arc<[u8]>),
}

impl McpLimits {
    pub const DEFAULT: McpLimits = McpLimits {
        call_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        max_result_chars: 16_000,
        credential_lifetime: Duration::from_secs(120),
    };

    /// The bound on connecting, and on listing tools: the connect timeout, or the call timeout if
    /// that is shorter (a server configured with a short timeout keeps it).
    pub fn set_up_timeout(&self) -> Duration {
        self.connect_timeout.min(self.call_timeout)
    }
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
            web: WebConfig::default(),
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
        if limits.connect_timeout.is_zero() || limits.connect_timeout > Duration::from_secs(600) {
            return Err(Error::Startup(
                "the MCP connect timeout must be between 1 ms and 600 s".into(),
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
        self.web.validate()
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8092".into(),
            session_lifetime: Duration::from_secs(12 * 3600),
            role_recheck_after: Duration::from_secs(5 * 60),
            max_question_chars: 8_000,
            sign_in: None,
        }
    }
}

impl WebConfig {
    fn validate(&self) -> Result<(), Error> {
        check_origin("the public URL", &self.public_url)?;
        if self.session_lifetime < Duration::from_secs(60)
            || self.session_lifetime > Duration::from_secs(30 * 24 * 3600)
        {
            return Err(Error::Startup(
                "the session lifetime must be between one minute and 30 days".into(),
            ));
        }
        if self.role_recheck_after.is_zero() || self.role_recheck_after > Duration::from_secs(3600)
        {
            return Err(Error::Startup(
                "the role must be re-read at least once an hour".into(),
            ));
        }
        if !(100..=100_000).contains(&self.max_question_chars) {
            return Err(Error::Startup(
                "the question limit must be between 100 and 100,000 characters".into(),
            ));
        }
        if let Some(sign_in) = &self.sign_in {
            check_origin("the OAuth issuer", &sign_in.issuer)?;
            if sign_in.client_id.is_empty() {
                return Err(Error::Startup("the OAuth client id is empty".into()));
            }
            if sign_in.client_secret.expose().len() < 16 {
                return Err(Error::Startup(
                    "the OAuth client secret must have at least 16 characters".into(),
                ));
            }
        }
        Ok(())
    }

    /// Whether cookies get the `Secure` attribute.
    pub fn is_https(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// Where the authorization server sends the browser back.
    pub fn redirect_uri(&self) -> String {
        format!("{}/auth/callback", self.public_url)
    }
}

/// `http(s)://host[:port]` without path, query or trailing slash.
fn check_origin(what: &str, value: &str) -> Result<(), Error> {
    let parsed = url::Url::parse(value)
        .map_err(|_| Error::Startup(format!("{what} must be a URL, not {value:?}")))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || parsed.path() != "/"
        || parsed.query().is_some()
        || value.ends_with('/')
    {
        return Err(Error::Startup(format!(
            "{what} must be http(s)://host[:port] without a path or trailing slash, not {value:?}"
        )));
    }
    Ok(())
}

impl ClientSecret {
    pub fn new(secret: String) -> Self {
        Self(secret.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ClientSecret(..)")
    }
}

impl CredentialKey {
    /// Shorter keys make HS256 guessable; they are refused.
    pub const MINIMUM_BYTES: usize = 32;

    /// An Ed25519 private key from its PKCS#8 PEM file (as `internal-mcp keygen` or `openssl
    /// genpkey -algorithm ed25519` write it), published to internal-mcp under `kid`. Refused
    /// unless it signs.
    pub fn ed25519_from_pem(kid: &str, pem: &str) -> Result<Self, Error> {
        use base64::Engine as _;
        let body: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|line| *line != "-----BEGIN PRIVATE KEY-----")
            .skip(1)
            .take_while(|line| *line != "-----END PRIVATE KEY-----")
            .collect();
        let pkcs8_der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|_| Error::Startup("the private key file is not a PEM PRIVATE KEY".into()))?;
        if kid.trim().is_empty() {
            return Err(Error::Startup(
                "the private key needs a key id (kid)".into(),
            ));
        }
        let key = Self::Ed25519 {
            kid: kid.to_owned(),
            pkcs8_der: pkcs8_der.into(),
        };
        crate::credentials::CredentialMinter::new(&key, Duration::from_secs(60))
            .check_key()
            .map_err(|_| {
                Error::Startup("the private key file does not hold an Ed25519 key (PKCS#8)".into())
            })?;
        Ok(key)
    }

    /// A shared HS256 key.
    pub fn new(bytes: Vec<u8>) -> Result<Self, Error> {
        if bytes.len() < Self::MINIMUM_BYTES {
            return Err(Error::Startup(format!(
                "the credential signing key has {} bytes; at least {} are required",
                bytes.len(),
                Self::MINIMUM_BYTES
            )));
        }
        Ok(Self::Shared(bytes.into()))
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
        assert!(check(|c| c.mcp_limits.connect_timeout = Duration::ZERO).is_err());
        assert!(check(|c| c.mcp_limits.max_result_chars = 10).is_err());
        assert!(check(|c| c.mcp_limits.credential_lifetime = Duration::from_secs(601)).is_err());
        assert!(check(|c| c.web.public_url = "http://127.0.0.1:8092/".into()).is_err());
        assert!(check(|c| c.web.public_url = "javascript:alert(1)".into()).is_err());
        assert!(check(|c| c.web.max_question_chars = 0).is_err());
        assert!(check(|c| c.web.sign_in = Some(sign_in("short"))).is_err());
        assert!(check(|c| c.web.sign_in = Some(sign_in("a long enough client secret"))).is_ok());
    }

    #[test]
    fn connecting_gets_the_shorter_of_the_connect_and_call_timeouts() {
        let limits = McpLimits::DEFAULT;
        assert_eq!(limits.set_up_timeout(), Duration::from_secs(5));
        let short_calls = McpLimits {
            call_timeout: Duration::from_secs(2),
            ..limits
        };
        assert_eq!(short_calls.set_up_timeout(), Duration::from_secs(2));
    }

    fn sign_in(secret: &str) -> SignInConfig {
        SignInConfig {
            issuer: "http://127.0.0.1:8080".into(),
            client_id: "internal-host".into(),
            client_secret: ClientSecret::new(secret.into()),
            discovery_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_client_secret_never_prints() {
        let mut config = config();
        config.web.sign_in = Some(sign_in("a long enough client secret"));
        let printed = format!("{config:?}");
        assert!(!printed.contains("a long enough"), "{printed}");
    }
}
