//! What internal-mcp runs with, as plain values: the database connections, the credential policy,
//! the limits on the SQL it runs and which endpoints it mounts. The command line (`cli`) builds a
//! [`Config`]; tests build one directly. Every value is checked before the server starts, and an
//! unsafe one stops it (fail closed).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use crate::error::Error;
use crate::keys::PublicKeySet;

/// The audience every credential must name.
pub const AUDIENCE: &str = "internal-mcp";

/// Issuers trusted unless configured otherwise: the product's assistant, and the `token` command.
pub const DEFAULT_TRUSTED_ISSUERS: [&str; 2] = ["internal-host", TOKEN_COMMAND_ISSUER];

/// The issuer the `internal-mcp token` command writes into the credentials it mints.
pub const TOKEN_COMMAND_ISSUER: &str = "internal-mcp-token";

/// The longest lifetime a credential may declare (`exp - iat`).
pub const MAX_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(600);

/// The largest request body the MCP endpoints read.
pub const MAX_REQUEST_BODY_BYTES: usize = 1024 * 1024;

/// Everything the server needs, injected.
#[derive(Clone)]
pub struct Config {
    /// The schema owner: domain-layer operations, the audit trail, confirmations, user look-ups.
    pub privileged_database: PgConnectOptions,
    /// The `internal_mcp_reader` login: every query that reads tenant data, the model's included.
    pub reader_database: PgConnectOptions,
    /// How many reader connections at most: each runs one query at a time.
    pub reader_connections: u32,
    /// Calls one user may have in flight at once; more are refused with when to retry.
    pub max_calls_per_caller: usize,
    /// Calls one organisation may have in flight at once: fewer than the reader connections, so
    /// other organisations always find one (the default, 3 of 8, leaves two free with two
    /// organisations at their limit).
    pub max_calls_per_organization: usize,
    pub credentials: CredentialPolicy,
    pub limits: Limits,
    /// The endpoints to mount; never empty.
    pub endpoints: Vec<Endpoint>,
    /// `Host` header values accepted (DNS-rebinding protection); loopback names by default.
    pub allowed_hosts: Vec<String>,
    /// How long a privileged operation's plan may wait for its confirmation.
    pub confirmation_lifetime: Duration,
    /// How long audit records are kept; older ones (and long-expired confirmations) are purged.
    pub audit_retention: Duration,
    /// Start even though the reader may connect to other databases on the server. Only for shared
    /// test servers, where every test's database is open to the cluster-wide reader role.
    pub allow_reader_in_other_databases: bool,
}

/// Which service credentials are accepted.
#[derive(Clone, Debug)]
pub struct CredentialPolicy {
    /// The shared HS256 key, when HS256 credentials are still accepted. Whoever holds it can mint.
    pub signing_key: Option<SigningKey>,
    /// Ed25519 public keys by `kid`: EdDSA credentials must name one of them in their header.
    pub public_keys: PublicKeySet,
    /// Credentials must name one of these as `iss`.
    pub trusted_issuers: Vec<String>,
    /// The longest lifetime (`exp - iat`) a credential may declare.
    pub max_lifetime: Duration,
    /// Tolerated clock difference between the issuer and this server.
    pub clock_leeway: Duration,
}

/// Bounds on every query run on the reader connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Enforced by PostgreSQL (`SET LOCAL statement_timeout`), per statement.
    pub statement_timeout: Duration,
    /// The most rows `run_select` returns; one more is fetched to know whether it truncated.
    pub max_rows: usize,
    /// The most bytes of JSON rows `run_select` returns.
    pub max_result_bytes: usize,
    /// Queries whose estimated total cost (EXPLAIN) exceeds this are refused before they run.
    pub max_query_cost: f64,
}

/// One MCP endpoint: the unified one, or one component's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Endpoint {
    /// `/mcp`: every capability.
    All,
    /// `/mcp/sql`: schema introspection, read-only SQL and EXPLAIN.
    Sql,
    /// `/mcp/metrics`: anomaly detection, SLO burn, noisy alert rules.
    Metrics,
    /// `/mcp/incidents`: incident correlation, privileged operations and the audit trail.
    Incidents,
}

