//! Who may call internal-mcp: internal services presenting a short-lived service credential, a JWT
//! naming the acting end user, their organisation and role. It is signed with EdDSA (Ed25519) by
//! the caller's own private key, chosen by the header's `kid` among the configured public keys
//! (see `keys`), or, while a deployment still has one configured, with HS256 and the shared key.
//! A credential with `"once": true` is single-use: the first request that acts with it (anything
//! but [setting up a session](SET_UP_METHODS), so an MCP client can connect before its one call)
//! records its `jti`, and a replay is refused.
//!
//! [`require_service_credential`] runs before the MCP service on every request: a missing, malformed,
//! expired, forged, wrong-audience or untrusted-issuer credential, or one naming a user who is not a
//! member of that organisation, gets HTTP 401 and never reaches a tool. Nothing falls back to
//! anonymous access. A verified request carries a [`Caller`] in its extensions; tools read it from
//! there. The caller's role is the lower of the credential's and the user's current one (see
//! [`crate::roles`]), so a demoted user's credential loses its power moments after the change
//! commits.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use demo_backend::domain::kinds::Role;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::{AUDIENCE, CredentialPolicy, MAX_REQUEST_BODY_BYTES, SigningKey};
use crate::error::Error;
use crate::keys::{PrivateKey, PublicKeySet};
use crate::roles::Roles;

/// Longer bearer values are refused before any parsing.
const MAX_CREDENTIAL_BYTES: usize = 4096;

/// The claims of a service credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who minted it, e.g. `internal-host`; must be a trusted issuer.
    pub iss: String,
    /// The acting end user's id (`users.id`).
    pub sub: Uuid,
    /// Must be `internal-mcp`.
    pub aud: String,
    /// The acting user's organisation (`organizations.id`).
    pub org: Uuid,
    /// The role the issuer grants; the user's own role caps it.
    pub role: Role,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch; at most the configured lifetime after `iat`.
    pub exp: i64,
    /// A unique id, recorded in the audit trail.
    pub jti: String,
    /// Single-use: the first request that acts with it records the `jti`, any later one is
    /// refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub once: bool,
}

/// A verified caller, as tools see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    pub organization_id: Uuid,
    /// The lower of the credential's role and the user's current role.
    pub role: Role,
    /// The credential's `jti`.
    pub credential_id: String,
    pub issuer: String,
}

/// Checks credentials against the policy and the users' current roles. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    verifier: CredentialVerifier,
    /// The privileged pool: single-use credentials are recorded there.
    database: PgPool,
    roles: Roles,
}

/// Signature and claim checks, without the database.
#[derive(Clone)]
pub struct CredentialVerifier {
    /// The HS256 key, if HS256 is still accepted.
    shared_key: Option<DecodingKey>,
    public_keys: PublicKeySet,
    shared_validation: Validation,
    public_validation: Validation,
    max_lifetime_seconds: i64,
    leeway_seconds: i64,
}

/// What the `token` command (and tests) ask to be minted.
#[derive(Debug, Clone)]
pub struct CredentialRequest {
    pub issuer: String,
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub role: Role,
    pub lifetime: Duration,
    /// Mint it single-use (`once`).
    pub single_use: bool,
}

impl Authenticator {
    pub fn new(policy: &CredentialPolicy, database: PgPool, roles: Roles) -> Self {
        Self {
            verifier: CredentialVerifier::new(policy),
            database,
            roles,
        }
    }

    /// Verifies the `Authorization: Bearer` credential of the request `parts`, spends it when it
    /// is single-use and the request acts (read from `body`, which comes back unchanged), and
    /// puts the [`Caller`] it names in the request's extensions.
    async fn admit(&self, parts: &mut Parts, body: Body) -> Result<Body, Refusal> {
        let claims = self.verifier.verify(bearer_token(&parts.headers)?)?;
        let body = if claims.once {
            let (body, acts) = acts_with_credential(body).await?;
            if acts {
                self.spend(&claims).await?;
            }
            body
        } else {
            body
        };
        let caller = self.caller(claims).await?;
        parts.extensions.insert(caller);
        Ok(body)
    }

