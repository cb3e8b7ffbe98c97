//! Room tokens: JWT (RFC 7519) compact tokens signed with HMAC-SHA256 (`alg: HS256`), and the
//! allowed-origins check.
//!
//! Claims: `sub` (recorded as the author of every update), `room` (exact name) or
//! `room_prefix`, `access` (`read` < `write` < `admin`) and `exp` (seconds since the Unix epoch).
//! The MAC is computed and checked by the RustCrypto `hmac` crate; `Mac::verify_slice` compares
//! in constant time. Only `HS256` is accepted (no `none`, no algorithm switching).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Receive the document and awareness; writes are refused.
    Read,
    /// Read and write.
    Write,
    /// Write, delete rooms, list all rooms.
    Admin,
}

impl std::str::FromStr for Access {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Access::Read),
            "write" => Ok(Access::Write),
            "admin" => Ok(Access::Admin),
            other => Err(format!(
                "access must be read, write or admin, not {other:?}"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_prefix: Option<String>,
    pub access: Access,
    pub exp: u64,
}

impl Claims {
    /// The author recorded for this token's writes.
    pub fn author(&self) -> String {
        self.sub
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "anonymous".into())
    }

    /// Whether the token covers `room`.
    pub fn covers(&self, room: &str) -> bool {
        match (&self.room, &self.room_prefix) {
            (Some(r), _) => r == room,
            (None, Some(p)) => room.starts_with(p.as_str()),
            (None, None) => false,
        }
    }
}

/// Why a token was refused (HTTP 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token signature does not match")]
    BadSignature,
    #[error("token expired")]
    Expired,
}

impl TokenError {
    /// Stable error code for JSON replies.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Malformed(_) => "token_malformed",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::Expired => "token_expired",
        }
    }
}

/// Server-side auth settings.
#[derive(Clone)]
pub struct AuthConfig {
    secret: Vec<u8>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthConfig { secret: <redacted> }")
    }
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("hmac takes keys of any length"),
    }
}

impl AuthConfig {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        AuthConfig {
            secret: secret.into(),
        }
    }

    /// Signs `claims` into a compact JWT.
    pub fn mint(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut m = mac(&self.secret);
        m.update(signing_input.as_bytes());
        let sig = m.finalize().into_bytes();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// Checks the signature (constant time), the algorithm and the expiry.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Claims, TokenError> {
        let malformed = |m: &str| TokenError::Malformed(m.to_owned());
        let mut parts = token.trim().split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected three dot-separated parts"));
        };
        let header = URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| malformed("header is not base64url"))?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|_| malformed("header is not json"))?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(malformed("only alg HS256 is accepted"));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| malformed("signature is not base64url"))?;
        let mut m = mac(&self.secret);
        m.update(h.as_bytes());
        m.update(b".");
        m.update(p.as_bytes());
        m.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| malformed("payload is not base64url"))?;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
        if claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        if claims.room.is_none() && claims.room_prefix.is_none() {
            return Err(malformed("token names neither room nor room_prefix"));
        }
        Ok(claims)
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    crate::hub::now_ms() / 1000
}

/// Parses a duration like `90s`, `15m`, `1h`, `7d`, or a bare number of seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 90s, 15m, 1h, 7d)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid duration unit in {s:?} (s, m, h or d)")),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("duration {s:?} out of range"))
}

/// Whether a browser `Origin` is allowed: no list allows all; a request without `Origin`
/// (not a browser) is allowed.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    match origin {
        None => true,
        Some(o) => allowed.is_empty() || allowed.iter().any(|a| a == "*" || a == o),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claims(access: Access, exp: u64) -> Claims {
        Claims {
            sub: Some("alice".into()),
            room: Some("r".into()),
            room_prefix: None,
            access,
            exp,
        }
    }

    #[test]
    fn round_trip_and_every_refusal() {
        let a = AuthConfig::new("secret");
        let t = a.mint(&claims(Access::Write, 100));
        assert_eq!(a.verify(&t, 99).unwrap(), claims(Access::Write, 100));
        assert_eq!(a.verify(&t, 100), Err(TokenError::Expired));
        assert_eq!(
            AuthConfig::new("other").verify(&t, 0),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(a.verify("x.y", 0), Err(TokenError::Malformed(_))));
        assert!(matches!(a.verify("", 0), Err(TokenError::Malformed(_))));
        // a tampered payload fails the signature
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(Access::Admin, 100)).unwrap());
        parts[1] = &forged;
        assert_eq!(a.verify(&parts.join("."), 0), Err(TokenError::BadSignature));
        // alg none is refused
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert!(matches!(a.verify(&none, 0), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn coverage_ttl_and_origins() {
        let mut c = claims(Access::Read, 1);
        assert!(c.covers("r") && !c.covers("r2"));
        c.room = None;
        c.room_prefix = Some("team/".into());
        assert!(c.covers("team/a") && !c.covers("other"));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("2d"), Ok(172_800));
        assert!(parse_ttl("1y").is_err() && parse_ttl("0s").is_err() && parse_ttl("").is_err());
        let list = vec!["https://a.example".to_owned()];
        assert!(origin_allowed(&list, Some("https://a.example")));
        assert!(!origin_allowed(&list, Some("https://evil.example")));
        assert!(origin_allowed(&list, None));
        assert!(origin_allowed(&[], Some("https://any")));
        assert!(Access::Admin > Access::Write && Access::Write > Access::Read);
    }
}
