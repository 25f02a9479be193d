//! The server side of SCRAM-SHA-256/512, for the sidecar answering its own clients: it accepts exactly the
//! cluster's configured username and password, so a client configured with the credentials it used against the
//! broker keeps working, and completes the exchange honestly (the server-final message proves the same password).
//!
//! An unknown user and a wrong password fail alike ([`Refused::Credentials`]) and after the same work: an
//! unknown user still gets a server-first message, salted and derived from a random password with the same
//! iterations, and the proof is checked the same way; only then does the exchange fail.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kproxy_api::config::{Cluster, SaslMechanism};
use ring::{digest, hmac, pbkdf2};

use super::{Hash, attributes};
use crate::context::Credentials;
use crate::{Context, Result};

/// Kafka's minimum, and what its brokers store by default.
const ITERATIONS: u32 = 4096;

/// Why a client's SCRAM exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The message does not follow RFC 5802 or does not continue this exchange; says nothing of credentials.
    #[error("{0}")]
    Malformed(String),
    /// An unknown user or a wrong password: told apart neither in the answer nor in the work done.
    #[error("invalid credentials")]
    Credentials,
}

impl From<&str> for Refused {
    fn from(reason: &str) -> Self {
        Refused::Malformed(reason.to_string())
    }
}

impl From<String> for Refused {
    fn from(reason: String) -> Self {
        Refused::Malformed(reason)
    }
}

/// One client's SCRAM exchange with the sidecar.
pub struct Server {
    hash: Hash,
    username: String,
    password: String,
    /// Whether the client-first message named the configured user; checked only after the proof.
    known: bool,
    /// Set by the client-first message: what the client-final message must match.
    first: Option<First>,
}

struct First {
    gs2_header: String,
    nonce: String,
    /// `client-first-message-bare,server-first-message`, the start of the AuthMessage.
    messages: String,
    stored_key: digest::Digest,
    server_key: hmac::Key,
}

impl Server {
    /// A server for `mechanism` (`SCRAM-SHA-256` or `SCRAM-SHA-512`) holding the cluster's configured username and
    /// password as the mounted files hold them now; `None` when the cluster has no password to compare with.
    pub fn for_cluster(cluster: &Cluster, ctx: &Context, mechanism: &str) -> Result<Option<Server>> {
        let hash = match mechanism {
            "SCRAM-SHA-256" => Hash::Sha256,
            "SCRAM-SHA-512" => Hash::Sha512,
            _ => return Ok(None),
        };
        let Some(sasl) = cluster.sasl.as_ref().filter(|s| s.mechanism != SaslMechanism::OauthBearer) else {
            return Ok(None);
        };
        match ctx.credentials(sasl)? {
            Credentials::Password { username, password } => {
                Ok(Some(Server { hash, username, password, known: false, first: None }))
            }
            Credentials::Token(_) => Ok(None),
        }
    }

    /// The server-first message for the client-first message, for any user: an unknown one fails only at
    /// [`Server::last`], like a wrong password.
    pub fn first(&mut self, client_first: &[u8]) -> Result<Vec<u8>, Refused> {
        let text = std::str::from_utf8(client_first).map_err(|_| "client-first-message is not UTF-8")?;
        let mut parts = text.splitn(3, ',');
        let (binding, authzid, bare) = (parts.next(), parts.next(), parts.next());
        let (Some(binding @ ("n" | "y")), Some(authzid), Some(bare)) = (binding, authzid, bare) else {
            return Err("client-first-message: channel binding is not supported".into());
        };
        let attrs = attributes(bare)?;
        if attrs.get('m').is_some() {
            return Err("client-first-message asks for an unsupported extension".into());
        }
        let user = attrs.get('n').ok_or("client-first-message has no username")?;
        let client_nonce = attrs.get('r').filter(|r| !r.is_empty()).ok_or("client-first-message has no nonce")?;
        // Digests of equal length are compared, so the time taken says nothing of how much of a name matched.
        let named = digest::digest(&digest::SHA256, user.replace("=2C", ",").replace("=3D", "=").as_bytes());
        self.known = named.as_ref() == digest::digest(&digest::SHA256, self.username.as_bytes()).as_ref();
        let mut random = [0u8; 66];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| "no randomness available for SCRAM")?;
        let (nonce_bytes, rest) = random.split_at(18);
        let (salt, decoy) = rest.split_at(16);
        // An unknown user's exchange derives its keys from a random password: the same work, a proof that fails.
        let password = if self.known { self.password.as_bytes() } else { decoy };
        let nonce = format!("{client_nonce}{}", BASE64.encode(nonce_bytes));
        let server_first = format!("r={nonce},s={},i={ITERATIONS}", BASE64.encode(salt));