    /// Records a single-use credential's `jti`, refusing one already recorded. Kept until the
    /// credential expires (plus the leeway); the purge drops it after.
    async fn spend(&self, claims: &Claims) -> Result<(), Error> {
        let recorded = sqlx::query(
            "INSERT INTO internal_mcp_used_credentials (jti, expires_at)
             VALUES ($1, to_timestamp($2) + interval '1 minute') ON CONFLICT (jti) DO NOTHING",
        )
        .bind(&claims.jti)
        .bind(claims.exp as f64)
        .execute(&self.database)
        .await?;
        if recorded.rows_affected() == 0 {
            return Err(Error::Unauthenticated(
                "the credential is single-use and was already used".into(),
            ));
        }
        Ok(())
    }

    /// The caller a verified credential names, with the lower of its role and the user's current
    /// one.
    async fn caller(&self, claims: Claims) -> Result<Caller, Error> {
        let Some(user_role) = self.roles.role_of(claims.org, claims.sub).await? else {
            return Err(Error::Unauthenticated(
                "the credential names a user who is not a member of that organisation".into(),
            ));
        };
        Ok(Caller {
            user_id: claims.sub,
            organization_id: claims.org,
            role: claims.role.min(user_role),
            credential_id: claims.jti,
            issuer: claims.iss,
        })
    }
}

impl CredentialVerifier {
    pub fn new(policy: &CredentialPolicy) -> Self {
        // One algorithm per key kind: a credential declaring any other (`none`, RS256 with the
        // shared key as a "public key", HS256 against a public key, ...) is refused before its
        // signature is looked at.
        let validation = |algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.set_audience(&[AUDIENCE]);
            validation.set_issuer(&policy.trusted_issuers);
            validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
            validation.leeway = policy.clock_leeway.as_secs();
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation
        };
        Self {
            shared_key: policy
                .signing_key
                .as_ref()
                .map(|key| DecodingKey::from_secret(key.bytes())),
            public_keys: policy.public_keys.clone(),
            shared_validation: validation(Algorithm::HS256),
            public_validation: validation(Algorithm::EdDSA),
            max_lifetime_seconds: i64::try_from(policy.max_lifetime.as_secs()).unwrap_or(i64::MAX),
            leeway_seconds: i64::try_from(policy.clock_leeway.as_secs()).unwrap_or(0),
        }
    }

    /// The claims of a valid credential, or why it is not one.
    pub fn verify(&self, token: &str) -> Result<Claims, Error> {
        if token.len() > MAX_CREDENTIAL_BYTES {
            return Err(Error::Unauthenticated("the credential is too long".into()));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| Error::Unauthenticated(explain_rejection(error.kind())))?;
        let (key, validation) = match header.alg {
            Algorithm::EdDSA => {
                let Some(kid) = header.kid.as_deref() else {
                    return Err(Error::Unauthenticated(
                        "an EdDSA credential must name its key (kid)".into(),
                    ));
                };
                let Some(key) = self.public_keys.get(kid) else {
                    return Err(Error::Unauthenticated(format!(
                        "the credential's key {kid:?} is not one this server trusts"
                    )));
                };
                (key, &self.public_validation)
            }
            Algorithm::HS256 => match &self.shared_key {
                Some(key) => (key, &self.shared_validation),
                None => {
                    return Err(Error::Unauthenticated(
                        "this server accepts only EdDSA credentials signed by a key it knows (kid)"
                            .into(),
                    ));
                }
            },
            _ => {
                return Err(Error::Unauthenticated(
                    "only EdDSA (or, where configured, HS256) credentials are accepted".into(),
                ));
            }
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|error| Error::Unauthenticated(explain_rejection(error.kind())))?
            .claims;
        let now = Utc::now().timestamp();
        if claims.iat > now + self.leeway_seconds {
            return Err(Error::Unauthenticated(
                "the credential was issued in the future (iat)".into(),
            ));
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime_seconds {
            return Err(Error::Unauthenticated(format!(
                "the credential lives longer than the {} seconds allowed (exp - iat)",
                self.max_lifetime_seconds
            )));
        }
        if claims.jti.trim().is_empty() || claims.jti.len() > 200 {
            return Err(Error::Unauthenticated(
                "the credential needs a jti of 1 to 200 characters".into(),
            ));
        }
        Ok(claims)
    }
}

/// Signs a credential for `request` with `key`. Used by the `token` command and by tests; the
/// product's assistant mints its own with the same claims.
pub fn mint_credential(key: &SigningKey, request: &CredentialRequest) -> Result<String, Error> {
    let claims = claims_for(request);
    sign_claims(key, &claims)
}

