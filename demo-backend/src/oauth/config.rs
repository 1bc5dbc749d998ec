//! What the authorization server is told: its issuer, the lifetimes of what it issues, and the
//! pre-registered confidential clients (from a JSON file, secrets as SHA-256 digests only).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::client_documents::ClientDocumentSettings;

/// The authorization server's settings.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// The issuer identifier (RFC 8414): `https://host[:port]`, no trailing slash. Every endpoint
    /// is below it, and the REST API's resource identifier is `<issuer>/api/v1`.
    pub issuer: String,
    /// Confidential clients configured by the operator (the product's own services).
    pub clients: Vec<PreRegisteredClient>,
    pub access_token_lifetime: Duration,
    /// Access tokens made by token exchange (RFC 8693) for a resource server to call the API.
    pub exchanged_token_lifetime: Duration,
    pub refresh_token_lifetime: Duration,
    pub authorization_code_lifetime: Duration,
    /// How long a person has for sign-in and consent.
    pub authorization_request_lifetime: Duration,
    /// How client metadata documents are fetched.
    pub client_documents: ClientDocumentSettings,
}

/// A confidential client the operator registered in the clients file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreRegisteredClient {
    pub client_id: String,
    pub client_name: String,
    /// SHA-256 of the client secret, 64 hex digits (`printf %s "$SECRET" | sha256sum`). The
    /// secret itself is never configured here.
    #[serde(deserialize_with = "digest_from_hex")]
    pub client_secret_sha256: [u8; 32],
    /// Exact redirect URIs, for clients that sign users in (authorization code).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// `authorization_code`, `refresh_token`, `urn:ietf:params:oauth:grant-type:token-exchange`.
    pub grant_types: Vec<String>,
    /// The resources this client serves, as a resource server: tokens for them are introspected
    /// and exchanged by this client and no other. Each also becomes a resource the
    /// authorization server issues tokens for (RFC 8707).
    #[serde(default)]
    pub resources_served: Vec<String>,
}

/// The grant types the server knows.
pub const AUTHORIZATION_CODE: &str = "authorization_code";
pub const REFRESH_TOKEN: &str = "refresh_token";
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

impl OAuthSettings {
    /// Settings for `issuer` with the default lifetimes and no pre-registered client.
    pub fn new(issuer: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(issuer).context("the OAuth issuer must be a URL")?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || parsed.path() != "/"
        {
            bail!(
                "the OAuth issuer must be `https://host[:port]` without path, query or fragment, not `{issuer}`"
            );
        }
        Ok(Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            clients: Vec::new(),
            access_token_lifetime: Duration::from_secs(10 * 60),
            exchanged_token_lifetime: Duration::from_secs(5 * 60),
            refresh_token_lifetime: Duration::from_secs(30 * 24 * 3600),
            authorization_code_lifetime: Duration::from_secs(2 * 60),
            authorization_request_lifetime: Duration::from_secs(10 * 60),
            client_documents: ClientDocumentSettings::default(),
        })
    }

    /// The REST API's resource identifier.
    pub fn api_resource(&self) -> String {
        format!("{}/api/v1", self.issuer)
    }

    /// Every resource tokens may be issued for: the API and what pre-registered clients serve.
    pub fn resources(&self) -> Vec<String> {
        let mut resources = vec![self.api_resource()];
        for client in &self.clients {
            for resource in &client.resources_served {
                if !resources.contains(resource) {
                    resources.push(resource.clone());
                }
            }
        }
        resources
    }

    /// Adds the clients of a clients file (a JSON array of [`PreRegisteredClient`]s).
    pub fn with_clients_file(mut self, path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the OAuth clients file {}", path.display()))?;
        let clients: Vec<PreRegisteredClient> = serde_json::from_str(&text)
            .with_context(|| format!("the OAuth clients file {} is invalid", path.display()))?;
        self.clients = clients;
        self.check_clients()?;
        Ok(self)
    }

    fn check_clients(&self) -> anyhow::Result<()> {
        for (index, client) in self.clients.iter().enumerate() {
            if client.client_id.is_empty() || client.client_id.starts_with("https://") {
                bail!("client {index}: client_id must be a plain name, not empty or a URL");
            }
            if self.clients[..index]
                .iter()
                .any(|other| other.client_id == client.client_id)
            {
                bail!("client `{}` is configured twice", client.client_id);
            }
            for grant in &client.grant_types {
                if ![AUTHORIZATION_CODE, REFRESH_TOKEN, TOKEN_EXCHANGE].contains(&grant.as_str()) {
                    bail!(
                        "client `{}`: unknown grant type `{grant}`",
                        client.client_id
                    );
                }
            }
            for uri in &client.redirect_uris {
                if let Err(problem) = super::clients::check_redirect_uri(uri) {
                    bail!(
                        "client `{}`: redirect URI `{uri}`: {problem}",
                        client.client_id
                    );
                }
            }
            for resource in &client.resources_served {
                let parsed = url::Url::parse(resource).with_context(|| {
                    format!("client `{}`: resource `{resource}`", client.client_id)
                })?;
                if parsed.fragment().is_some() {
                    bail!("client `{}`: a resource has no fragment", client.client_id);
                }
            }
        }
        Ok(())
    }
}

