//! Access tokens: HS256 JWTs carrying the user id, roles and session id, 15 minutes by default.
//! A token is only as good as its session: the server checks the session on every request.

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{AccessError, Role, User};

const ISSUER: &str = "cva";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Session id.
    pub sid: Uuid,
    pub roles: Vec<Role>,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

/// Signing keys; `Debug` never shows the secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKeys(ttl = {}s)", self.ttl.num_seconds())
    }
}

impl TokenKeys {
    /// Refuses secrets shorter than 32 bytes or with fewer than 10 distinct bytes (a repeated
    /// character, a word), and says which rule failed.
    pub fn from_secret(secret: &[u8], ttl: Duration) -> Result<TokenKeys, AccessError> {
        if secret.len() < 32 {
            return Err(AccessError::WeakSecret(
                "it must be at least 32 bytes (e.g. `openssl rand -base64 48`)",
            ));
        }
        let mut distinct = [false; 256];
        for b in secret {
            distinct[*b as usize] = true;
        }
        if distinct.iter().filter(|d| **d).count() < 10 {
            return Err(AccessError::WeakSecret(
                "it has too few distinct characters to be random",
            ));
        }
        Ok(TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl,
        })
    }

    pub fn issue(
        &self,
        user: &User,
        session: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), AccessError> {
        let exp = now + self.ttl;
        let claims = Claims {
            sub: user.id.0.to_string(),
            sid: session,
            roles: user.roles.clone(),
            iat: now.timestamp(),
            exp: exp.timestamp(),
            iss: ISSUER.to_owned(),
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| AccessError::InvalidToken)?;
        Ok((token, exp))
    }

    /// Checks signature, algorithm, issuer and expiry (no leeway).
    pub fn decode(&self, token: &str) -> Result<Claims, AccessError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "iss", "sub"]);
        decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|_| AccessError::InvalidToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{User, UserId, Username};

    fn user() -> User {
        User {
            id: UserId(7),
            username: Username::parse("amina").unwrap(),
            roles: vec![Role::Auditor],
            programmes: vec![],
            disabled: false,
        }
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert!(TokenKeys::from_secret(b"short", Duration::minutes(15)).is_err());
        assert!(TokenKeys::from_secret(&[b'a'; 64], Duration::minutes(15)).is_err());
        assert!(
            TokenKeys::from_secret(b"0123456789abcdef0123456789abcdef", Duration::minutes(15))
                .is_ok()
        );
    }

    #[test]
    fn round_trip_and_rejections() {
        let keys =
            TokenKeys::from_secret(b"0123456789abcdef0123456789abcdef", Duration::minutes(15))
                .unwrap();
        let other =
            TokenKeys::from_secret(b"fedcba9876543210fedcba9876543210", Duration::minutes(15))
                .unwrap();
        let sid = Uuid::now_v7();
        let (t, _) = keys.issue(&user(), sid, Utc::now()).unwrap();
        let c = keys.decode(&t).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.sid, c.roles.clone()),
            ("7", sid, vec![Role::Auditor])
        );
        assert!(other.decode(&t).is_err());
        let (old, _) = keys
            .issue(&user(), sid, Utc::now() - Duration::minutes(16))
            .unwrap();
        assert!(keys.decode(&old).is_err());
        assert!(keys.decode("not.a.token").is_err());
    }
}
