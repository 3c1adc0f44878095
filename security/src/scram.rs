//! SCRAM-SHA-256 (RFC 5802, RFC 7677) and the session tokens it earns.
//!
//! - The password never leaves the client: a user is stored as a salt, an
//!   iteration count and two keys derived from the salted password
//!   ([`ScramCredential::derive`]); an exchange proves the client holds the
//!   password and the server holds the keys (the client checks the
//!   server's signature).
//! - Messages have RFC 5802's syntax (`n,,n=alice,r=…`), without channel
//!   binding (`biws`): TLS already authenticates the server.
//! - A completed exchange earns a token, `name:expiry_ms:mac` (base64url),
//!   signed with a key every broker of the cluster shares, so one token
//!   works on every broker and across restarts; deleting the user ends it.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The mechanism's name.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Iterations for new credentials (RFC 7677's minimum is 4,096).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Why an exchange or a token failed. Deliberately vague to the other side:
/// an unknown user and a wrong password look the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message did not parse.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The proof or the server's signature did not verify.
    #[error("authentication failed")]
    Failed,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut m =
        <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(data);
    m.finalize().into_bytes().into()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// A nonce: 18 random bytes, base64 (printable, no comma).
pub fn nonce() -> String {
    STANDARD.encode(random_bytes::<18>())
}

/// What the server stores of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredential {
    /// Random salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// H(ClientKey).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl ScramCredential {
    /// Derives the stored keys of `password` with a new random salt (done
    /// on the client: the password is not sent).
    pub fn new(password: &str, iterations: u32) -> Self {
        Self::derive(password, &random_bytes::<16>(), iterations)
    }

    /// Derives the stored keys of `password` with `salt`.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
    out
}

/// `a=value` attributes of a message, in order.
fn attrs(msg: &str) -> impl Iterator<Item = (&str, &str)> {
    msg.split(',').filter_map(|kv| kv.split_once('='))
}

fn attr<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    attrs(msg).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// The client's side of one exchange.
#[derive(Debug)]
pub struct ScramClient {
    user: String,
    password: String,
    nonce: String,
}

impl ScramClient {
    /// Starts an exchange for `user`.
    pub fn new(user: &str, password: &str) -> Self {
        ScramClient {
            user: user.to_string(),
            password: password.to_string(),
            nonce: nonce(),
        }
    }

    fn first_bare(&self) -> String {
        // RFC 5802 escapes ',' and '=' in names; user names here have neither.
        format!("n={},r={}", self.user, self.nonce)
    }

    /// The client-first message.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.first_bare())
    }

    /// The client-final message answering `server_first`, and the
    /// server-final message that proves the server knew the keys.
    ///
    /// # Errors
    /// A malformed server-first message, or one whose nonce does not extend
    /// the client's.
    pub fn client_final(&self, server_first: &str) -> Result<(String, String), ScramError> {
        let nonce = attr(server_first, "r").ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
            return Err(ScramError::Malformed("the server's nonce does not extend the client's"));
        }
        let salt = attr(server_first, "s")
            .and_then(|s| STANDARD.decode(s).ok())
            .ok_or(ScramError::Malformed("no salt"))?;
        let iterations: u32 = attr(server_first, "i")
            .and_then(|i| i.parse().ok())
            .filter(|i| *i >= 1)
            .ok_or(ScramError::Malformed("no iteration count"))?;
        let salted = salted_password(&self.password, &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare());
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
        let server_signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
        Ok((
            format!("{without_proof},p={}", STANDARD.encode(proof)),
            format!("v={}", STANDARD.encode(server_signature)),
        ))
    }
}

/// The server's side of one exchange, after the client-first message.
#[derive(Debug)]
pub struct ScramServer {
    user: String,
    first_bare: String,
    server_first: String,
    credential: ScramCredential,
    /// The user does not exist: the exchange runs on a made-up credential
    /// and fails at the end, as a wrong password does.
    unknown: bool,
}

/// The user name a client-first message names.
///
/// # Errors
/// A message without the `n,,` header or a name.
pub fn client_first_user(client_first: &str) -> Result<&str, ScramError> {
    let bare = client_first
        .strip_prefix("n,,")
        .ok_or(ScramError::Malformed("channel binding header"))?;
    attr(bare, "n")
        .filter(|n| !n.is_empty())
        .ok_or(ScramError::Malformed("no user name"))
}

impl ScramServer {
    /// Answers `client_first` with the server-first message. `credential`
    /// is the user's, `None` for an unknown user; `decoy_key` makes the
    /// salt an unknown user gets the same on every attempt (so probing does
    /// not tell users apart).
    ///
    /// # Errors
    /// A malformed message.
    pub fn start(
        client_first: &str,
        credential: Option<ScramCredential>,
        decoy_key: &[u8],
    ) -> Result<(Self, String), ScramError> {
        let user = client_first_user(client_first)?.to_string();
        let first_bare = client_first[3..].to_string();
        let client_nonce = attr(&first_bare, "r").ok_or(ScramError::Malformed("no nonce"))?;
        let unknown = credential.is_none();
        let credential = credential.unwrap_or_else(|| {
            let salt = hmac(decoy_key, user.as_bytes())[..16].to_vec();
            ScramCredential {
                salt,
                iterations: DEFAULT_ITERATIONS,
                stored_key: random_bytes(),
                server_key: random_bytes(),
            }
        });
        let server_first = format!(
            "r={client_nonce}{},s={},i={}",
            nonce(),
            STANDARD.encode(&credential.salt),
            credential.iterations
        );
        let state = ScramServer {
            user,
            first_bare,
            server_first: server_first.clone(),
            credential,
            unknown,
        };
        Ok((state, server_first))
    }

