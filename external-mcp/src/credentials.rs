//! Whose API token a call uses, and what that token may do.
//!
//! - stdio: one user, whose token comes from the environment or from a file that is read again
//!   whenever it changes (so a rotated token works without a restart).
//! - HTTP: every request brings its caller's own token in `Authorization`; the HTTP layer validates
//!   it and hands it to the tools through the request's extensions, so two users never share one.
//!
//! Tokens are wrapped in [`ApiToken`], which never prints; caches are keyed by the token's SHA-256
//! digest, never by the token itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, Me};
use crate::config::TokenSource;
use crate::error::Error;

/// An API token. It never shows in `Debug` output, logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

/// The SHA-256 digest of a token: what caches and session bindings are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

/// Who a validated token belongs to and what it may do, from `GET /api/v1/me`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_name: String,
    pub user_email: String,
    pub role: String,
    pub organization_slug: String,
    pub organization_name: String,
    /// The token's effective scopes: `read`, `write`, `admin`.
    pub scopes: Vec<String>,
}

/// The caller of one request: their token and who it belongs to.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: ApiToken,
    pub identity: Identity,
}

/// The stdio transport's token: from the configuration, or from a file re-read when it changes.
#[derive(Debug)]
pub struct StdioCredentials {
    source: TokenSource,
    /// The file as last read.
    file_state: Mutex<Option<TokenFileState>>,
}

/// A token file's modification time and length when it was read, and what it held then.
#[derive(Debug, Clone)]
struct TokenFileState {
    modified: Option<SystemTime>,
    length: u64,
    token: Result<ApiToken, String>,
}

/// Recently validated tokens, so a burst of calls costs one `GET /api/v1/me`.
#[derive(Debug)]
pub struct IdentityCache {
    time_to_live: Duration,
    entries: Mutex<HashMap<TokenDigest, (Instant, Identity)>>,
}

/// Above this many cached identities, expired ones are dropped (and all of them if none expired).
const MAX_CACHED_IDENTITIES: usize = 10_000;

impl ApiToken {
    /// The token itself, for the one place that must send it: the API request's header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> TokenDigest {
        TokenDigest(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl FromStr for ApiToken {
    type Err = String;

    /// Accepts visible ASCII (surrounding whitespace trimmed), as the API's tokens are.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let token = text.trim();
        if token.is_empty() {
            return Err("the API token is empty".into());
        }
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err("the API token must be visible ASCII characters without spaces".into());
        }
        Ok(Self(token.to_owned()))
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ApiToken(<redacted>)")
    }
}

impl TokenDigest {
    /// The SHA-256 digest of any text (a session owner that is not a token).
    pub fn of(text: &str) -> Self {
        Self(Sha256::digest(text.as_bytes()).into())
    }

