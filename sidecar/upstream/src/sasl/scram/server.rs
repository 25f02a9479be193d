//! The server side of SCRAM-SHA-256/512, for the sidecar answering its own clients: it accepts exactly the
//! cluster's configured username and password, so a client configured with the credentials it used against the
//! broker keeps working, and completes the exchange honestly (the server-final message proves the same password).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kproxy_api::config::{Cluster, SaslMechanism};
use ring::{digest, hmac, pbkdf2};

use super::{Hash, attributes};
use crate::context::Credentials;
use crate::{Context, Result};

/// Kafka's minimum, and what its brokers store by default.
const ITERATIONS: u32 = 4096;

/// One client's SCRAM exchange with the sidecar.
pub struct Server {
    hash: Hash,
    username: String,
    password: String,
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
            Credentials::Password { username, password } => Ok(Some(Server { hash, username, password, first: None })),
            Credentials::Token(_) => Ok(None),
        }
    }

    /// The server-first message for the client-first message; fails for any other user than the configured one.
    pub fn first(&mut self, client_first: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(client_first).map_err(|_| "client-first-message is not UTF-8".to_string())?;
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
        if user.replace("=2C", ",").replace("=3D", "=") != self.username {
            return Err("unknown user".into());
        }
        let mut random = [0u8; 34];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| "no randomness available for SCRAM".to_string())?;
        let (nonce_bytes, salt) = random.split_at(18);
        let nonce = format!("{client_nonce}{}", BASE64.encode(nonce_bytes));
        let server_first = format!("r={nonce},s={},i={ITERATIONS}", BASE64.encode(salt));

        let mut salted = vec![0u8; self.hash.digest().output_len()];
        let iterations = std::num::NonZeroU32::new(ITERATIONS).ok_or("zero iterations")?;
        pbkdf2::derive(self.hash.pbkdf2(), iterations, salt, self.password.as_bytes(), &mut salted);
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

    /// Checks the client's proof and returns the server-final message; fails when the password differs.
    pub fn last(&mut self, client_final: &[u8]) -> Result<Vec<u8>, String> {
        let first = self.first.take().ok_or("client-final-message before client-first-message")?;
        let text = std::str::from_utf8(client_final).map_err(|_| "client-final-message is not UTF-8".to_string())?;
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
            return Err("wrong username or password".into());
        }
        let client_key: Vec<u8> = proof.iter().zip(signature.as_ref()).map(|(p, s)| p ^ s).collect();
        // HMAC verification compares in constant time: the derived key must hash to the stored key.
        let check = hmac::Key::new(self.hash.hmac(), b"kproxy scram check");
        let tag = hmac::sign(&check, digest::digest(self.hash.digest(), &client_key).as_ref());
        if hmac::verify(&check, first.stored_key.as_ref(), tag.as_ref()).is_err() {
            return Err("wrong username or password".into());
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
        Server { hash, username: "a,b=c".into(), password: password.into(), first: None }
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
    fn another_password_user_or_exchange_is_refused() {
        let mut s = server(Hash::Sha512, "pencil");
        let mut c = Client::with_random_nonce(Hash::Sha512, "a,b=c", "crayon").unwrap();
        let server_first = s.first(&c.first()).unwrap();
        let err = s.last(&c.respond(&server_first).unwrap()).unwrap_err();
        assert!(err.contains("wrong username or password"), "{err}");

        let c = Client::with_random_nonce(Hash::Sha512, "someone", "pencil").unwrap();
        assert!(server(Hash::Sha512, "pencil").first(&c.first()).unwrap_err().contains("unknown user"));
        assert!(server(Hash::Sha512, "p").first(b"p=tls-unique,,n=a=2Cb=3Dc,r=x").unwrap_err().contains("binding"));
        assert!(server(Hash::Sha512, "p").last(b"c=biws,r=x,p=AAAA").unwrap_err().contains("before"));

        // A client-final message replayed into another exchange carries the other nonce.
        let (mut s1, mut s2) = (server(Hash::Sha256, "pencil"), server(Hash::Sha256, "pencil"));
        let mut c = Client::with_random_nonce(Hash::Sha256, "a,b=c", "pencil").unwrap();
        let first = c.respond(&s1.first(&c.first()).unwrap()).unwrap();
        s2.first(&c.first()).unwrap();
        assert!(s2.last(&first).unwrap_err().contains("does not continue"));
    }
}