    /// The user this exchange is for.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Checks the client-final message; answers the server-final message.
    ///
    /// # Errors
    /// [`ScramError::Failed`] for a wrong proof (or an unknown user).
    pub fn finish(&self, client_final: &str) -> Result<String, ScramError> {
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let expected_nonce = attr(&self.server_first, "r").ok_or(ScramError::Malformed("no nonce"))?;
        if attr(without_proof, "r") != Some(expected_nonce) || attr(without_proof, "c") != Some("biws") {
            return Err(ScramError::Failed);
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(ScramError::Failed);
        }
        let auth_message = format!("{},{},{without_proof}", self.first_bare, self.server_first);
        let signature = hmac(&self.credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let matches: [u8; 32] = Sha256::digest(&client_key).into();
        // Constant-time comparison: the MAC type's verify.
        let ok = constant_time_eq(&matches, &self.credential.stored_key);
        if !ok || self.unknown {
            return Err(ScramError::Failed);
        }
        let server_signature = hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token for `user` valid until `expires_ms`, signed with `key`.
pub fn sign_token(key: &[u8], user: &str, expires_ms: i64) -> String {
    let body = format!("{user}:{expires_ms}");
    let mac = hmac(key, body.as_bytes());
    format!("{}.{}", URL_SAFE_NO_PAD.encode(body), URL_SAFE_NO_PAD.encode(mac))
}

/// The user of a token signed with `key` that is still valid at `now_ms`.
pub fn verify_token(key: &[u8], token: &str, now_ms: i64) -> Option<(String, i64)> {
    let (body, mac) = token.split_once('.')?;
    let body = URL_SAFE_NO_PAD.decode(body).ok()?;
    let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
    if !constant_time_eq(&hmac(key, &body), &mac) {
        return None;
    }
    let body = String::from_utf8(body).ok()?;
    let (user, expires) = body.rsplit_once(':')?;
    let expires: i64 = expires.parse().ok()?;
    (expires > now_ms).then(|| (user.to_string(), expires))
}

/// A fresh random key (token signing, decoy salts).
pub fn new_key() -> Vec<u8> {
    random_bytes::<32>().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_exchange_verifies_both_sides_and_a_wrong_password_fails() {
        let stored = ScramCredential::new("s3cret", 4096);
        let decoy = new_key();
        for (password, ok) in [("s3cret", true), ("guess", false)] {
            let c = ScramClient::new("alice", password);
            let (server, server_first) =
                ScramServer::start(&c.client_first(), Some(stored.clone()), &decoy).expect("start");
            assert_eq!(server.user(), "alice");
            let (client_final, expected) = c.client_final(&server_first).expect("client final");
            match server.finish(&client_final) {
                Ok(server_final) => {
                    assert!(ok, "a wrong password was accepted");
                    assert_eq!(server_final, expected, "the server proves it knows the keys");
                }
                Err(e) => {
                    assert!(!ok, "the right password was refused");
                    assert_eq!(e, ScramError::Failed);
                }
            }
        }
        // An unknown user fails the same way, with the same salt each time.
        let c = ScramClient::new("nobody", "x");
        let (s1, f1) = ScramServer::start(&c.client_first(), None, &decoy).expect("start");
        let (_, f2) = ScramServer::start(&c.client_first(), None, &decoy).expect("start");
        assert_eq!(attr(&f1, "s"), attr(&f2, "s"));
        let (client_final, _) = c.client_final(&f1).expect("final");
        assert_eq!(s1.finish(&client_final), Err(ScramError::Failed));
        // A tampered proof fails.
        let c = ScramClient::new("alice", "s3cret");
        let (server, server_first) = ScramServer::start(&c.client_first(), Some(stored), &decoy).expect("start");
        let (client_final, _) = c.client_final(&server_first).expect("final");
        let tampered = client_final.replace("p=", "p=AAAA");
        assert!(server.finish(&tampered).is_err());
    }

    #[test]
    fn tokens_verify_until_they_expire_and_only_with_their_key() {
        let key = new_key();
        let t = sign_token(&key, "alice", 2_000);
        assert_eq!(verify_token(&key, &t, 1_000), Some(("alice".into(), 2_000)));
        assert_eq!(verify_token(&key, &t, 2_000), None, "expired");
        assert_eq!(verify_token(&new_key(), &t, 1_000), None, "another key");
        let forged = t.replacen('.', "x.", 1);
        assert_eq!(verify_token(&key, &forged, 1_000), None);
    }
}
