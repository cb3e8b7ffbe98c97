//! Room tokens: JWT (RFC 7519) compact tokens signed with HMAC-SHA256 (`alg: HS256`), and the
//! allowed-origins check.
//!
//! Claims: `sub` (recorded as the author of every update), `room` (exact name) or
//! `room_prefix`, `access` (`read` < `write` < `admin`) and `exp` (seconds since the Unix epoch).
//! Tokens are parsed, minted and validated by the `jsonwebtoken` crate. Verification is pinned
//! to `HS256`: a token whose header names another algorithm (`none`, `HS512`, `RS256`, ...) is
//! refused before any key is used.
//!
//! `jsonwebtoken` needs a crypto backend. Its `rust_crypto` feature brings RSA, ECDSA and EdDSA
//! (about 35 crates, over two minutes of extra release compile time, and the `rsa` crate with an
//! open timing advisory) for one algorithm we use, so [`hs256`] installs a backend that knows
//! only HS256, computed by the RustCrypto `hmac` crate (`verify_slice` compares in constant time).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

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

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign token: {0}")]
pub struct MintError(#[from] jsonwebtoken::errors::Error);

/// The `jsonwebtoken` crypto backend: HS256 only, everything else `InvalidAlgorithm`.
mod hs256 {
    use hmac::{Hmac, Mac};
    use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
    use jsonwebtoken::errors::{Error, ErrorKind};
    use jsonwebtoken::signature::{Signer, Verifier};
    use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
    use sha2::Sha256;

    type HmacSha256 = Hmac<Sha256>;

    struct Hs256(HmacSha256);

    impl Hs256 {
        fn new(alg: &Algorithm, family: AlgorithmFamily, key: &[u8]) -> Result<Self, Error> {
            if *alg != Algorithm::HS256 || family != AlgorithmFamily::Hmac {
                return Err(ErrorKind::InvalidAlgorithm.into());
            }
            // HMAC takes keys of any length; the error arm is unreachable in practice.
            HmacSha256::new_from_slice(key)
                .map(Hs256)
                .map_err(|_| ErrorKind::InvalidKeyFormat.into())
        }
    }

    impl Signer<Vec<u8>> for Hs256 {
        fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, jsonwebtoken::signature::Error> {
            let mut mac = self.0.clone();
            mac.update(msg);
            Ok(mac.finalize().into_bytes().to_vec())
        }
    }

    impl Verifier<Vec<u8>> for Hs256 {
        fn verify(
            &self,
            msg: &[u8],
            signature: &Vec<u8>,
        ) -> Result<(), jsonwebtoken::signature::Error> {
            let mut mac = self.0.clone();
            mac.update(msg);
            mac.verify_slice(signature)
                .map_err(jsonwebtoken::signature::Error::from_source)
        }
    }

    impl JwtSigner for Hs256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::HS256
        }
    }

    impl JwtVerifier for Hs256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::HS256
        }
    }

    static PROVIDER: CryptoProvider = CryptoProvider {
        signer_factory: |alg, key: &EncodingKey| {
            Ok(Box::new(Hs256::new(alg, key.family(), key.as_bytes())?))
        },
        verifier_factory: |alg, key: &DecodingKey| {
            Ok(Box::new(Hs256::new(
                alg,
                key.family(),
                key.try_get_as_bytes()?,
            )?))
        },
        // JWK helpers; never used (no JWK, RSA or EC keys here).
        key_utils: KeyUtils::new_unimplemented(),
    };

    /// Installs the backend process-wide (once; later calls do nothing).
    pub(super) fn install() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Err means a backend was installed before; it then signs and checks instead.
            let _ = PROVIDER.install_default();
        });
    }
}

impl AuthConfig {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        AuthConfig {
            secret: secret.into(),
        }
    }

    /// Signs `claims` into a compact JWT (`{"alg":"HS256","typ":"JWT"}`).
    pub fn mint(&self, claims: &Claims) -> Result<String, MintError> {
        hs256::install();
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&self.secret),
        )?)
    }

    /// Checks the algorithm (HS256 only), the signature (constant time), the claims and the
    /// expiry against `now_secs` (no leeway: a token is expired from its `exp` second on).
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Claims, TokenError> {
        hs256::install();
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the caller's clock; `exp` must still be present.
        validation.validate_exp = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(
            token.trim(),
            &DecodingKey::from_secret(&self.secret),
            &validation,
        )
        .map_err(|e| refusal(e.kind()))?;
        let claims = data.claims;
        if claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        if claims.room.is_none() && claims.room_prefix.is_none() {
            return Err(TokenError::Malformed(
                "token names neither room nor room_prefix".into(),
            ));
        }
        Ok(claims)
    }
}

