//! Users who authenticate with a password (SCRAM-SHA-256), replicated in
//! the controller's metadata: what the server keeps of each password (never
//! the password), and the cluster's token signing key.
//!
//! Pure data: no I/O.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use strand_security::scram::ScramCredential;

/// Bytes stored base64 in the controller log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map(Secret).map_err(serde::de::Error::custom)
    }
}

/// What the server keeps of a user's password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCredential {
    /// Salt.
    pub salt: Secret,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// H(ClientKey), 32 bytes.
    pub stored_key: Secret,
    /// ServerKey, 32 bytes.
    pub server_key: Secret,
}

impl StoredCredential {
    /// Why this credential cannot be stored, if it cannot.
    pub fn problem(&self) -> Option<&'static str> {
        if self.stored_key.0.len() != 32 || self.server_key.0.len() != 32 {
            return Some("stored_key and server_key must be 32 bytes (SHA-256)");
        }
        if self.salt.0.len() < 8 {
            return Some("the salt must be at least 8 bytes");
        }
        if self.iterations < strand_security::scram::DEFAULT_ITERATIONS {
            return Some("at least 4,096 iterations (RFC 7677)");
        }
        None
    }

    /// As the SCRAM server uses it.
    pub fn to_scram(&self) -> Option<ScramCredential> {
        Some(ScramCredential {
            salt: self.salt.0.clone(),
            iterations: self.iterations,
            stored_key: self.stored_key.0.as_slice().try_into().ok()?,
            server_key: self.server_key.0.as_slice().try_into().ok()?,
        })
    }
}

/// Every user, and the token signing key (made with the first user).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Users {
    users: BTreeMap<String, StoredCredential>,
    token_key: Option<Secret>,
}

impl Users {
    /// Creates or updates `name`; sets the token key if there is none.
    pub fn upsert(&mut self, name: &str, c: &StoredCredential, token_key: Option<&Secret>) -> bool {
        let mut changed = false;
        if self.token_key.is_none()
            && let Some(k) = token_key
        {
            self.token_key = Some(k.clone());
            changed = true;
        }
        changed | (self.users.insert(name.to_string(), c.clone()).as_ref() != Some(c))
    }

    /// Deletes `name`.
    pub fn delete(&mut self, name: &str) -> bool {
        self.users.remove(name).is_some()
    }

    /// `name`'s credential.
    pub fn get(&self, name: &str) -> Option<&StoredCredential> {
        self.users.get(name)
    }

    /// Whether `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    /// Every user's name.
    pub fn names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// The token signing key, once a user exists.
    pub fn token_key(&self) -> Option<&[u8]> {
        self.token_key.as_ref().map(|k| k.0.as_slice())
    }
}