/// The claims of a new credential for `request`, issued now, with a fresh `jti`.
fn claims_for(request: &CredentialRequest) -> Claims {
    let issued_at = Utc::now().timestamp();
    let lifetime = i64::try_from(request.lifetime.as_secs()).unwrap_or(i64::MAX);
    Claims {
        iss: request.issuer.clone(),
        sub: request.user_id,
        aud: AUDIENCE.to_owned(),
        org: request.organization_id,
        role: request.role,
        iat: issued_at,
        exp: issued_at.saturating_add(lifetime),
        jti: Uuid::new_v4().to_string(),
        once: request.single_use,
    }
}

/// Signs a credential for `request` with an Ed25519 private key (EdDSA, its `kid` in the header).
pub fn mint_ed25519_credential(
    key: &PrivateKey,
    request: &CredentialRequest,
) -> Result<String, Error> {
    let claims = claims_for(request);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(key.pkcs8_der()))
        .map_err(|error| Error::Startup(format!("could not sign the credential: {error}")))
}

/// Signs arbitrary claims with HS256 (tests use it to build bad credentials too).
pub fn sign_claims<T: Serialize>(key: &SigningKey, claims: &T) -> Result<String, Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(key.bytes()),
    )
    .map_err(|error| Error::Startup(format!("could not sign the credential: {error}")))
}

/// The JSON-RPC methods that set up a session or list what it offers. They do not spend a
/// single-use credential, so an MCP client can initialize and list the tools before the one call
/// the credential is for. Any other request spends it: a tool call, a resource read, a request
/// that is not one JSON-RPC message naming its method.
pub const SET_UP_METHODS: [&str; 7] = [
    "initialize",
    "notifications/initialized",
    "ping",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "prompts/list",
];

/// Why a request was not admitted: a credential problem (401 with a challenge), or a body that
/// could not be read to see whether it spends a single-use credential.
#[derive(Debug)]
enum Refusal {
    Credential(Error),
    Body(Response),
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Self {
        Refusal::Credential(error)
    }
}

/// Whether a request acts (and so spends a single-use credential), read from the JSON-RPC method
/// in its `body`. The body is read, up to the transport's own limit, and given back unchanged.
async fn acts_with_credential(body: Body) -> Result<(Body, bool), Refusal> {
    #[derive(Deserialize)]
    struct Message {
        method: String,
    }
    let bytes = axum::body::to_bytes(body, MAX_REQUEST_BODY_BYTES)
        .await
        .map_err(|_| {
            Refusal::Body(
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is unreadable or over {MAX_REQUEST_BODY_BYTES} bytes\n"
                    ),
                )
                    .into_response(),
            )
        })?;
    let sets_up = serde_json::from_slice::<Message>(&bytes)
        .is_ok_and(|message| SET_UP_METHODS.contains(&message.method.as_str()));
    Ok((Body::from(bytes), !sets_up))
}

/// The axum middleware in front of every MCP endpoint: 401 unless the credential is valid, and the
/// verified [`Caller`] in the request's extensions otherwise.
pub async fn require_service_credential(
    State(authenticator): State<Authenticator>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    match authenticator.admit(&mut parts, body).await {
        Ok(body) => next.run(Request::from_parts(parts, body)).await,
        Err(Refusal::Credential(error)) => {
            tracing::warn!(reason = %error, path = %parts.uri.path(), "refused a request without a valid credential");
            error.into_response()
        }
        Err(Refusal::Body(response)) => response,
    }
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, Error> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Error::Unauthenticated(
            "a service credential is required: send exactly one `Authorization: Bearer <credential>` header".into(),
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthenticated("the Authorization header is not valid text".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Error::Unauthenticated(
            "the Authorization header must use the Bearer scheme".into(),
        )),
    }
}

