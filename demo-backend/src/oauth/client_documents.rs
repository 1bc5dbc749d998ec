//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, which the MCP
//! authorization spec 2025-11-25 prefers to registration): a client whose `client_id` is an
//! `https://` URL is described by the JSON document served at that URL, so a host needs no
//! registration step and people see on the consent page which site the client belongs to.
//!
//! Anyone can name any URL as a client id, so fetching it is guarded against server-side request
//! forgery:
//! - only public addresses are reached: the name is resolved here, every address it resolves to
//!   is checked (loopback, private, link-local, shared, reserved, ... are refused), and the
//!   connection goes to the checked addresses, so rebinding the name between check and connect
//!   gains nothing; a literal address in the URL is checked the same way;
//! - no redirect is followed and no proxy is used;
//! - the fetch gives up after [`FETCH_TIMEOUT`] and past [`MAX_DOCUMENT_BYTES`], and at most
//!   [`MAX_CONCURRENT_FETCHES`] run at once;
//! - documents are cached for their `max-age` (kept between [`MIN_CACHE`] and [`MAX_CACHE`]),
//!   failures for [`FAILURE_CACHE`].
//!
//! The document must name itself (`client_id` equal to its URL) and describes a public client:
//! it authenticates with PKCE only, never with a shared secret.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header;
use serde_json::Value;
use tokio::sync::Semaphore;
use url::{Host, Url};

use super::clients::ClientMetadata;

/// The whole fetch, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest document read; a longer one is refused.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024;
pub const MAX_CONCURRENT_FETCHES: usize = 8;
pub const MIN_CACHE: Duration = Duration::from_secs(60);
pub const MAX_CACHE: Duration = Duration::from_secs(60 * 60);
/// A document without `max-age` is kept this long.
const DEFAULT_CACHE: Duration = Duration::from_secs(5 * 60);
pub const FAILURE_CACHE: Duration = Duration::from_secs(30);
/// Above this many cached client ids, expired ones are dropped (all, if none expired).
const MAX_CACHED: usize = 1_000;
const MAX_CLIENT_ID_LENGTH: usize = 2_000;

/// How documents are fetched (see `demo-backend serve --help`).
#[derive(Debug, Clone, Default)]
pub struct ClientDocumentSettings {
    /// Also fetch from loopback and private addresses. For tests only: it opens the SSRF guard.
    pub allow_private_addresses: bool,
    /// Certificates trusted besides the system's roots (PEM), e.g. an internal CA or a test's.
    pub extra_roots: Vec<reqwest::Certificate>,
}

/// A client described by its metadata document.
#[derive(Debug, Clone)]
pub struct ClientDocument {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
}

/// A document, or why it cannot be used.
type Outcome = Result<Arc<ClientDocument>, String>;

/// Fetches, checks and caches client metadata documents.
#[derive(Debug)]
pub struct ClientDocuments {
    /// `None` when no HTTP client could be built: every document client is then refused.
    http: Option<reqwest::Client>,
    allow_private_addresses: bool,
    cache: Mutex<HashMap<String, (Outcome, Instant)>>,
    fetches: Semaphore,
}

/// Whether `client_id` names a metadata document rather than a registered client.
pub fn is_document_client_id(client_id: &str) -> bool {
    client_id.starts_with("https://")
}

impl ClientDocuments {
    pub fn new(settings: &ClientDocumentSettings) -> Self {
        let mut builder = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(true)
            .user_agent(concat!("demo-backend/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(CheckedResolver {
                allow_private_addresses: settings.allow_private_addresses,
            }));
        for root in &settings.extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let http = builder
            .build()
            .inspect_err(|error| {
                tracing::error!(%error, "client metadata documents cannot be fetched: such clients are refused");
            })
            .ok();
        Self {
            http,
            allow_private_addresses: settings.allow_private_addresses,
            cache: Mutex::new(HashMap::new()),
            fetches: Semaphore::new(MAX_CONCURRENT_FETCHES),
        }
    }

    /// The client described at `client_id`, from the cache or fetched now; `Err` says in plain
    /// words why it cannot be used.
    pub async fn get(&self, client_id: &str) -> Outcome {
        if let Some(cached) = self.cached(client_id) {
            return cached;
        }
        let (outcome, lifetime) = match self.fetch(client_id).await {
            Ok((document, lifetime)) => (Ok(Arc::new(document)), lifetime),
            Err(problem) => {
                tracing::info!(client = %client_id, %problem, "refused a client metadata document");
                (Err(problem), FAILURE_CACHE)
            }
        };
        self.remember(client_id, outcome.clone(), lifetime);
        outcome
    }

    fn cached(&self, client_id: &str) -> Option<Outcome> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .get(client_id)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(outcome, _)| outcome.clone())
    }

    fn remember(&self, client_id: &str, outcome: Outcome, lifetime: Duration) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, (_, until)| now < *until);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(client_id.to_owned(), (outcome, Instant::now() + lifetime));
    }

    async fn fetch(&self, client_id: &str) -> Result<(ClientDocument, Duration), String> {
        let url = check_client_id(client_id, self.allow_private_addresses)?;
        let Some(http) = &self.http else {
            return Err("this server cannot fetch client metadata documents".into());
        };
        let _permit = self
            .fetches
            .acquire()
            .await
            .map_err(|_| "this server is shutting down".to_owned())?;
        let mut response = http
            .get(url)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| {
                format!(
                    "the client's metadata document cannot be fetched: {}",
                    describe(&error)
                )
            })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(format!(
                "the client's metadata document answered HTTP {status}: redirects are not followed"
            ));
        }
        if !status.is_success() {
            return Err(format!(
                "the client's metadata document answered HTTP {status}"
            ));
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(too_large());
        }
        let lifetime = cache_lifetime(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|error| {
            format!(
                "the client's metadata document cannot be read: {}",
                describe(&error)
            )
        })? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let document: Value = serde_json::from_slice(&body)
            .map_err(|error| format!("the client's metadata document is not JSON: {error}"))?;
        Ok((parse_document(client_id, &document)?, lifetime))
    }
}

