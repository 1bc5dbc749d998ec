//! The command line and environment of `external-mcp`, in one clap struct, and its validation into
//! the [`Settings`] the library runs on.
//!
//! Configuration fails closed: an unknown flag, transport or toolset is an error, never ignored.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use url::Url;

use crate::credentials::ApiToken;
use crate::oauth::ClientCredentials;

/// How the MCP host talks to this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// JSON-RPC over stdin/stdout, for a host that starts the server itself (the default).
    Stdio,
    /// Streamable HTTP on `--listen`, endpoint `/mcp`, for remote hosts; each request carries its
    /// caller's own bearer token.
    Http,
}

/// Groups of tools that can be switched on and off together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum Toolset {
    /// find_services, service_overview.
    Services,
    /// metric_summary.
    Metrics,
    /// list_alerts.
    Alerts,
    /// list_incidents, get_incident and the incident write tools.
    Incidents,
    /// list_deployments.
    Deployments,
}

impl Toolset {
    pub const ALL: [Toolset; 5] = [
        Toolset::Services,
        Toolset::Metrics,
        Toolset::Alerts,
        Toolset::Incidents,
        Toolset::Deployments,
    ];

    /// The name used in flags and in `/mcp/x/{toolset}`.
    pub fn name(self) -> &'static str {
        match self {
            Toolset::Services => "services",
            Toolset::Metrics => "metrics",
            Toolset::Alerts => "alerts",
            Toolset::Incidents => "incidents",
            Toolset::Deployments => "deployments",
        }
    }
}

/// Everything `external-mcp` can be told, from flags or environment variables.
#[derive(Debug, Parser)]
#[command(
    name = "external-mcp",
    version,
    about = "The demo monitoring product's MCP server: ask about and act on your monitoring data from any MCP host."
)]
pub struct Config {
    /// How the MCP host connects.
    #[arg(long, value_enum, default_value = "stdio")]
    pub transport: Transport,

    /// Address to listen on with `--transport http`.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,

    /// Base URL of the product's REST API, e.g. https://monitoring.example.com
    #[arg(long, env = "DEMO_API_URL")]
    pub api_url: Url,

    /// Your API token (stdio only; over HTTP every request brings its own).
    #[arg(
        long,
        env = "DEMO_API_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<ApiToken>,

    /// A file holding your API token, re-read when it changes (stdio only).
    #[arg(long, env = "DEMO_API_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Offer no tool that changes anything, whatever the token allows.
    #[arg(long, env = "DEMO_MCP_READ_ONLY")]
    pub read_only: bool,

    /// Comma-separated tool groups to offer (default: all).
    #[arg(long, value_enum, value_delimiter = ',', env = "DEMO_MCP_TOOLSETS")]
    pub toolsets: Vec<Toolset>,

    /// Comma-separated Host names (optionally host:port) accepted over HTTP.
    #[arg(
        long,
        value_delimiter = ',',
        env = "DEMO_MCP_ALLOWED_HOSTS",
        default_value = "localhost,127.0.0.1,::1"
    )]
    pub allowed_hosts: Vec<String>,

    /// The URL MCP hosts reach this server at, for the OAuth protected-resource metadata
    /// (default: http://<listen>).
    #[arg(long, env = "DEMO_MCP_PUBLIC_URL")]
    pub public_url: Option<Url>,

    /// Base of the deep links put in results (default: the API URL's origin).
    #[arg(long, env = "DEMO_WEB_URL")]
    pub web_url: Option<Url>,

    /// This server's client id at the product's OAuth authorization server; with a secret, OAuth
    /// access tokens issued for this server are accepted over HTTP (see README.md, "Auth").
    #[arg(long, env = "DEMO_MCP_OAUTH_CLIENT_ID", requires = "oauth_secret")]
    pub oauth_client_id: Option<String>,

    /// The client secret that goes with --oauth-client-id.
    #[arg(
        long,
        env = "DEMO_MCP_OAUTH_CLIENT_SECRET",
        hide_env_values = true,
        group = "oauth_secret"
    )]
    pub oauth_client_secret: Option<String>,

    /// A file holding that client secret (read at start).
    #[arg(
        long,
        env = "DEMO_MCP_OAUTH_CLIENT_SECRET_FILE",
        group = "oauth_secret"
    )]
    pub oauth_client_secret_file: Option<PathBuf>,

    /// Seconds one API request may take before it is abandoned.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub api_timeout_seconds: u64,
}