fn explain_rejection(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the credential has expired".into(),
        ErrorKind::ImmatureSignature => "the credential is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "the credential's signature does not verify".into(),
        ErrorKind::InvalidAudience => format!("the credential is not meant for this server (aud must be {AUDIENCE})"),
        ErrorKind::InvalidIssuer => "the credential's issuer (iss) is not trusted".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            "only EdDSA (or, where configured, HS256) credentials are accepted".into()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("the credential lacks the `{claim}` claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the credential's `{claim}` claim is malformed"),
        ErrorKind::Json(_) => {
            "the credential is malformed: it needs an EdDSA (or HS256) header and iss, sub, aud, org, role, iat, exp and jti claims".into()
        }
        _ => "the credential is malformed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CredentialPolicy {
        CredentialPolicy::new(SigningKey::new(vec![7; 32]).unwrap())
    }

    fn request(lifetime: u64) -> CredentialRequest {
        CredentialRequest {
            issuer: "internal-host".into(),
            user_id: Uuid::new_v4(),
            organization_id: Uuid::new_v4(),
            role: Role::Responder,
            lifetime: Duration::from_secs(lifetime),
            single_use: false,
        }
    }

    fn shared_key() -> SigningKey {
        policy().signing_key.expect("a shared key")
    }

    fn check(token: &str, expected_reason: &str) {
        let verifier = CredentialVerifier::new(&policy());
        match verifier.verify(token) {
            Err(Error::Unauthenticated(reason)) => {
                assert!(reason.contains(expected_reason), "{reason}")
            }
            other => panic!("expected a refusal containing {expected_reason:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_minted_credential_verifies() {
        let token = mint_credential(&shared_key(), &request(300)).unwrap();
        let claims = CredentialVerifier::new(&policy()).verify(&token).unwrap();
        assert_eq!(claims.aud, "internal-mcp");
        assert_eq!(claims.role, Role::Responder);
    }

    #[test]
    fn bad_credentials_are_refused_with_a_reason() {
        let key = shared_key();
        let now = Utc::now().timestamp();
        let claims = |iss: &str, aud: &str, iat: i64, exp: i64| {
            serde_json::json!({
                "iss": iss, "sub": Uuid::new_v4(), "aud": aud, "org": Uuid::new_v4(),
                "role": "admin", "iat": iat, "exp": exp, "jti": "x"
            })
        };
        check(
            &sign_claims(
                &key,
                &claims("internal-host", "internal-mcp", now - 900, now - 600),
            )
            .unwrap(),
            "expired",
        );
        check(
            &sign_claims(
                &key,
                &claims("internal-host", "external-mcp", now, now + 60),
            )
            .unwrap(),
            "aud must be",
        );
        check(
            &sign_claims(&key, &claims("somebody", "internal-mcp", now, now + 60)).unwrap(),
            "issuer",
        );
        check(
            &sign_claims(
                &key,
                &claims("internal-host", "internal-mcp", now, now + 3600),
            )
            .unwrap(),
            "longer than",
        );
        check(
            &sign_claims(
                &key,
                &claims("internal-host", "internal-mcp", now + 600, now + 660),
            )
            .unwrap(),
            "future",
        );
        let other_key = SigningKey::new(vec![8; 32]).unwrap();
        check(
            &sign_claims(
                &other_key,
                &claims("internal-host", "internal-mcp", now, now + 60),
            )
            .unwrap(),
            "signature",
        );
        check("not.a.jwt", "malformed");
        check(&"a".repeat(5000), "too long");
    }

    #[test]
    fn eddsa_credentials_verify_by_kid_and_nothing_else_does() {
        let key = PrivateKey::generate("host-1").unwrap();
        let stranger = PrivateKey::generate("host-1").unwrap();
        let mut public_only = policy();
        public_only.signing_key = None;
        public_only.public_keys =
            PublicKeySet::from_jwks(&serde_json::json!({ "keys": [key.public_jwk()] }).to_string())
                .unwrap();
        let verifier = CredentialVerifier::new(&public_only);
        let mut single = request(300);
        single.single_use = true;
        let claims = verifier
            .verify(&mint_ed25519_credential(&key, &single).unwrap())
            .unwrap();
        assert!(claims.once);
        let refusal = |token: &str| match verifier.verify(token) {
            Err(Error::Unauthenticated(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        // Same kid, another private key: the signature does not verify.
        assert!(
            refusal(&mint_ed25519_credential(&stranger, &request(60)).unwrap())
                .contains("signature")
        );
        let unknown = PrivateKey::generate("host-2").unwrap();
        assert!(
            refusal(&mint_ed25519_credential(&unknown, &request(60)).unwrap())
                .contains("not one this server trusts")
        );
        // With no shared key configured, HS256 is refused whatever key signed it.
        assert!(
            refusal(&mint_credential(&shared_key(), &request(60)).unwrap()).contains("only EdDSA")
        );
        // The ten-minute cap holds for EdDSA too.
        assert!(
            refusal(&mint_ed25519_credential(&key, &request(3600)).unwrap())
                .contains("longer than")
        );
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(SigningKey::new(vec![1; 31]).is_err());
        assert_eq!(
            format!("{:?}", SigningKey::new(vec![1; 32]).unwrap()),
            "SigningKey(..)"
        );
    }
}