fn too_large() -> String {
    format!("the client's metadata document is larger than {MAX_DOCUMENT_BYTES} bytes")
}

/// A URL that may be a client id: `https`, canonical, with a path, without user, query or
/// fragment, and not a literal non-public address.
fn check_client_id(client_id: &str, allow_private_addresses: bool) -> Result<Url, String> {
    if client_id.len() > MAX_CLIENT_ID_LENGTH {
        return Err(format!(
            "a client id URL is at most {MAX_CLIENT_ID_LENGTH} characters"
        ));
    }
    let url =
        Url::parse(client_id).map_err(|error| format!("the client id is not a URL: {error}"))?;
    if url.scheme() != "https" {
        return Err("a client id URL uses https".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a client id URL has no user name or password".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a client id URL has no query and no fragment".into());
    }
    if url.path() == "/" {
        return Err("a client id URL has a path to the document".into());
    }
    let literal = match url.host() {
        Some(Host::Ipv4(address)) => Some(IpAddr::V4(address)),
        Some(Host::Ipv6(address)) => Some(IpAddr::V6(address)),
        Some(Host::Domain(_)) => None,
        None => return Err("a client id URL names a host".into()),
    };
    if let Some(address) = literal
        && !allow_private_addresses
        && !is_public(address)
    {
        return Err(format!("{address} is not a public address"));
    }
    if url.as_str() != client_id {
        return Err(format!(
            "a client id URL is written in its canonical form (no dot segments, lower-case host, no default port): {url}"
        ));
    }
    Ok(url)
}

/// Checks the document against the URL it came from.
fn parse_document(client_id: &str, document: &Value) -> Result<ClientDocument, String> {
    let Some(fields) = document.as_object() else {
        return Err("the client's metadata document must be a JSON object".into());
    };
    if fields.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err("the client's metadata document must name its own URL as client_id".into());
    }
    if fields.contains_key("client_secret") || fields.contains_key("client_secret_expires_at") {
        return Err("a client metadata document holds no client secret".into());
    }
    let metadata = ClientMetadata::parse(fields, "none")
        .map_err(|error| format!("the client's metadata document: {}", error.description))?;
    if metadata.token_endpoint_auth_method != "none" {
        return Err(
            "a client identified by its metadata document authenticates with PKCE only: token_endpoint_auth_method must be none"
                .into(),
        );
    }
    let client_name = metadata.client_name.unwrap_or_else(|| {
        Url::parse(client_id)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_default()
    });
    Ok(ClientDocument {
        client_id: client_id.to_owned(),
        client_name,
        redirect_uris: metadata.redirect_uris,
    })
}

/// `max-age` of `Cache-Control`, within bounds; `no-store` and `no-cache` get the minimum.
fn cache_lifetime(headers: &header::HeaderMap) -> Duration {
    let Some(value) = headers
        .get(header::CACHE_CONTROL)
        .and_then(|value| value.to_str().ok())
    else {
        return DEFAULT_CACHE;
    };
    let mut lifetime = DEFAULT_CACHE;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return MIN_CACHE;
        }
        if let Some(seconds) = lower.strip_prefix("max-age=")
            && let Ok(seconds) = seconds.trim_matches('"').parse::<u64>()
        {
            lifetime = Duration::from_secs(seconds);
        }
    }
    lifetime.clamp(MIN_CACHE, MAX_CACHE)
}

/// The error and its causes, without the URL (the caller knows it).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("no answer within {} s", FETCH_TIMEOUT.as_secs());
    }
    let mut text = String::new();
    let mut cause: Option<&dyn std::error::Error> = Some(error);
    while let Some(current) = cause {
        let part = current.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        cause = current.source();
    }
    text
}