/// The validated configuration the library runs on; tests build it directly.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL of the REST API.
    pub api_url: Url,
    /// Base of deep links.
    pub web_url: Url,
    /// When true, write tools are never offered.
    pub read_only: bool,
    /// The tool groups offered, never empty.
    pub toolsets: Vec<Toolset>,
    /// How API requests are timed and retried.
    pub api: ApiOptions,
}

/// Timeouts and retries toward the REST API.
#[derive(Debug, Clone, Copy)]
pub struct ApiOptions {
    /// One request's time limit.
    pub timeout: Duration,
    /// Attempts per call, the first included, on 429 and 503.
    pub max_attempts: u32,
    /// The longest wait before a retry; a `Retry-After` above it ends the call at once.
    pub max_retry_wait: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            max_attempts: 4,
            max_retry_wait: Duration::from_secs(10),
        }
    }
}

/// Settings of the HTTP transport.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// How hosts reach this server; `resource` in the protected-resource metadata is
    /// `<public_url>/mcp`.
    pub public_url: Url,
    /// Accepted `Host` values (a name, or name:port), also checked against `Origin`.
    pub allowed_hosts: Vec<String>,
    /// This server's credentials at the product's authorization server; without them only
    /// personal API tokens are accepted.
    pub oauth: Option<ClientCredentials>,
}

/// Where the stdio transport's token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// Given once, on the command line or in the environment (or not at all).
    Fixed(Option<ApiToken>),
    /// Read from this file, and read again whenever it changes.
    File(PathBuf),
}

/// What `main` runs: the transport with its settings.
#[derive(Debug, Clone)]
pub enum Launch {
    Stdio {
        settings: Settings,
        token: TokenSource,
    },
    Http {
        settings: Settings,
        http: HttpSettings,
    },
}

impl Config {
    /// Checks the combination of options and derives the defaults.
    pub fn into_launch(self) -> Result<Launch, String> {
        if !matches!(self.api_url.scheme(), "http" | "https") || self.api_url.host_str().is_none() {
            return Err(format!(
                "--api-url must be an http(s) URL, not `{}`",
                self.api_url
            ));
        }
        let web_url = match self.web_url {
            Some(url) => url,
            None => origin_of(&self.api_url)?,
        };
        let mut toolsets = if self.toolsets.is_empty() {
            Toolset::ALL.to_vec()
        } else {
            self.toolsets
        };
        toolsets.sort();
        toolsets.dedup();
        let settings = Settings {
            api_url: self.api_url,
            web_url,
            read_only: self.read_only,
            toolsets,
            api: ApiOptions {
                timeout: Duration::from_secs(self.api_timeout_seconds),
                ..ApiOptions::default()
            },
        };
        let oauth = match (
            self.oauth_client_id,
            self.oauth_client_secret,
            self.oauth_client_secret_file,
        ) {
            (None, None, None) => None,
            (Some(client_id), Some(client_secret), None) => Some(ClientCredentials {
                client_id,
                client_secret,
            }),
            (Some(client_id), None, Some(path)) => {
                let secret = std::fs::read_to_string(&path).map_err(|error| {
                    format!(
                        "cannot read --oauth-client-secret-file {}: {error}",
                        path.display()
                    )
                })?;
                Some(ClientCredentials {
                    client_id,
                    client_secret: secret.trim().to_owned(),
                })
            }
            _ => {
                return Err("give --oauth-client-id together with one of --oauth-client-secret or --oauth-client-secret-file".into());
            }
        };
        if oauth
            .as_ref()
            .is_some_and(|oauth| oauth.client_secret.is_empty() || oauth.client_id.is_empty())
        {
            return Err("the OAuth client id and secret must not be empty".into());
        }
        match self.transport {
            Transport::Stdio => {
                if oauth.is_some() {
                    return Err("the OAuth client settings are for --transport http".into());
                }
                let token = match self.token_file {
                    Some(path) => TokenSource::File(path),
                    None => TokenSource::Fixed(self.token),
                };
                Ok(Launch::Stdio { settings, token })
            }
            Transport::Http => {
                if self.token.is_some() || self.token_file.is_some() {
                    return Err("--token and --token-file are for stdio: over HTTP every request \
                                carries its caller's own token (unset DEMO_API_TOKEN and DEMO_API_TOKEN_FILE)"
                        .into());
                }
                let allowed_hosts: Vec<String> = self
                    .allowed_hosts
                    .into_iter()
                    .map(|host| host.trim().to_ascii_lowercase())
                    .filter(|host| !host.is_empty())
                    .collect();
                if allowed_hosts.is_empty() {
                    return Err("--allowed-hosts must name at least one host".into());
                }
                let public_url = match self.public_url {
                    Some(url) => url,
                    None => Url::parse(&format!("http://{}", self.listen)).map_err(|error| {
                        format!("cannot derive --public-url from --listen: {error}")
                    })?,
                };
                Ok(Launch::Http {
                    settings,
                    http: HttpSettings {
                        listen: self.listen,
                        public_url,
                        allowed_hosts,
                        oauth,
                    },
                })
            }
        }
    }
}