/// Maps a `jsonwebtoken` failure to the reason reported to the client.
fn refusal(kind: &ErrorKind) -> TokenError {
    let malformed = |m: &str| TokenError::Malformed(m.to_owned());
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            malformed("only alg HS256 is accepted")
        }
        ErrorKind::InvalidToken => malformed("expected three dot-separated parts"),
        ErrorKind::Base64(_) => malformed("a part is not base64url"),
        ErrorKind::Utf8(_) => malformed("a part is not utf-8"),
        // The header's `alg` is parsed into a closed enum, so `none` or an unknown algorithm
        // fails as JSON before anything else.
        ErrorKind::Json(e) => TokenError::Malformed(format!("header or claims: {e}")),
        ErrorKind::MissingRequiredClaim(c) => TokenError::Malformed(format!("missing claim {c}")),
        ErrorKind::InvalidClaimFormat(c) => TokenError::Malformed(format!("invalid claim {c}")),
        other => TokenError::Malformed(format!("{other:?}")),
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

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn round_trip_and_every_refusal() {
        let a = AuthConfig::new("secret");
        let t = a.mint(&claims(Access::Write, 100)).unwrap();
        assert_eq!(a.verify(&t, 99).unwrap(), claims(Access::Write, 100));
        assert_eq!(a.verify(&t, 100), Err(TokenError::Expired));
        assert_eq!(
            AuthConfig::new("other").verify(&t, 0),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(a.verify("x.y", 0), Err(TokenError::Malformed(_))));
        assert!(matches!(a.verify("", 0), Err(TokenError::Malformed(_))));
        assert!(matches!(
            a.verify("a.b.c", 0),
            Err(TokenError::Malformed(_))
        ));
        // a tampered payload fails the signature
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = b64(&serde_json::to_vec(&claims(Access::Admin, 100)).unwrap());
        parts[1] = &forged;
        assert_eq!(a.verify(&parts.join("."), 0), Err(TokenError::BadSignature));
        // claims without exp, or without room and room_prefix, are refused even when signed
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"room": "r", "access": "write"}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(matches!(
            a.verify(&no_exp, 0),
            Err(TokenError::Malformed(_))
        ));
        let no_room = a
            .mint(&Claims {
                room: None,
                ..claims(Access::Write, 100)
            })
            .unwrap();
        assert!(
            matches!(a.verify(&no_room, 0), Err(TokenError::Malformed(m)) if m.contains("room"))
        );
    }

    fn is_alg_refusal(r: Result<Claims, TokenError>) -> bool {
        matches!(r, Err(TokenError::Malformed(_)))
    }

    #[test]
    fn algorithm_is_pinned_to_hs256() {
        let a = AuthConfig::new("secret");
        let good = a.mint(&claims(Access::Admin, 100)).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        assert_eq!(
            String::from_utf8(
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[0])
                    .unwrap()
            )
            .unwrap(),
            r#"{"typ":"JWT","alg":"HS256"}"#
        );
        // alg none, with an empty or a copied signature
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None"}"#,
        ] {
            for sig in ["", parts[2]] {
                let t = format!("{}.{}.{sig}", b64(header.as_bytes()), parts[1]);
                assert!(is_alg_refusal(a.verify(&t, 0)), "{header} {sig:?} accepted");
            }
        }
        // a header without alg
        let t = format!("{}.{}.{}", b64(br#"{"typ":"JWT"}"#), parts[1], parts[2]);
        assert!(is_alg_refusal(a.verify(&t, 0)));
        // another HMAC algorithm, correctly signed with the same secret
        fn signed<M: hmac::Mac + hmac::digest::KeyInit>(alg: &str, payload: &str) -> String {
            let input = format!(
                "{}.{payload}",
                b64(format!(r#"{{"alg":"{alg}"}}"#).as_bytes())
            );
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(b"secret").unwrap();
            mac.update(input.as_bytes());
            format!("{input}.{}", b64(&mac.finalize().into_bytes()))
        }
        let hs256 = signed::<hmac::Hmac<sha2::Sha256>>("HS256", parts[1]);
        assert_eq!(a.verify(&hs256, 0).unwrap(), claims(Access::Admin, 100));
        for t in [
            signed::<hmac::Hmac<sha2::Sha384>>("HS384", parts[1]),
            signed::<hmac::Hmac<sha2::Sha512>>("HS512", parts[1]),
        ] {
            assert_eq!(
                a.verify(&t, 0),
                Err(TokenError::Malformed("only alg HS256 is accepted".into())),
                "{t}"
            );
        }
        // this backend signs nothing but HS256
        for alg in [Algorithm::HS384, Algorithm::HS512, Algorithm::RS256] {
            let r = jsonwebtoken::encode(
                &Header::new(alg),
                &claims(Access::Admin, 100),
                &EncodingKey::from_secret(b"secret"),
            );
            assert!(r.is_err(), "{alg:?}");
        }
        // the classic confusion: an asymmetric algorithm named in the header, signature made
        // with the shared secret (here: the valid HS256 signature of the same payload)
        for alg in ["RS256", "ES256", "PS256", "EdDSA"] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
            let t = format!("{}.{}.{}", b64(header.as_bytes()), parts[1], parts[2]);
            assert_eq!(
                a.verify(&t, 0),
                Err(TokenError::Malformed("only alg HS256 is accepted".into())),
                "{alg}"
            );
        }
    }

    /// A token signed by an independent HS256 implementation (Python's `hmac`, the same bytes
    /// the hand-written signer of earlier versions produced) still verifies; the same claims
    /// signed with HS512 do not.
    #[test]
    fn independent_hs256_vector_verifies() {
        let a = AuthConfig::new("vector-secret");
        let hs256 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJkYXZlIiwicm9vbSI6Im5vdGVzIiwiYWNjZXNzIjoid3JpdGUiLCJleHAiOjQxMDI0NDQ4MDB9.5e9voe9Ap837UEkjqPbZyGAwVfmm4MX-4pfrdHPgJEM";
        let c = a.verify(hs256, 1_700_000_000).unwrap();
        assert_eq!(c.author(), "dave");
        assert!(c.covers("notes") && c.access == Access::Write && c.exp == 4_102_444_800);
        assert_eq!(
            AuthConfig::new("vector-secret!").verify(hs256, 0),
            Err(TokenError::BadSignature)
        );
        let hs512 = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJkYXZlIiwicm9vbSI6Im5vdGVzIiwiYWNjZXNzIjoid3JpdGUiLCJleHAiOjQxMDI0NDQ4MDB9.1IwjXmQAb_wsNeNZLEwXraS8iCxxbY9gJSkwbBJEOuqvMaGkgv16mJkw_F3aEpIK6bkUjpxOVnHAxShCD_cROQ";
        assert!(is_alg_refusal(a.verify(hs512, 0)));
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