/// A group of capabilities; an endpoint serves one or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Sql,
    Metrics,
    Incidents,
}

/// The shared secret credentials are signed with (HS256). Never printed.
#[derive(Clone)]
pub struct SigningKey(Arc<[u8]>);

impl Limits {
    pub const DEFAULT: Limits = Limits {
        statement_timeout: Duration::from_secs(5),
        max_rows: 1000,
        max_result_bytes: 512 * 1024,
        max_query_cost: 2_000_000.0,
    };

    /// Refuses limits that would switch a defence off or make the server useless.
    pub fn validate(&self) -> Result<(), Error> {
        let timeout_ms = self.statement_timeout.as_millis();
        if !(100..=600_000).contains(&timeout_ms) {
            return Err(Error::Startup(format!(
                "--statement-timeout-ms must be between 100 and 600000, not {timeout_ms}"
            )));
        }
        if !(1..=100_000).contains(&self.max_rows) {
            return Err(Error::Startup(format!(
                "--max-rows must be between 1 and 100000, not {}",
                self.max_rows
            )));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_result_bytes) {
            return Err(Error::Startup(format!(
                "--max-result-bytes must be between 1024 and 67108864, not {}",
                self.max_result_bytes
            )));
        }
        if !(self.max_query_cost.is_finite() && self.max_query_cost >= 1.0) {
            return Err(Error::Startup(format!(
                "--max-query-cost must be a finite number of at least 1, not {}",
                self.max_query_cost
            )));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Endpoint {
    /// Every endpoint, in the order they are mounted by default.
    pub const EVERY: [Endpoint; 4] = [
        Endpoint::All,
        Endpoint::Sql,
        Endpoint::Metrics,
        Endpoint::Incidents,
    ];

    /// The URL path it is served at.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::All => "/mcp",
            Endpoint::Sql => "/mcp/sql",
            Endpoint::Metrics => "/mcp/metrics",
            Endpoint::Incidents => "/mcp/incidents",
        }
    }

    /// The name used on the command line and in the audit trail.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::All => "all",
            Endpoint::Sql => "sql",
            Endpoint::Metrics => "metrics",
            Endpoint::Incidents => "incidents",
        }
    }

    /// The capabilities it serves.
    pub fn components(self) -> &'static [Component] {
        match self {
            Endpoint::All => &[Component::Sql, Component::Metrics, Component::Incidents],
            Endpoint::Sql => &[Component::Sql],
            Endpoint::Metrics => &[Component::Metrics],
            Endpoint::Incidents => &[Component::Incidents],
        }
    }
}

impl SigningKey {
    /// Shorter keys make HS256 guessable; they are refused.
    pub const MINIMUM_BYTES: usize = 32;

    pub fn new(bytes: Vec<u8>) -> Result<Self, Error> {
        if bytes.len() < Self::MINIMUM_BYTES {
            return Err(Error::Startup(format!(
                "the signing key has {} bytes; at least {} are required",
                bytes.len(),
                Self::MINIMUM_BYTES
            )));
        }
        Ok(Self(bytes.into()))
    }

    /// The key itself, for signing and verifying.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SigningKey(..)")
    }
}

impl CredentialPolicy {
    /// The defaults: trusted issuers `internal-host` and `internal-mcp-token`, lifetimes up to ten
    /// minutes, thirty seconds of clock leeway.
    pub fn new(signing_key: SigningKey) -> Self {
        Self::from_keys(Some(signing_key), PublicKeySet::default())
    }

