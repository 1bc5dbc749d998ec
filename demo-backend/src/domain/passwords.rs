//! Users' passwords, for signing in to the product's authorization server: Argon2id hashes only
//! (PHC strings), verified off the async runtime because Argon2id is deliberately slow.

use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::kinds::Role;
use crate::domain::{DomainError, Secret};

/// Shorter passwords are refused when set.
pub const MINIMUM_PASSWORD_CHARACTERS: usize = 12;
/// Longer ones are refused outright, so hashing cost stays bounded.
pub const MAXIMUM_PASSWORD_BYTES: usize = 1024;

/// A user who proved their password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedInUser {
    pub organization_id: Uuid,
    pub organization_slug: String,
    pub organization_name: String,
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
}

/// The Argon2id PHC string of `password`, with a fresh random salt.
pub fn hash(password: &str) -> String {
    password_auth::generate_hash(password)
}

/// Whether `password` is acceptable as a new password.
pub fn check_new(password: &str) -> Result<(), DomainError> {
    if password.chars().count() < MINIMUM_PASSWORD_CHARACTERS {
        return Err(DomainError::invalid(
            "password",
            format!("use at least {MINIMUM_PASSWORD_CHARACTERS} characters"),
        ));
    }
    if password.len() > MAXIMUM_PASSWORD_BYTES {
        return Err(DomainError::invalid(
            "password",
            format!("use at most {MAXIMUM_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A random password of 24 characters from 31 unambiguous letters and digits (about 119 bits),
/// in groups of six for reading aloud: `k7qm2x-...`.
pub fn generate() -> Secret {
    const ALPHABET: &[u8; 31] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    let letters: Vec<char> = bytes
        .iter()
        .map(|byte| ALPHABET[usize::from(*byte) % ALPHABET.len()] as char)
        .collect();
    let groups: Vec<String> = letters
        .chunks(6)
        .map(|group| group.iter().collect())
        .collect();
    Secret::new(groups.join("-"))
}

/// Sets (or replaces) the password of a user, named by organisation slug and e-mail.
pub async fn set(
    db: &PgPool,
    organization_slug: &str,
    email: &str,
    password: &str,
) -> Result<(), DomainError> {
    check_new(password)?;
    let user: Option<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT u.organization_id, u.id FROM users u JOIN organizations o ON o.id = u.organization_id
          WHERE o.slug = $1 AND u.email = $2",
    )
    .bind(organization_slug)
    .bind(email)
    .fetch_optional(db)
    .await?;
    let Some((organization_id, user_id)) = user else {
        return Err(DomainError::NotFound(format!(
            "no user {email} in organisation {organization_slug}"
        )));
    };
    let password = password.to_owned();
    let password_hash = tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|error| DomainError::Database(sqlx::Error::Protocol(error.to_string())))?;
    sqlx::query(
        "INSERT INTO user_passwords (organization_id, user_id, password_hash) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now()",
    )
    .bind(organization_id)
    .bind(user_id)
    .bind(password_hash)
    .execute(db)
    .await?;
    Ok(())
}

/// The user named by organisation slug and e-mail, if `password` is theirs. Unknown users and
/// users without a password cost one Argon2id verification too, so timing does not tell them
/// apart from a wrong password.
pub async fn verify(
    db: &PgPool,
    organization_slug: &str,
    email: &str,
    password: &str,
) -> Result<Option<SignedInUser>, DomainError> {
    if password.is_empty() || password.len() > MAXIMUM_PASSWORD_BYTES {
        return Ok(None);
    }
    let row: Option<UserRow> = sqlx::query_as(
        "SELECT o.id AS organization_id, o.slug, o.name AS organization_name, u.id AS user_id,
                u.email, u.name, u.role, p.password_hash
           FROM users u
           JOIN organizations o ON o.id = u.organization_id
           LEFT JOIN user_passwords p ON p.user_id = u.id AND p.organization_id = u.organization_id
          WHERE o.slug = $1 AND u.email = $2",
    )
    .bind(organization_slug)
    .bind(email)
    .fetch_optional(db)
    .await?;
    let stored = row
        .as_ref()
        .and_then(|row| row.password_hash.clone())
        .unwrap_or_else(|| DUMMY_HASH.with(Clone::clone));
    let presented = password.to_owned();
    let matches = tokio::task::spawn_blocking(move || {
        password_auth::verify_password(presented, &stored).is_ok()
    })
    .await
    .unwrap_or(false);
    let Some(row) = row.filter(|row| matches && row.password_hash.is_some()) else {
        return Ok(None);
    };
    Ok(Some(SignedInUser {
        organization_id: row.organization_id,
        organization_slug: row.slug,
        organization_name: row.organization_name,
        user_id: row.user_id,
        email: row.email,
        name: row.name,
        role: row.role,
    }))
}

thread_local! {
    /// A hash no password matches in practice, verified when there is nothing to verify against.
    static DUMMY_HASH: String = hash("no user has this password: it only costs the same time");
}

#[derive(sqlx::FromRow)]
struct UserRow {
    organization_id: Uuid,
    slug: String,
    organization_name: String,
    user_id: Uuid,
    email: String,
    name: String,
    role: Role,
    password_hash: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let stored = hash("correct horse battery staple");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(password_auth::verify_password("correct horse battery staple", &stored).is_ok());
        assert!(password_auth::verify_password("correct horse battery stapl", &stored).is_err());
        assert_ne!(stored, hash("correct horse battery staple"), "salted");
    }

    #[test]
    fn generated_passwords_are_long_random_and_acceptable() {
        let first = generate();
        let second = generate();
        assert_ne!(first.expose(), second.expose());
        assert_eq!(first.expose().len(), 24 + 3);
        assert!(check_new(first.expose()).is_ok());
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert!(check_new("short").is_err());
        assert!(check_new(&"x".repeat(MAXIMUM_PASSWORD_BYTES + 1)).is_err());
        assert!(check_new("twelve chars").is_ok());
    }
}
