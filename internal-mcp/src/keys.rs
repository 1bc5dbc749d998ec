//! Asymmetric credential keys (Ed25519, JWT `alg` EdDSA): internal-mcp holds only a set of public
//! keys chosen by `kid` (a JWKS document), and each internal caller its own private key (a PKCS#8
//! PEM file, as `openssl genpkey -algorithm ed25519` writes it, or as `internal-mcp keygen` does).
//! Anything that can verify can then no longer mint.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use serde_json::json;

use crate::error::Error;

/// The fixed DER prefix of an Ed25519 private key in PKCS#8 v1 (RFC 8410): the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const PEM_LABEL: &str = "PRIVATE KEY";

/// An Ed25519 private key with the `kid` its public half is published under. Never printed.
#[derive(Clone)]
pub struct PrivateKey {
    pub kid: String,
    pkcs8_der: Arc<[u8]>,
}

/// The public keys credentials may be signed with, by `kid`.
#[derive(Clone, Default)]
pub struct PublicKeySet {
    keys: Arc<HashMap<String, DecodingKey>>,
}

impl PrivateKey {
    /// Reads a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem(kid: &str, pem: &str) -> Result<Self, Error> {
        let body: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|line| *line != format!("-----BEGIN {PEM_LABEL}-----"))
            .skip(1)
            .take_while(|line| *line != format!("-----END {PEM_LABEL}-----"))
            .collect();
        let der = STANDARD
            .decode(body.as_bytes())
            .map_err(|_| Error::Startup("the private key file is not a PEM PRIVATE KEY".into()))?;
        if der.len() != 48 || der[..16] != PKCS8_ED25519_PREFIX {
            return Err(Error::Startup(
                "the private key file does not hold an Ed25519 key (PKCS#8)".into(),
            ));
        }
        if kid.trim().is_empty() {
            return Err(Error::Startup("a private key needs a kid".into()));
        }
        Ok(Self {
            kid: kid.to_owned(),
            pkcs8_der: der.into(),
        })
    }

    /// A new random key.
    pub fn generate(kid: &str) -> Result<Self, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|error| Error::Startup(format!("no randomness for a key: {error}")))?;
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        Ok(Self {
            kid: kid.to_owned(),
            pkcs8_der: der.into(),
        })
    }

    /// The key as PKCS#8 DER, as jsonwebtoken's `EncodingKey::from_ed_der` takes it.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8_der
    }

    /// The key as a PEM file's text.
    pub fn to_pem(&self) -> String {
        let encoded = STANDARD.encode(&self.pkcs8_der);
        format!("-----BEGIN {PEM_LABEL}-----\n{encoded}\n-----END {PEM_LABEL}-----\n")
    }

    /// The public half as a JWK (`kty` OKP, `crv` Ed25519), for the server's key set.
    pub fn public_jwk(&self) -> serde_json::Value {
        let seed: [u8; 32] = self.pkcs8_der[16..].try_into().unwrap_or([0; 32]);
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(public),
        })
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "PrivateKey({}, ..)", self.kid)
    }
}

impl PublicKeySet {
    /// Reads a JWKS document: `{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": ..., "x": ...}]}`.
    /// Every key needs a distinct `kid`; keys of other types are refused.
    pub fn from_jwks(document: &str) -> Result<Self, Error> {
        let set: JwkSet = serde_json::from_str(document).map_err(|error| {
            Error::Startup(format!("the public key set is not a JWKS: {error}"))
        })?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone().filter(|kid| !kid.is_empty()) else {
                return Err(Error::Startup("every public key needs a kid".into()));
            };
            if !matches!(
                &jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(parameters)
                    if parameters.curve == jsonwebtoken::jwk::EllipticCurve::Ed25519
            ) {
                return Err(Error::Startup(format!(
                    "public key {kid} is not an Ed25519 key (kty OKP, crv Ed25519)"
                )));
            }
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|error| Error::Startup(format!("public key {kid}: {error}")))?;
            if keys.insert(kid.clone(), key).is_some() {
                return Err(Error::Startup(format!(
                    "two public keys share the kid {kid}"
                )));
            }
        }
        Ok(Self {
            keys: Arc::new(keys),
        })
    }

    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }
}

impl fmt::Debug for PublicKeySet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PublicKeySet")
            .field("kids", &self.kids())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pem_and_jwks() {
        let key = PrivateKey::generate("internal-host-1").unwrap();
        let again = PrivateKey::from_pem("internal-host-1", &key.to_pem()).unwrap();
        assert_eq!(again.pkcs8_der(), key.pkcs8_der());
        assert!(!format!("{key:?}").contains(&key.to_pem()));
        let set =
            PublicKeySet::from_jwks(&json!({ "keys": [key.public_jwk()] }).to_string()).unwrap();
        assert_eq!(set.kids(), ["internal-host-1"]);
        assert!(
            PrivateKey::from_pem(
                "k",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
            )
            .is_err()
        );
        let duplicated = json!({ "keys": [key.public_jwk(), key.public_jwk()] }).to_string();
        assert!(PublicKeySet::from_jwks(&duplicated).is_err());
    }
}