        let mut salted = vec![0u8; self.hash.digest().output_len()];
        let iterations = std::num::NonZeroU32::new(ITERATIONS).ok_or("zero iterations")?;
        pbkdf2::derive(self.hash.pbkdf2(), iterations, salt, password, &mut salted);
        let salted = hmac::Key::new(self.hash.hmac(), &salted);
        let stored_key = digest::digest(self.hash.digest(), hmac::sign(&salted, b"Client Key").as_ref());
        let server_key = hmac::Key::new(self.hash.hmac(), hmac::sign(&salted, b"Server Key").as_ref());
        self.first = Some(First {
            gs2_header: format!("{binding},{authzid},"),
            nonce,
            messages: format!("{bare},{server_first}"),
            stored_key,
            server_key,
        });
        Ok(server_first.into_bytes())
    }

    /// Checks the client's proof and returns the server-final message; fails alike for a wrong password and an
    /// unknown user.
    pub fn last(&mut self, client_final: &[u8]) -> Result<Vec<u8>, Refused> {
        let first = self.first.take().ok_or("client-final-message before client-first-message")?;
        let text = std::str::from_utf8(client_final).map_err(|_| "client-final-message is not UTF-8")?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or("client-final-message has no proof")?;
        let attrs = attributes(without_proof)?;
        if attrs.get('c') != Some(&BASE64.encode(&first.gs2_header)) || attrs.get('r') != Some(&first.nonce) {
            return Err("client-final-message does not continue this exchange".into());
        }
        let proof = BASE64.decode(proof).map_err(|_| "bad proof encoding")?;
        let auth_message = format!("{},{without_proof}", first.messages);
        let stored = hmac::Key::new(self.hash.hmac(), first.stored_key.as_ref());
        let signature = hmac::sign(&stored, auth_message.as_bytes());
        if proof.len() != signature.as_ref().len() {
            return Err(Refused::Credentials);
        }
        let client_key: Vec<u8> = proof.iter().zip(signature.as_ref()).map(|(p, s)| p ^ s).collect();
        // HMAC verification compares in constant time: the derived key must hash to the stored key.
        let check = hmac::Key::new(self.hash.hmac(), b"kproxy scram check");
        let tag = hmac::sign(&check, digest::digest(self.hash.digest(), &client_key).as_ref());
        if hmac::verify(&check, first.stored_key.as_ref(), tag.as_ref()).is_err() || !self.known {
            return Err(Refused::Credentials);
        }
        let verifier = hmac::sign(&first.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(verifier)).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Client;
    use super::*;

    fn server(hash: Hash, password: &str) -> Server {
        Server { hash, username: "a,b=c".into(), password: password.into(), known: false, first: None }
    }

    #[test]
    fn a_client_with_the_configured_credentials_completes_the_exchange() {
        for hash in [Hash::Sha256, Hash::Sha512] {
            let mut s = server(hash, "pencil");
            let mut c = Client::with_random_nonce(hash, "a,b=c", "pencil").unwrap();
            let server_first = s.first(&c.first()).unwrap();
            let client_final = c.respond(&server_first).unwrap();
            let server_final = s.last(&client_final).unwrap();
            c.verify(&server_final).unwrap();
        }
    }

    #[test]
    fn an_unknown_user_and_a_wrong_password_fail_alike_after_the_whole_exchange() {
        let refused = |user: &str, password: &str| {
            let mut s = server(Hash::Sha512, "pencil");
            let mut c = Client::with_random_nonce(Hash::Sha512, user, password).unwrap();
            let server_first = s.first(&c.first()).expect("every user gets a server-first message");
            s.last(&c.respond(&server_first).unwrap()).unwrap_err()
        };
        assert_eq!(refused("a,b=c", "crayon"), Refused::Credentials);
        assert_eq!(refused("someone", "pencil"), Refused::Credentials);
        assert_eq!(refused("someone", "crayon"), Refused::Credentials);
    }

    #[test]
    fn malformed_messages_and_replays_are_refused_as_such() {
        let malformed = |r: Refused| match r {
            Refused::Malformed(reason) => reason,
            Refused::Credentials => panic!("not a credentials failure"),
        };
        let binding = server(Hash::Sha512, "p").first(b"p=tls-unique,,n=a=2Cb=3Dc,r=x").unwrap_err();
        assert!(malformed(binding).contains("binding"));
        assert!(malformed(server(Hash::Sha512, "p").last(b"c=biws,r=x,p=AAAA").unwrap_err()).contains("before"));

        // A client-final message replayed into another exchange carries the other nonce.
        let (mut s1, mut s2) = (server(Hash::Sha256, "pencil"), server(Hash::Sha256, "pencil"));
        let mut c = Client::with_random_nonce(Hash::Sha256, "a,b=c", "pencil").unwrap();
        let first = c.respond(&s1.first(&c.first()).unwrap()).unwrap();
        s2.first(&c.first()).unwrap();
        assert!(malformed(s2.last(&first).unwrap_err()).contains("does not continue"));
    }
}
