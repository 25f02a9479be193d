//! Shared state of upstream connections: where secrets are mounted, timeouts, and the caches that notice rotation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use kproxy_api::config::{Sasl, Tls};
use rustls::ClientConfig;

use crate::{Error, Result};

/// Settings and caches shared by every upstream connection of a sidecar; cheap to share behind an `Arc`.
///
/// Secret files are read through a cache keyed by the file's identity (inode, size, modification time): kubelet
/// rotates a mounted Secret by swapping a symlink to new files, which changes that identity, so the next
/// connection reads the new content while open connections keep the session they authenticated.
#[derive(Debug)]
pub struct Context {
    secrets_dir: PathBuf,
    timeout: Duration,
    client_id: String,
    files: Mutex<HashMap<PathBuf, CachedFile>>,
    /// Parsed TLS configs; rebuilding one parses every certificate, so it happens only when a file changed.
    tls: Mutex<Vec<CachedTls>>,
}

#[derive(Debug)]
struct CachedFile {
    identity: Identity,
    content: Arc<[u8]>,
}

#[derive(Debug)]
struct CachedTls {
    settings: Tls,
    identities: Vec<Option<Identity>>,
    config: Arc<ClientConfig>,
}

/// What changes when a file is replaced or rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

/// SASL credentials as read from the mounted files.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    Password { username: String, password: String },
    Token(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Password { username, .. } => write!(f, "Password {{ username: {username:?}, .. }}"),
            Credentials::Token(_) => f.write_str("Token(..)"),
        }
    }
}

impl Context {
    /// A context resolving relative secret paths against `secrets_dir` (usually
    /// [`kproxy_api::config::SECRETS_MOUNT_DIR`]), with a 10 s timeout per connection step.
    pub fn new(secrets_dir: impl Into<PathBuf>) -> Self {
        Self {
            secrets_dir: secrets_dir.into(),
            timeout: Duration::from_secs(10),
            client_id: "kproxy".to_string(),
            files: Mutex::default(),
            tls: Mutex::default(),
        }
    }

    /// Bounds each step (TCP connect, TLS handshake, every SASL round trip) so a silent broker cannot hang a caller.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The client id sent in the requests this crate makes itself (ApiVersions and SASL).
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn secrets_dir(&self) -> &Path {
        &self.secrets_dir
    }

    /// An absolute path as is; a relative one inside the secrets directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() { p.to_path_buf() } else { self.secrets_dir.join(p) }
    }

    /// The current content of a secret file, read again only when the file changed.
    ///
    /// Secret volumes are small files on tmpfs, so the blocking read is short enough for an async caller.
    pub(crate) fn read(&self, path: &str) -> Result<Arc<[u8]>> {
        let path = self.resolve(path);
        let identity = identity(&path)?;
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = files.get(&path)
            && cached.identity == identity
        {
            return Ok(cached.content.clone());
        }
        let content: Arc<[u8]> = std::fs::read(&path).map_err(|source| file_error(&path, source))?.into();
        files.insert(path, CachedFile { identity, content: content.clone() });
        Ok(content)
    }

    /// The credentials a SASL setting names, as the mounted files hold them now.
    pub(crate) fn credentials(&self, sasl: &Sasl) -> Result<Credentials> {
        use kproxy_api::config::SaslMechanism;
        let text = |field: &str, path: &Option<String>| -> Result<String> {
            let path = path
                .as_deref()
                .ok_or_else(|| Error::Config(format!("sasl.{field} is required for {:?}", sasl.mechanism)))?;
            let bytes = self.read(path)?;
            let text = std::str::from_utf8(&bytes).map_err(|_| Error::File {
                path: self.resolve(path).display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
            })?;
            Ok(trim_line_end(text).to_string())
        };
        Ok(match sasl.mechanism {
            SaslMechanism::OauthBearer => Credentials::Token(text("tokenFile", &sasl.token_file)?.trim().to_string()),
            _ => Credentials::Password {
                username: text("usernameFile", &sasl.username_file)?,
                password: text("passwordFile", &sasl.password_file)?,
            },
        })
    }

    /// The rustls config for a TLS setting, rebuilt only when one of its files changed.
    pub(crate) fn tls_config(&self, settings: &Tls) -> Result<Arc<ClientConfig>> {
        let paths: Vec<PathBuf> = [&settings.ca_file, &settings.cert_file, &settings.key_file]
            .into_iter()
            .map(|f| f.as_deref().map(|p| self.resolve(p)).unwrap_or_default())
            .collect();
        let identities = paths.iter().map(|p| if p.as_os_str().is_empty() { Ok(None) } else { identity(p).map(Some) });
        let identities = identities.collect::<Result<Vec<_>>>()?;
        let mut cache = self.tls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = cache.iter().find(|c| &c.settings == settings)
            && cached.identities == identities
        {
            return Ok(cached.config.clone());
        }
        let config = Arc::new(crate::tls::client_config(settings, self)?);
        cache.retain(|c| &c.settings != settings);
        cache.push(CachedTls { settings: settings.clone(), identities, config: config.clone() });
        Ok(config)
    }
}

/// Secret files created from a text file often end with a newline that is not part of the secret.
fn trim_line_end(s: &str) -> &str {
    s.strip_suffix("\r\n").or_else(|| s.strip_suffix('\n')).unwrap_or(s)
}

fn identity(path: &Path) -> Result<Identity> {
    let meta = std::fs::metadata(path).map_err(|source| file_error(path, source))?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(Identity { len: meta.len(), modified: meta.modified().ok(), inode })
}

pub(crate) fn file_error(path: &Path, source: std::io::Error) -> Error {
    Error::File { path: path.display().to_string(), source }
}

#[cfg(test)]
mod tests;
