//! TLS, mTLS and API keys: [`TlsFiles`] builds a
//! [`ClientTlsConfig`](tonic::transport::ClientTlsConfig) from PEM files and
//! [`ApiKey`] is an interceptor that sends `authorization: Bearer <key>`
//! with every call.
//!
//! ```no_run
//! use std::time::Duration;
//! use tokenservice_client::auth::{ApiKey, TlsFiles};
//! use tokenservice_client::tonic::transport::Endpoint;
//! use tokenservice_client::v1::token_service_client::TokenServiceClient;
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = TlsFiles {
//!     ca_file: Some("ca.pem".into()),
//!     cert_file: Some("client.pem".into()), // mTLS: both or neither
//!     key_file: Some("client-key.pem".into()),
//!     ..Default::default()
//! };
//! let channel = Endpoint::from_static("https://tokenservice:50051") // https: TLS is only used for https URIs
//!     .timeout(Duration::from_secs(5))
//!     .tls_config(tls.client_tls_config()?)?
//!     .connect_lazy();
//! let mut client = TokenServiceClient::with_interceptor(channel, ApiKey::new("the-key")?);
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::{Request, Status};

/// PEM files for a TLS or mTLS connection to the service.
///
/// tonic only uses TLS for `https://` URIs: give the endpoint an `https`
/// URI when you give it this configuration, or it connects in plaintext.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle that verifies the server's certificate; `None`: the
    /// system's roots (rustls-native-certs).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (chain) for mTLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client private key for mTLS; needs `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name checked in the server's certificate instead of the URI's host
    /// (connecting by IP address or through a proxy).
    pub server_name: Option<String>,
}

/// Which file of [`TlsFiles`] a [`TlsFileError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFile {
    /// [`TlsFiles::ca_file`]
    Ca,
    /// [`TlsFiles::cert_file`]
    Cert,
    /// [`TlsFiles::key_file`]
    Key,
}

/// A TLS file that cannot be read or holds no PEM data of the expected
/// kind, or a `cert_file` without a `key_file` (or the other way round).
#[derive(Debug)]
pub struct TlsFileError {
    /// The file concerned.
    pub file: TlsFile,
    /// Its path (for a certificate without its key or the other way round:
    /// the path of the one that was given).
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.file {
            TlsFile::Ca => "ca_file",
            TlsFile::Cert => "cert_file",
            TlsFile::Key => "key_file",
        };
        write!(f, "{name} {}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for TlsFileError {}

fn read_pem(file: TlsFile, path: &Path, marker: &str) -> Result<Vec<u8>, TlsFileError> {
    let error = |problem: String| TlsFileError {
        file,
        path: path.to_owned(),
        problem,
    };
    let data = std::fs::read(path).map_err(|e| error(format!("cannot read: {e}")))?;
    if !data.windows(marker.len()).any(|w| w == marker.as_bytes()) {
        return Err(error(format!(
            "no PEM {} block in it",
            marker.trim_matches('-').trim()
        )));
    }
    Ok(data)
}

/// Checks that every PEM certificate in `data` parses (tonic would skip a
/// bad CA certificate silently and then fail every handshake).
fn check_certificates(file: TlsFile, path: &Path, data: &[u8]) -> Result<(), TlsFileError> {
    let error = |problem: String| TlsFileError {
        file,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("cannot load: {e}")))?;
    let mut store = rustls::RootCertStore::empty();
    let (_, invalid) = store.add_parsable_certificates(certs);
    if invalid > 0 {
        return Err(error(format!(
            "cannot load: {invalid} certificate(s) do not parse"
        )));
    }
    Ok(())
}

impl TlsFiles {
    /// Whether any field is set, i.e. whether the connection should use TLS.
    pub fn is_set(&self) -> bool {
        self != &Self::default()
    }

    /// Reads and parses the files now and returns the TLS configuration for
    /// [`Endpoint::tls_config`](tonic::transport::Endpoint::tls_config)
    /// (which fails if the key does not belong to the certificate).
    pub fn client_tls_config(&self) -> Result<ClientTlsConfig, TlsFileError> {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_file {
            Some(path) => {
                let pem = read_pem(TlsFile::Ca, path, "-----BEGIN CERTIFICATE-----")?;
                check_certificates(TlsFile::Ca, path, &pem)?;
                config.ca_certificate(Certificate::from_pem(pem))
            }
            None => config.with_native_roots(),
        };
        match (&self.cert_file, &self.key_file) {
            (Some(cert_path), Some(key_path)) => {
                let cert = read_pem(TlsFile::Cert, cert_path, "-----BEGIN CERTIFICATE-----")?;
                check_certificates(TlsFile::Cert, cert_path, &cert)?;
                let key = read_pem(TlsFile::Key, key_path, "PRIVATE KEY-----")?;
                PrivateKeyDer::from_pem_slice(&key).map_err(|e| TlsFileError {
                    file: TlsFile::Key,
                    path: key_path.clone(),
                    problem: format!("cannot load: {e}"),
                })?;
                // Whether the key belongs to the certificate is checked by
                // Endpoint::tls_config.
                config = config.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            (Some(path), None) | (None, Some(path)) => {
                return Err(TlsFileError {
                    file: if self.cert_file.is_some() {
                        TlsFile::Key
                    } else {
                        TlsFile::Cert
                    },
                    path: path.clone(),
                    problem: "cert_file and key_file go together: give both for mTLS, or neither"
                        .into(),
                })
            }
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

/// An interceptor that sends `authorization: Bearer <key>` with every call,
/// for `TokenServiceClient::with_interceptor`. [`ApiKey::none`] sends
/// nothing, so one client type serves both cases.
///
/// It cannot see the connection: use it only on an endpoint with TLS (an
/// `https` URI and a `tls_config`), or the key travels in plaintext.
#[derive(Clone, Default)]
pub struct ApiKey {
    header: Option<AsciiMetadataValue>,
}

/// The API key is not a valid header value (empty, or not visible ASCII).
#[derive(Debug)]
pub struct InvalidApiKey;

impl fmt::Display for InvalidApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the API key must be non-empty printable ASCII without surrounding spaces")
    }
}

impl std::error::Error for InvalidApiKey {}

impl ApiKey {
    /// Sends `authorization: Bearer <key>`.
    pub fn new(key: &str) -> Result<Self, InvalidApiKey> {
        if key.is_empty() || key.trim() != key || !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(InvalidApiKey);
        }
        let mut value: AsciiMetadataValue =
            MetadataValue::try_from(format!("Bearer {key}")).map_err(|_| InvalidApiKey)?;
        value.set_sensitive(true);
        Ok(Self {
            header: Some(value),
        })
    }

    /// Sends no `authorization` header.
    pub fn none() -> Self {
        Self { header: None }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.header.is_some() {
            "<redacted>"
        } else {
            "none"
        };
        write!(f, "ApiKey({shown})")
    }
}

impl Interceptor for ApiKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}
