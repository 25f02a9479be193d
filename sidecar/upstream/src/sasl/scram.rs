//! SCRAM-SHA-256 / SCRAM-SHA-512 client (RFC 5802, RFC 7677) as Kafka brokers speak it: no channel binding, the
//! password used as UTF-8 bytes (Kafka does not apply SASLprep), and the server signature verified at the end.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::{digest, hmac, pbkdf2};

mod server;
pub use server::{Refused, Server};

/// A broker may ask for fewer iterations than Kafka's minimum of 4096 only if it is broken; more than this would
/// let it burn our CPU for seconds per connection.
const MAX_ITERATIONS: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Hash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Hash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Hash::Sha256 => hmac::HMAC_SHA256,
            Hash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha512 => &digest::SHA512,
        }
    }
}

/// Client state between the messages of one SCRAM exchange.
pub(crate) struct Client {
    hash: Hash,
    password: String,
    nonce: String,
    first_bare: String,
    /// `ServerKey` and `AuthMessage`, set once the client-final message is built; the server-final message must
    /// carry their HMAC.
    expected: Option<(hmac::Key, String)>,
}

impl Client {
    /// A client with a caller-chosen nonce: printable ASCII without ','.
    pub fn new(hash: Hash, username: &str, password: &str, nonce: String) -> Self {
        let first_bare = format!("n={},r={nonce}", sasl_name(username));
        Self { hash, password: password.to_string(), nonce, first_bare, expected: None }
    }

    /// A client with a fresh random nonce.
    pub fn with_random_nonce(hash: Hash, username: &str, password: &str) -> Result<Self, String> {
        let mut bytes = [0u8; 24];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| "no randomness available for the SCRAM nonce".to_string())?;
        Ok(Self::new(hash, username, password, BASE64.encode(bytes)))
    }

    /// `client-first-message`: no channel binding, no authorization id.
    pub fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// `client-final-message` for the broker's `server-first-message`.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| "server-first-message is not UTF-8".to_string())?;
        let attrs = attributes(server_first)?;
        if let Some(e) = attrs.get('e') {
            return Err(format!("broker error: {e}"));
        }
        if attrs.get('m').is_some() {
            return Err("broker requires an unsupported SCRAM extension".into());
        }
        let nonce = attrs.get('r').ok_or("server-first-message has no nonce")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
            return Err("broker's nonce does not extend ours".into());
        }
        let salt = BASE64.decode(attrs.get('s').ok_or("server-first-message has no salt")?).map_err(|_| "bad salt")?;
        let iterations: u32 =
            attrs.get('i').and_then(|i| i.parse().ok()).ok_or("server-first-message has no iteration count")?;
        let iterations = std::num::NonZeroU32::new(iterations)
            .filter(|i| i.get() <= MAX_ITERATIONS)
            .ok_or_else(|| format!("iteration count {iterations} is out of range"))?;

        let mut salted = vec![0u8; self.hash.digest().output_len()];
        pbkdf2::derive(self.hash.pbkdf2(), iterations, &salt, self.password.as_bytes(), &mut salted);
        let salted = hmac::Key::new(self.hash.hmac(), &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(self.hash.digest(), client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let client_signature =
            hmac::sign(&hmac::Key::new(self.hash.hmac(), stored_key.as_ref()), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.as_ref().iter().zip(client_signature.as_ref()).map(|(k, s)| k ^ s).collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        self.expected = Some((hmac::Key::new(self.hash.hmac(), server_key.as_ref()), auth_message));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks the `server-final-message`: the broker proves it knows the password too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).map_err(|_| "server-final-message is not UTF-8".to_string())?;
        let attrs = attributes(text)?;
        if let Some(e) = attrs.get('e') {
            return Err(format!("broker error: {e}"));
        }
        let (server_key, auth_message) =
            self.expected.as_ref().ok_or("server-final-message before client-final-message")?;
        let received = BASE64
            .decode(attrs.get('v').ok_or("server-final-message has no verifier")?)
            .map_err(|_| "bad server signature encoding")?;
        // Compared in constant time; a mismatch means the broker does not hold our credentials.
        if hmac::verify(server_key, auth_message.as_bytes(), &received).is_err() {
            return Err("the broker's signature is wrong: it does not know this user's credentials".into());
        }
        Ok(())
    }
}

/// `saslname` escaping of a username (RFC 5802 §5.1).
fn sasl_name(username: &str) -> String {
    username.replace('=', "=3D").replace(',', "=2C")
}

/// `a=value` pairs of a SCRAM message, in order.
struct Attributes<'a>(Vec<(char, &'a str)>);

impl<'a> Attributes<'a> {
    fn get(&self, key: char) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

fn attributes(message: &str) -> Result<Attributes<'_>, String> {
    message
        .split(',')
        .map(|part| {
            let mut chars = part.chars();
            match (chars.next(), chars.next()) {
                (Some(k), Some('=')) if k.is_ascii_alphabetic() => Ok((k, &part[2..])),
                _ => Err(format!("malformed SCRAM attribute {part:?}")),
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3.
    #[test]
    fn sha256_matches_rfc7677_test_vector() {
        let mut c = Client::new(Hash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO".into());
        assert_eq!(c.first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = c.respond(server_first).unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();
        let forged = c.verify(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap_err();
        assert!(forged.contains("signature is wrong"), "{forged}");
    }

    #[test]
    fn usernames_are_escaped_and_random_nonces_differ() {
        let a = Client::with_random_nonce(Hash::Sha512, "a=b,c", "p").unwrap();
        let b = Client::with_random_nonce(Hash::Sha512, "a=b,c", "p").unwrap();
        let first = String::from_utf8(a.first()).unwrap();
        assert!(first.starts_with("n,,n=a=3Db=2Cc,r="), "{first}");
        assert!(!first[first.find(",r=").unwrap() + 3..].contains(','));
        assert_ne!(a.first(), b.first());
    }

    #[test]
    fn hostile_server_first_messages_are_refused() {
        let mut c = Client::new(Hash::Sha512, "u", "p", "abc".into());
        for (msg, why) in [
            (&b"r=xyz,s=AAAA,i=4096"[..], "does not extend"),
            (b"r=abc,s=AAAA,i=4096", "does not extend"),
            (b"r=abcd,s=AAAA,i=0", "out of range"),
            (b"r=abcd,s=AAAA,i=4000000000", "out of range"),
            (b"r=abcd,s=!!,i=4096", "bad salt"),
            (b"e=invalid-proof", "broker error"),
            (b"m=ext,r=abcd,s=AAAA,i=4096", "extension"),
            (b"garbage", "malformed"),
            (b"\xff", "UTF-8"),
        ] {
            let err = c.respond(msg).unwrap_err();
            assert!(err.contains(why), "{msg:?}: {err}");
        }
        assert!(c.verify(b"v=AAAA").unwrap_err().contains("before client-final"));
    }

    #[test]
    fn sha512_proof_has_the_digest_length() {
        let mut c = Client::new(Hash::Sha512, "u", "p", "abc".into());
        let out = String::from_utf8(c.respond(b"r=abcdef,s=QUJD,i=4096").unwrap()).unwrap();
        let proof = BASE64.decode(out.rsplit_once(",p=").unwrap().1).unwrap();
        assert_eq!(proof.len(), 64);
    }
}