    /// A short, non-reversible label for logs: the first 8 hex digits of the digest.
    pub fn short(&self) -> String {
        self.0[..4]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

impl Identity {
    pub fn from_me(me: Me) -> Self {
        Self {
            user_name: me.user.name,
            user_email: me.user.email,
            role: me.user.role,
            organization_slug: me.organization.slug,
            organization_name: me.organization.name,
            scopes: me.token.scopes,
        }
    }

    /// Whether the token may change things (open, acknowledge, resolve incidents, add notes).
    pub fn can_write(&self) -> bool {
        self.scopes
            .iter()
            .any(|scope| scope == "write" || scope == "admin")
    }
}

impl StdioCredentials {
    pub fn new(source: TokenSource) -> Self {
        Self {
            source,
            file_state: Mutex::new(None),
        }
    }

    /// The token to use now. A token file is read again when its modification time or length
    /// changed since the last read.
    pub fn current(&self) -> Result<ApiToken, Error> {
        match &self.source {
            TokenSource::Fixed(Some(token)) => Ok(token.clone()),
            TokenSource::Fixed(None) => Err(Error::NoToken),
            TokenSource::File(path) => self.read_file(path),
        }
    }

    fn read_file(&self, path: &PathBuf) -> Result<ApiToken, Error> {
        let unreadable = |detail: String| Error::TokenFileUnreadable {
            path: path.display().to_string(),
            detail,
        };
        let metadata = std::fs::metadata(path).map_err(|error| unreadable(error.to_string()))?;
        let modified = metadata.modified().ok();
        let length = metadata.len();
        let mut state = self
            .file_state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(seen) = state.as_ref()
            && seen.modified == modified
            && seen.length == length
        {
            return seen.token.clone().map_err(unreadable);
        }
        let token = std::fs::read_to_string(path)
            .map_err(|error| error.to_string())
            .and_then(|text| text.parse::<ApiToken>());
        if token.is_ok() {
            tracing::info!(path = %path.display(), "read the API token file");
        }
        *state = Some(TokenFileState {
            modified,
            length,
            token: token.clone(),
        });
        token.map_err(unreadable)
    }
}

impl IdentityCache {
    pub fn new(time_to_live: Duration) -> Self {
        Self {
            time_to_live,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, digest: &TokenDigest) -> Option<Identity> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(digest)
            .filter(|(stored_at, _)| stored_at.elapsed() < self.time_to_live)
            .map(|(_, identity)| identity.clone())
    }

    fn put(&self, digest: TokenDigest, identity: Identity) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= MAX_CACHED_IDENTITIES {
            entries.retain(|_, (stored_at, _)| stored_at.elapsed() < self.time_to_live);
            if entries.len() >= MAX_CACHED_IDENTITIES {
                entries.clear();
            }
        }
        entries.insert(digest, (Instant::now(), identity));
    }

    /// Forgets a token, e.g. after the API rejected it.
    pub fn forget(&self, digest: &TokenDigest) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.remove(digest);
    }

    /// Who `token` belongs to: from the cache, or asked of the API (`GET /api/v1/me`). A rejected
    /// token is [`Error::TokenRejected`]; an unreachable API is its own error, not a rejection.
    pub async fn validate(
        &self,
        api: &ApiClient,
        token: &ApiToken,
        cancel: &CancellationToken,
    ) -> Result<Identity, Error> {
        let digest = token.digest();
        if let Some(identity) = self.get(&digest) {
            return Ok(identity);
        }
        let me = api.me(token, cancel).await?;
        let identity = Identity::from_me(me);
        tracing::debug!(token = %digest.short(), organization = %identity.organization_slug, "token validated");
        self.put(digest, identity.clone());
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_and_checked() {
        let check = |text: &str, expected: Option<&str>| {
            let parsed = text.parse::<ApiToken>().ok();
            assert_eq!(parsed.as_ref().map(ApiToken::expose), expected, "{text:?}");
        };
        check("dmo_abc\n", Some("dmo_abc"));
        check("  dmo_abc  ", Some("dmo_abc"));
        check("", None);
        check("dmo abc", None);
        check("dmo_é", None);
    }

    #[test]
    fn a_token_file_is_read_again_when_it_changes() {
        let directory =
            std::env::temp_dir().join(format!("external-mcp-token-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("token");
        std::fs::write(&path, "dmo_first\n").unwrap();
        let credentials = StdioCredentials::new(TokenSource::File(path.clone()));
        assert_eq!(credentials.current().unwrap().expose(), "dmo_first");
        std::fs::write(&path, "dmo_second_longer\n").unwrap();
        assert_eq!(credentials.current().unwrap().expose(), "dmo_second_longer");
        std::fs::remove_file(&path).unwrap();
        let error = credentials.current().unwrap_err().to_string();
        assert!(error.contains("token file"), "{error}");
        std::fs::remove_dir_all(&directory).ok();
    }

    #[test]
    fn no_token_is_an_error_that_says_so() {
        let credentials = StdioCredentials::new(TokenSource::Fixed(None));
        assert!(matches!(credentials.current(), Err(Error::NoToken)));
    }
}
