//! SCRAM (RFC 5802, RFC 7677) as MongoDB speaks it: SCRAM-SHA-256 over the
//! SASLprep'd password, SCRAM-SHA-1 over MongoDB's
//! `hex(md5("<user>:mongo:<password>"))`. Both sides share the primitives:
//! [`ClientScram`] logs the pools in to shards; the router's `auth` keeps
//! users as [`Credential`]s (only salted keys) and runs [`Conversation`]s.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// A SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// SCRAM-SHA-1.
    Sha1,
    /// SCRAM-SHA-256.
    Sha256,
}

impl Mechanism {
    /// From the name drivers send.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "SCRAM-SHA-1" => Some(Mechanism::Sha1),
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            _ => None,
        }
    }

    fn iterations(self) -> u32 {
        match self {
            Mechanism::Sha1 => 10_000,
            Mechanism::Sha256 => 15_000,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha1 => {
                let mut m =
                    <hmac::Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Mechanism::Sha256 => {
                let mut m =
                    <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha1 => Sha1::digest(data).to_vec(),
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn salted(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha1 => {
                let mut out = [0u8; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            Mechanism::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// The stored form of one mechanism's credentials (base64 fields, as
/// MongoDB's `system.users` keeps them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// PBKDF2 iterations.
    #[serde(rename = "iterationCount")]
    pub iteration_count: u32,
    /// The salt.
    pub salt: String,
    /// H(ClientKey).
    #[serde(rename = "storedKey")]
    pub stored_key: String,
    /// HMAC(SaltedPassword, "Server Key").
    #[serde(rename = "serverKey")]
    pub server_key: String,
}

/// The password as the mechanism digests it.
fn prepared(mechanism: Mechanism, user: &str, password: &str) -> Result<Vec<u8>, String> {
    match mechanism {
        Mechanism::Sha1 => {
            let digest = md5::Md5::digest(format!("{user}:mongo:{password}").as_bytes());
            Ok(digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes())
        }
        Mechanism::Sha256 => stringprep::saslprep(password)
            .map(|p| p.into_owned().into_bytes())
            .map_err(|e| format!("the password is not valid SASLprep: {e}")),
    }
}

/// Makes the stored credentials for a new password.
pub fn credential(mechanism: Mechanism, user: &str, password: &str) -> Result<Credential, String> {
    let salt: [u8; 24] = rand::random();
    credential_with(mechanism, user, password, &salt, mechanism.iterations())
}

fn credential_with(
    mechanism: Mechanism,
    user: &str,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> Result<Credential, String> {
    let salted = mechanism.salted(&prepared(mechanism, user, password)?, salt, iterations);
    let client_key = mechanism.hmac(&salted, b"Client Key");
    Ok(Credential {
        iteration_count: iterations,
        salt: B64.encode(salt),
        stored_key: B64.encode(mechanism.hash(&client_key)),
        server_key: B64.encode(mechanism.hmac(&salted, b"Server Key")),
    })
}

/// A server-side conversation after the client's first message.
#[derive(Debug, Clone)]
pub struct Conversation {
    mechanism: Mechanism,
    /// The user named in the client's first message.
    pub user: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    credential: Credential,
}

/// Parses `n,,n=<user>,r=<nonce>` and returns the user name (with `=2C`
/// and `=3D` decoded) and the bare message.
pub fn parse_client_first(payload: &[u8]) -> Result<(String, String, String), String> {
    let text = std::str::from_utf8(payload).map_err(|_| "client-first is not UTF-8")?;
    let bare = text
        .strip_prefix("n,,")
        .or_else(|| text.strip_prefix("y,,"))
        .ok_or("channel binding is not supported")?;
    let mut user = None;
    let mut nonce = None;
    for part in bare.split(',') {
        if let Some(u) = part.strip_prefix("n=") {
            user = Some(u.replace("=2C", ",").replace("=3D", "="));
        } else if let Some(r) = part.strip_prefix("r=") {
            nonce = Some(r.to_owned());
        }
    }
    Ok((
        user.ok_or("client-first has no user")?,
        nonce.ok_or("client-first has no nonce")?,
        bare.to_owned(),
    ))
}

impl Conversation {
    /// Starts a conversation for a user with `credential`; returns it and
    /// the server-first message.
    pub fn start(
        mechanism: Mechanism,
        user: String,
        client_nonce: &str,
        client_first_bare: String,
        credential: Credential,
    ) -> (Conversation, Vec<u8>) {
        let server_nonce: [u8; 24] = rand::random();
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            credential.salt, credential.iteration_count
        );
        let out = server_first.clone().into_bytes();
        (
            Conversation {
                mechanism,
                user,
                client_first_bare,
                server_first,
                nonce,
                credential,
            },
            out,
        )
    }

    /// Checks the client's proof; returns the server-final message.
    pub fn finish(&self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(payload).map_err(|_| "client-final is not UTF-8")?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or("client-final has no proof")?;
        let nonce = without_proof
            .split(',')
            .find_map(|p| p.strip_prefix("r="))
            .ok_or("client-final has no nonce")?;
        if nonce != self.nonce {
            return Err("nonce mismatch".into());
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let stored_key = B64
            .decode(&self.credential.stored_key)
            .map_err(|e| e.to_string())?;
        let server_key = B64
            .decode(&self.credential.server_key)
            .map_err(|e| e.to_string())?;
        let proof = B64.decode(proof).map_err(|_| "the proof is not base64")?;
        let signature = self.mechanism.hmac(&stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err("bad proof".into());
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if self.mechanism.hash(&client_key) != stored_key {
            return Err("bad proof".into());
        }
        let server_signature = self.mechanism.hmac(&server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// The client side, for the router's own login to shards.
pub struct ClientScram {
    mechanism: Mechanism,
    password: Vec<u8>,
    client_first_bare: String,
    nonce: String,
    expected_server_signature: Option<Vec<u8>>,
}

impl ClientScram {
    /// The client-first message for `user`.
    pub fn start(
        mechanism: Mechanism,
        user: &str,
        password: &str,
    ) -> Result<(ClientScram, Vec<u8>), String> {
        let nonce_bytes: [u8; 24] = rand::random();
        let nonce = B64.encode(nonce_bytes);
        let escaped = user.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={escaped},r={nonce}");
        let first = format!("n,,{client_first_bare}").into_bytes();
        Ok((
            ClientScram {
                mechanism,
                password: prepared(mechanism, user, password)?,
                client_first_bare,
                nonce,
                expected_server_signature: None,
            },
            first,
        ))
    }

    /// The client-final message for the server-first one.
    pub fn finish(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(server_first).map_err(|_| "server-first is not UTF-8")?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in text.split(',') {
            if let Some(r) = part.strip_prefix("r=") {
                nonce = Some(r.to_owned());
            } else if let Some(s) = part.strip_prefix("s=") {
                salt = Some(B64.decode(s).map_err(|_| "bad salt")?);
            } else if let Some(i) = part.strip_prefix("i=") {
                iterations = Some(i.parse::<u32>().map_err(|_| "bad iteration count")?);
            }
        }
        let nonce = nonce.ok_or("server-first has no nonce")?;
        if !nonce.starts_with(&self.nonce) {
            return Err("the server's nonce does not extend ours".into());
        }
        let salt = salt.ok_or("server-first has no salt")?;
        let iterations = iterations.ok_or("server-first has no iteration count")?;
        if iterations < 4096 {
            return Err("too few iterations".into());
        }
        let salted = self.mechanism.salted(&self.password, &salt, iterations);
        let client_key = self.mechanism.hmac(&salted, b"Client Key");
        let stored_key = self.mechanism.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = self.mechanism.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = self.mechanism.hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(self.mechanism.hmac(&server_key, auth.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).map_err(|_| "server-final is not UTF-8")?;
        let v = text
            .strip_prefix("v=")
            .ok_or_else(|| format!("the server refused: {text}"))?;
        let got = B64.decode(v).map_err(|_| "bad server signature")?;
        match &self.expected_server_signature {
            Some(want) if *want == got => Ok(()),
            _ => Err("the server's signature does not match".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client side, to drive the server side (RFC 7677's example).
    fn client_final(
        mechanism: Mechanism,
        user: &str,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> String {
        let parts: Vec<&str> = server_first.split(',').collect();
        let nonce = parts[0].strip_prefix("r=").unwrap();
        let salt = B64.decode(parts[1].strip_prefix("s=").unwrap()).unwrap();
        let iterations: u32 = parts[2].strip_prefix("i=").unwrap().parse().unwrap();
        let salted = mechanism.salted(
            &prepared(mechanism, user, password).unwrap(),
            &salt,
            iterations,
        );
        let client_key = mechanism.hmac(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = mechanism.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn rfc_7677_stored_keys() {
        // RFC 7677 section 3: user "user", password "pencil", 4096 iterations.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let c = credential_with(Mechanism::Sha256, "user", "pencil", &salt, 4096).unwrap();
        let salted = Mechanism::Sha256.salted(b"pencil", &salt, 4096);
        let server_key = Mechanism::Sha256.hmac(&salted, b"Server Key");
        assert_eq!(c.server_key, B64.encode(server_key));
        // The RFC's server signature for its exchange.
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let sig = Mechanism::Sha256.hmac(&B64.decode(&c.server_key).unwrap(), auth.as_bytes());
        assert_eq!(
            B64.encode(sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn a_conversation_accepts_the_right_password_only() {
        for mechanism in [Mechanism::Sha1, Mechanism::Sha256] {
            let cred = credential(mechanism, "alice", "s3cret").unwrap();
            let (user, nonce, bare) = parse_client_first(b"n,,n=alice,r=abcdef").unwrap();
            assert_eq!(user, "alice");
            let (conv, server_first) =
                Conversation::start(mechanism, user, &nonce, bare.clone(), cred.clone());
            let server_first = String::from_utf8(server_first).unwrap();
            let good = client_final(mechanism, "alice", "s3cret", &bare, &server_first);
            assert!(conv.finish(good.as_bytes()).unwrap().starts_with(b"v="));
            let bad = client_final(mechanism, "alice", "wrong", &bare, &server_first);
            assert!(conv.finish(bad.as_bytes()).is_err());
        }
    }

    #[test]
    fn the_client_side_talks_to_the_server_side() {
        for mechanism in [Mechanism::Sha1, Mechanism::Sha256] {
            let cred = credential(mechanism, "router", "pw").unwrap();
            let (mut client, first) = ClientScram::start(mechanism, "router", "pw").unwrap();
            let (user, nonce, bare) = parse_client_first(&first).unwrap();
            let (conv, server_first) = Conversation::start(mechanism, user, &nonce, bare, cred);
            let last = client.finish(&server_first).unwrap();
            let server_final = conv.finish(&last).unwrap();
            client.verify(&server_final).unwrap();
        }
    }
}