    /// The defaults with these keys: EdDSA credentials by the public keys, HS256 ones only when a
    /// shared key is given.
    pub fn from_keys(signing_key: Option<SigningKey>, public_keys: PublicKeySet) -> Self {
        Self {
            signing_key,
            public_keys,
            trusted_issuers: DEFAULT_TRUSTED_ISSUERS
                .iter()
                .map(|issuer| (*issuer).to_owned())
                .collect(),
            max_lifetime: MAX_CREDENTIAL_LIFETIME,
            clock_leeway: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Defaults for everything but the connections and the key: every endpoint, default limits,
    /// loopback hosts, five-minute confirmations.
    pub fn new(
        privileged_database: PgConnectOptions,
        reader_database: PgConnectOptions,
        signing_key: SigningKey,
    ) -> Self {
        Self::with_credentials(
            privileged_database,
            reader_database,
            CredentialPolicy::new(signing_key),
        )
    }

    /// The defaults, with the given credential policy.
    pub fn with_credentials(
        privileged_database: PgConnectOptions,
        reader_database: PgConnectOptions,
        credentials: CredentialPolicy,
    ) -> Self {
        Self {
            privileged_database,
            reader_database,
            reader_connections: 8,
            max_calls_per_caller: 2,
            max_calls_per_organization: 3,
            credentials,
            limits: Limits::DEFAULT,
            endpoints: Endpoint::EVERY.to_vec(),
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            confirmation_lifetime: Duration::from_secs(300),
            audit_retention: Duration::from_secs(90 * 24 * 3600),
            allow_reader_in_other_databases: false,
        }
    }

    /// Checks every value; the server does not start on an error.
    pub fn validate(&self) -> Result<(), Error> {
        self.limits.validate()?;
        if self.endpoints.is_empty() {
            return Err(Error::Startup("--mount names no endpoint".into()));
        }
        if self.credentials.signing_key.is_none() && self.credentials.public_keys.is_empty() {
            return Err(Error::Startup(
                "no credential key is configured: give public keys (JWKS) or an HS256 key".into(),
            ));
        }
        if self.credentials.trusted_issuers.is_empty() {
            return Err(Error::Startup(
                "no trusted credential issuer is configured".into(),
            ));
        }
        if self.allowed_hosts.is_empty() {
            return Err(Error::Startup("no allowed Host is configured".into()));
        }
        if !(1..=100).contains(&self.reader_connections) {
            return Err(Error::Startup(
                "the reader pool must have between 1 and 100 connections".into(),
            ));
        }
        let connections = usize::try_from(self.reader_connections).unwrap_or(usize::MAX);
        if self.max_calls_per_caller == 0
            || self.max_calls_per_caller > self.max_calls_per_organization
        {
            return Err(Error::Startup(
                "calls per caller must be at least 1 and at most the calls per organisation".into(),
            ));
        }
        if connections > 1 && self.max_calls_per_organization >= connections {
            return Err(Error::Startup(format!(
                "calls per organisation ({}) must be fewer than the reader connections ({connections}), so one \
                 organisation cannot take them all",
                self.max_calls_per_organization
            )));
        }
        if self.audit_retention < Duration::from_secs(24 * 3600) {
            return Err(Error::Startup(
                "audit records must be kept at least a day".into(),
            ));
        }
        if self.confirmation_lifetime.is_zero()
            || self.confirmation_lifetime > Duration::from_secs(3600)
        {
            return Err(Error::Startup(
                "confirmations must live between 1 second and 1 hour".into(),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for Config {
    /// Connection options carry passwords: only where they point is shown.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let describe = |options: &PgConnectOptions| {
            format!(
                "{}@{}:{}/{}",
                options.get_username(),
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or("")
            )
        };
        formatter
            .debug_struct("Config")
            .field("privileged_database", &describe(&self.privileged_database))
            .field("reader_database", &describe(&self.reader_database))
            .field("reader_connections", &self.reader_connections)
            .field("max_calls_per_caller", &self.max_calls_per_caller)
            .field(
                "max_calls_per_organization",
                &self.max_calls_per_organization,
            )
            .field("credentials", &self.credentials)
            .field("limits", &self.limits)
            .field("endpoints", &self.endpoints)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("confirmation_lifetime", &self.confirmation_lifetime)
            .field("audit_retention", &self.audit_retention)
            .field(
                "allow_reader_in_other_databases",
                &self.allow_reader_in_other_databases,
            )
            .finish()
    }
}
