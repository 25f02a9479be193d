//! The kproxy contract: the policy types users write and the config the sidecar reads, defined once for both sides.
#![forbid(unsafe_code)]

pub mod config;
pub mod policy;

#[cfg(feature = "kube")]
pub mod crd;

/// Errors from reading or checking a rendered sidecar config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config is not valid YAML/JSON: {0}")]
    Parse(#[from] serde_yaml_ng::Error),
    #[error("config is invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A config of a newer major schema version: fields may mean something this version would get wrong.
    #[error(
        "config schemaVersion {found} is newer than this sidecar reads ({supported}): it is not applied; upgrade the \
         sidecar (README \"Upgrading\")"
    )]
    NewerSchema { found: String, supported: &'static str },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
