//! The connector's state directory: where the service is, who we are, our key and
//! certificate (mode 0600), the CA that vouches for the service.

use std::fs;
use std::path::{Path, PathBuf};

use gatehouse_core::secret_file;
use serde::{Deserialize, Serialize};

use crate::ConnectorError;

const IDENTITY: &str = "connector.json";
const KEY: &str = "key.pem";
const CERT: &str = "cert.pem";
const CA: &str = "ca.pem";

/// Who this connector is and where its service listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The service's tunnel listener, `host:port`.
    pub service: String,
    /// The name in the service's certificate (the URL's host).
    pub server_name: String,
    /// Our id.
    pub connector_id: String,
    /// Our group.
    pub group: String,
    /// When the current certificate was issued (Unix seconds).
    pub issued_at: u64,
}

/// Everything the connector keeps on disk.
#[derive(Clone, Debug)]
pub struct State {
    /// The directory.
    pub dir: PathBuf,
    /// Identity and service address.
    pub identity: Identity,
    /// Our private key, PEM.
    pub key_pem: String,
    /// Our certificate, PEM.
    pub cert_pem: String,
    /// The connector CA, PEM.
    pub ca_pem: String,
}

impl State {
    /// Loads a registered connector's state.
    pub fn load(dir: &Path) -> Result<Self, ConnectorError> {
        let read = |name: &str| {
            let path = dir.join(name);
            secret_file::read(&path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| ConnectorError::Io(path, e))
        };
        let identity_text = read(IDENTITY)?;
        let identity: Identity = serde_json::from_str(&identity_text)
            .map_err(|e| ConnectorError::State(format!("{}: {e}", dir.join(IDENTITY).display())))?;
        Ok(State {
            dir: dir.to_owned(),
            identity,
            key_pem: read(KEY)?,
            cert_pem: read(CERT)?,
            ca_pem: read(CA)?,
        })
    }

    /// Writes a fresh registration; refuses to overwrite an existing one.
    pub fn create(&self) -> Result<(), ConnectorError> {
        if self.dir.join(IDENTITY).exists() {
            return Err(ConnectorError::State(format!(
                "{} already holds a registered connector; use another --state-dir or delete it",
                self.dir.display()
            )));
        }
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(&self.dir)
            .map_err(|e| ConnectorError::Io(self.dir.clone(), e))?;
        self.write(KEY, &self.key_pem)?;
        self.write(CERT, &self.cert_pem)?;
        self.write(CA, &self.ca_pem)?;
        self.write_identity()
    }

    /// Replaces key and certificate after a renewal (the old pair stays valid until it
    /// expires; the new files replace the old ones in one step each).
    pub fn store_renewal(
        &mut self,
        key_pem: String,
        cert_pem: String,
        now: u64,
    ) -> Result<(), ConnectorError> {
        self.write(KEY, &key_pem)?;
        self.write(CERT, &cert_pem)?;
        self.key_pem = key_pem;
        self.cert_pem = cert_pem;
        self.identity.issued_at = now;
        self.write_identity()
    }

    fn write_identity(&self) -> Result<(), ConnectorError> {
        let text = serde_json::to_string_pretty(&self.identity)
            .map_err(|e| ConnectorError::State(e.to_string()))?;
        self.write(IDENTITY, &text)
    }

    fn write(&self, name: &str, contents: &str) -> Result<(), ConnectorError> {
        let path = self.dir.join(name);
        secret_file::replace(&path, contents.as_bytes()).map_err(|e| ConnectorError::Io(path, e))
    }
}