/// Resolves names for the document fetcher and refuses those with a non-public address.
#[derive(Debug)]
struct CheckedResolver {
    allow_private_addresses: bool,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private_addresses = self.allow_private_addresses;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addresses.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            if !allow_private_addresses
                && let Some(address) = addresses.iter().find(|address| !is_public(address.ip()))
            {
                return Err(format!(
                    "{host} resolves to {}, which is not a public address",
                    address.ip()
                )
                .into());
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// Whether `address` is reachable on the public internet: not loopback, private, link-local,
/// shared (CGNAT), documentation, benchmarking, multicast, reserved or unspecified, and not an
/// IPv6 form that embeds an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo).
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(address) => is_public_v4(address),
        IpAddr::V6(address) => {
            if let Some(mapped) = address.to_ipv4_mapped() {
                return is_public_v4(mapped);
            }
            is_public_v6(address)
        }
    }
}

fn is_public_v4(address: Ipv4Addr) -> bool {
    let [first, second, third, _] = address.octets();
    !(address.is_unspecified()
        || address.is_loopback()
        || address.is_private()
        || address.is_link_local()
        || address.is_broadcast()
        || address.is_documentation()
        || address.is_multicast()
        || first == 0
        || (first == 100 && (second & 0xc0) == 64)
        || (first == 192 && second == 0 && third == 0)
        || (first == 198 && (second & 0xfe) == 18)
        || first >= 240)
}

fn is_public_v6(address: Ipv6Addr) -> bool {
    let segments = address.segments();
    !(address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00
        || (segments[0] & 0xffc0) == 0xfe80
        || (segments[0] & 0xffc0) == 0xfec0
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)
        || (segments[0] == 0x2001 && segments[1] == 0)
        || segments[0] == 0x2002
        || (segments[0] == 0x64 && segments[1] == 0xff9b)
        || segments[..6] == [0; 6])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_public_addresses_are_public() {
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2001:0:4136:e378::1",
        ] {
            assert!(!is_public(address.parse().unwrap()), "{address}");
        }
        for address in [
            "93.184.215.14",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(address.parse().unwrap()), "{address}");
        }
    }

    #[test]
    fn client_id_urls_are_https_canonical_and_public() {
        let check = |url: &str, ok: bool| {
            assert_eq!(check_client_id(url, false).is_ok(), ok, "{url}");
        };
        check("https://app.example/oauth/client.json", true);
        check("https://app.example:8443/client", true);
        check("http://app.example/client.json", false);
        check("https://app.example/", false);
        check("https://app.example", false);
        check("https://app.example/client?x=1", false);
        check("https://app.example/client#x", false);
        check("https://user:pw@app.example/client", false);
        check("https://app.example/a/../client", false);
        check("https://APP.example/client", false);
        check("https://app.example:443/client", false);
        check("https://127.0.0.1/client", false);
        check("https://[::1]/client", false);
        check("https://10.0.0.7:8443/client", false);
        check("https://169.254.169.254/latest/meta-data", false);
        check("https://[::ffff:7f00:1]/client", false);
        check(&format!("https://app.example/{}", "a".repeat(2_100)), false);
        assert!(check_client_id("https://127.0.0.1:9/client", true).is_ok());
    }

    #[test]
    fn documents_name_themselves_and_hold_no_secret() {
        let id = "https://app.example/client.json";
        let good = json!({
            "client_id": id,
            "client_name": "App",
            "redirect_uris": ["http://127.0.0.1/callback"],
        });
        let document = parse_document(id, &good).unwrap();
        assert_eq!(document.client_name, "App");
        let mut unnamed = good.clone();
        unnamed.as_object_mut().unwrap().remove("client_name");
        assert_eq!(
            parse_document(id, &unnamed).unwrap().client_name,
            "app.example"
        );
        let refused = |change: &dyn Fn(&mut Value)| {
            let mut document = good.clone();
            change(&mut document);
            parse_document(id, &document).unwrap_err()
        };
        assert!(
            refused(&|d| d["client_id"] = json!("https://evil.example/client.json"))
                .contains("own URL")
        );
        assert!(refused(&|d| d["client_secret"] = json!("s")).contains("secret"));
        assert!(
            refused(&|d| d["token_endpoint_auth_method"] = json!("client_secret_basic"))
                .contains("PKCE")
        );
        assert!(
            refused(&|d| d["redirect_uris"] = json!(["http://evil.example/cb"]))
                .contains("loopback")
        );
        assert!(refused(&|d| d["grant_types"] = json!(["password"])).contains("grant_types"));
        assert!(parse_document(id, &json!([1])).is_err());
    }

    #[test]
    fn cache_lifetimes_follow_max_age_within_bounds() {
        let lifetime = |value: &str| {
            let mut headers = header::HeaderMap::new();
            headers.insert(header::CACHE_CONTROL, value.parse().unwrap());
            cache_lifetime(&headers)
        };
        assert_eq!(cache_lifetime(&header::HeaderMap::new()), DEFAULT_CACHE);
        assert_eq!(lifetime("public, max-age=600"), Duration::from_secs(600));
        assert_eq!(lifetime("max-age=1"), MIN_CACHE);
        assert_eq!(lifetime("max-age=999999"), MAX_CACHE);
        assert_eq!(lifetime("no-store"), MIN_CACHE);
    }
}