fn digest_from_hex<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<[u8; 32], D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_hex_digest(&text).ok_or_else(|| {
        serde::de::Error::custom("client_secret_sha256 must be 64 hexadecimal digits")
    })
}

/// 64 hex digits as 32 bytes.
pub(crate) fn parse_hex_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (index, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_origins_only() {
        assert_eq!(
            OAuthSettings::new("http://127.0.0.1:8080/").unwrap().issuer,
            "http://127.0.0.1:8080"
        );
        assert!(OAuthSettings::new("https://example.com/oauth").is_err());
        assert!(OAuthSettings::new("ftp://example.com").is_err());
        assert!(OAuthSettings::new("https://example.com/?x=1").is_err());
    }

    #[test]
    fn clients_files_fail_closed() {
        let check = |json: &str, ok: bool| {
            let clients: Result<Vec<PreRegisteredClient>, _> = serde_json::from_str(json);
            let settings = clients.map_err(anyhow::Error::from).and_then(|clients| {
                let settings = OAuthSettings {
                    clients,
                    ..OAuthSettings::new("http://localhost:1").unwrap()
                };
                settings.check_clients()?;
                Ok(settings)
            });
            assert_eq!(settings.is_ok(), ok, "{json}: {settings:?}");
        };
        let digest = "ab".repeat(32);
        check(
            &format!(
                r#"[{{"client_id":"a","client_name":"A","client_secret_sha256":"{digest}","grant_types":["authorization_code"],"redirect_uris":["https://a.example/cb"]}}]"#
            ),
            true,
        );
        check(
            &format!(
                r#"[{{"client_id":"a","client_name":"A","client_secret_sha256":"{digest}","grant_types":["password"]}}]"#
            ),
            false,
        );
        check(
            &format!(
                r#"[{{"client_id":"a","client_name":"A","client_secret_sha256":"{digest}","grant_types":[],"secret":"x"}}]"#
            ),
            false,
        );
        check(
            r#"[{"client_id":"a","client_name":"A","client_secret_sha256":"abc","grant_types":[]}]"#,
            false,
        );
        check(
            &format!(
                r#"[{{"client_id":"a","client_name":"A","client_secret_sha256":"{digest}","grant_types":[]}},{{"client_id":"a","client_name":"B","client_secret_sha256":"{digest}","grant_types":[]}}]"#
            ),
            false,
        );
        check(
            &format!(
                r#"[{{"client_id":"a","client_name":"A","client_secret_sha256":"{digest}","grant_types":["authorization_code"],"redirect_uris":["http://evil.example/cb"]}}]"#
            ),
            false,
        );
    }
}
