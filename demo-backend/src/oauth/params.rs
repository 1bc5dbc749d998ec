//! Request parameters of the OAuth endpoints (query strings and form bodies), where a parameter
//! given twice is an error (RFC 6749 section 3.1), and PKCE's S256 check (RFC 7636).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::Extensions;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::error::OAuthError;

/// Parameters by name, in the order given.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The one value of `name`, if given; given twice is `invalid_request`. An empty value counts
    /// as absent (RFC 6749 section 3.1).
    pub fn single(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut values = self
            .0
            .iter()
            .filter(|(key, value)| key == name && !value.is_empty());
        let first = values.next().map(|(_, value)| value.as_str());
        if values.next().is_some() {
            return Err(OAuthError::invalid_request(format!(
                "the parameter `{name}` is given more than once"
            )));
        }
        Ok(first)
    }

    /// The value of `name`, which must be given once.
    pub fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.single(name)?.ok_or_else(|| {
            OAuthError::invalid_request(format!("the parameter `{name}` is missing"))
        })
    }

    /// Every value of `name` (for repeated form fields such as check boxes).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

/// The query string's parameters.
#[derive(Debug)]
pub struct QueryParams(pub Params);

/// An `application/x-www-form-urlencoded` body's parameters.
#[derive(Debug)]
pub struct FormParams(pub Params);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = OAuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs = url::form_urlencoded::parse(query.as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        Ok(Self(Params(pairs)))
    }
}

impl<S: Send + Sync> FromRequest<S> for FormParams {
    type Rejection = OAuthError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value.split(';').next().is_some_and(|kind| {
                    kind.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        if !is_form {
            return Err(OAuthError::invalid_request(
                "send the parameters as application/x-www-form-urlencoded",
            ));
        }
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|_| {
                OAuthError::invalid_request("the request body is too large or unreadable")
            })?;
        let pairs = url::form_urlencoded::parse(&body)
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        Ok(Self(Params(pairs)))
    }
}

/// Whether `text` is a well-formed PKCE code verifier or challenge: 43 to 128 unreserved
/// characters (RFC 7636 section 4.1).
pub fn is_pkce_value(text: &str) -> bool {
    (43..=128).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~'))
}

/// Whether `verifier` hashes (S256) to `challenge`.
pub fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    if !is_pkce_value(verifier) {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    constant_time_equal(computed.as_bytes(), challenge.as_bytes())
}

/// Compares without an early exit, for secrets and digests.
pub fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

/// The address of the peer, when the server was started with connect info.
pub fn client_address(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7636_example_verifies() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(verifier_matches(verifier, challenge));
        assert!(!verifier_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
        assert!(!verifier_matches("short", challenge));
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let params = Params(vec![
            ("a".into(), "1".into()),
            ("a".into(), "2".into()),
            ("b".into(), "".into()),
        ]);
        assert!(params.single("a").is_err());
        assert_eq!(params.single("b").unwrap(), None);
        assert!(params.required("c").is_err());
    }
}
