//! Whether the credential files a config names are there. Secret volumes are fixed when a pod is created, so a
//! policy edit naming a Secret (or a key) the pod does not mount cannot work until the pod is restarted: such a
//! config is refused, the last good one keeps serving, and the log says which Secret and file are missing.

use std::path::{Component, Path, PathBuf};

use kproxy_api::config::SidecarConfig;

/// A credential file a config names that is not there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub cluster: String,
    /// The config field naming it, e.g. `sasl.passwordFile`.
    pub field: &'static str,
    pub path: PathBuf,
    /// The Secret it belongs to: the first component of a path relative to the secrets directory.
    pub secret: Option<String>,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (cluster, field, path) = (&self.cluster, self.field, self.path.display());
        match &self.secret {
            Some(secret) => write!(f, "cluster {cluster} {field}: {path} (Secret {secret}) is not mounted"),
            None => write!(f, "cluster {cluster} {field}: {path} does not exist"),
        }
    }
}

/// Every credential file of `config` that does not exist; relative paths resolve against `secrets_dir`.
pub fn missing(config: &SidecarConfig, secrets_dir: &Path) -> Vec<Missing> {
    let mut out = Vec::new();
    for cluster in &config.clusters {
        let tls = cluster
            .tls
            .iter()
            .flat_map(|t| [("tls.caFile", &t.ca_file), ("tls.certFile", &t.cert_file), ("tls.keyFile", &t.key_file)]);
        let sasl = cluster.sasl.iter().flat_map(|s| {
            [
                ("sasl.usernameFile", &s.username_file),
                ("sasl.passwordFile", &s.password_file),
                ("sasl.tokenFile", &s.token_file),
            ]
        });
        for (field, file) in tls.chain(sasl) {
            let Some(file) = file else { continue };
            let named = Path::new(file);
            let path = secrets_dir.join(named);
            // Secret volume files are symlinks into the volume's current data: follow them.
            if path.is_file() {
                continue;
            }
            let secret = match named.components().next() {
                Some(Component::Normal(first)) if named.is_relative() => Some(first.to_string_lossy().into_owned()),
                _ => None,
            };
            out.push(Missing { cluster: cluster.name.clone(), field, path, secret });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_not_mounted_are_named_with_their_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("east-kafka")).unwrap();
        std::fs::write(dir.path().join("east-kafka/username"), "u").unwrap();
        let text = "clusters:\n- name: east\n  bootstrapServers: [\"h:1\"]\n  tls: {caFile: /nowhere/ca.crt}\n  \
                    sasl: {mechanism: SCRAM-SHA-512, usernameFile: east-kafka/username, passwordFile: \
                    east-kafka/password}\n- name: west\n  bootstrapServers: [\"h:2\"]\n  sasl: {mechanism: PLAIN, \
                    usernameFile: west-kafka/username, passwordFile: east-kafka/username}\n";
        let config = SidecarConfig::parse(text).unwrap();
        let found: Vec<String> = missing(&config, dir.path()).iter().map(ToString::to_string).collect();
        let root = dir.path().display();
        assert_eq!(
            found,
            [
                "cluster east tls.caFile: /nowhere/ca.crt does not exist".to_string(),
                format!(
                    "cluster east sasl.passwordFile: {root}/east-kafka/password (Secret east-kafka) is not mounted"
                ),
                format!(
                    "cluster west sasl.usernameFile: {root}/west-kafka/username (Secret west-kafka) is not mounted"
                ),
            ]
        );
        let plain = SidecarConfig::parse("clusters:\n- name: east\n  bootstrapServers: [\"h:1\"]\n").unwrap();
        assert!(missing(&plain, dir.path()).is_empty());
    }
}