/// `https://host:port/` of a URL, dropping its path.
fn origin_of(url: &Url) -> Result<Url, String> {
    let origin = url.origin().ascii_serialization();
    Url::parse(&origin)
        .map_err(|_| format!("`{url}` has no origin to build links from; set --web-url"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(arguments: &[&str]) -> Result<Launch, String> {
        let mut all = vec!["external-mcp", "--api-url", "http://127.0.0.1:8080/"];
        all.extend_from_slice(arguments);
        Config::try_parse_from(all)
            .map_err(|error| error.to_string())?
            .into_launch()
    }

    #[test]
    fn defaults_are_stdio_with_every_toolset_and_links_to_the_api_origin() {
        let Ok(Launch::Stdio { settings, token }) = parse(&[]) else {
            panic!("stdio expected");
        };
        assert_eq!(settings.toolsets, Toolset::ALL.to_vec());
        assert!(!settings.read_only);
        assert_eq!(settings.web_url.as_str(), "http://127.0.0.1:8080/");
        assert!(matches!(token, TokenSource::Fixed(None)));
    }

    #[test]
    fn unknown_values_are_errors_never_ignored() {
        let check = |arguments: &[&str]| {
            assert!(parse(arguments).is_err(), "{arguments:?} was accepted");
        };
        check(&["--toolsets", "services,bogus"]);
        check(&["--transport", "websocket"]);
        check(&["--read-only=maybe"]);
        check(&["--readonly"]);
        check(&["--transport", "http", "--token", "dmo_x"]);
        check(&["--token", "dmo_x", "--token-file", "/tmp/x"]);
        check(&["--transport", "http", "--allowed-hosts", ""]);
        check(&["--transport", "http", "--oauth-client-id", "external-mcp"]);
        check(&["--transport", "http", "--oauth-client-secret", "x"]);
        check(&[
            "--oauth-client-id",
            "external-mcp",
            "--oauth-client-secret",
            "x",
        ]);
        check(&[
            "--transport",
            "http",
            "--oauth-client-id",
            "a",
            "--oauth-client-secret",
            "x",
            "--oauth-client-secret-file",
            "/tmp/x",
        ]);
    }

    #[test]
    fn toolsets_are_a_list() {
        let Ok(Launch::Stdio { settings, .. }) =
            parse(&["--toolsets", "incidents,services,incidents"])
        else {
            panic!("stdio expected");
        };
        assert_eq!(
            settings.toolsets,
            vec![Toolset::Services, Toolset::Incidents]
        );
    }

    #[test]
    fn http_derives_its_public_url_from_the_listen_address() {
        let Ok(Launch::Http { http, .. }) =
            parse(&["--transport", "http", "--listen", "127.0.0.1:9000"])
        else {
            panic!("http expected");
        };
        assert_eq!(http.public_url.as_str(), "http://127.0.0.1:9000/");
        assert_eq!(http.allowed_hosts, vec!["localhost", "127.0.0.1", "::1"]);
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let config = Config::try_parse_from([
            "external-mcp",
            "--api-url",
            "http://x/",
            "--token",
            "dmo_secret",
        ])
        .unwrap();
        assert!(!format!("{config:?}").contains("dmo_secret"));
    }
}
