//! TLS to PostgreSQL through rustls, with libpq's `sslmode` semantics.
//!
//! RDS for PostgreSQL 15 and later refuses plaintext (`rds.force_ssl=1`), and a loader that
//! encrypts without checking who answers can be redirected by anyone on the path, so the
//! default is `verify-full`: the chain must end at a trusted root and the certificate must
//! name the host connected to. The trusted roots are the Amazon RDS roots embedded in the
//! binary (`certs/amazon-rds-roots.pem`, see its README) unless `sslrootcert` names a file.
//!
//! | `sslmode`     | encrypted | chain checked | host name checked |
//! |---------------|-----------|---------------|-------------------|
//! | `disable`     | no        | –             | –                 |
//! | `require`     | yes       | only with an explicit `sslrootcert` (as libpq) | no |
//! | `verify-ca`   | yes       | yes           | no                |
//! | `verify-full` | yes       | yes           | yes (default)     |
//!
//! `allow` and `prefer` are refused: both fall back to plaintext without a word.
//!
//! Channel binding (SCRAM-SHA-256-PLUS) is not offered: its `tls-server-end-point` hash must
//! follow the certificate's own signature algorithm, and a wrong guess would fail the login.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// The Amazon RDS and RDS Proxy roots (see `certs/README.md` for provenance and refresh).
pub const AMAZON_RDS_ROOTS_PEM: &str = include_str!("../certs/amazon-rds-roots.pem");

/// How much the connection is protected, as libpq's `sslmode` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    Require,
    VerifyCa,
    #[default]
    VerifyFull,
}

impl std::str::FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "disable" => Ok(SslMode::Disable),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" | "prefer" => Err(format!(
                "sslmode={} falls back to plaintext silently; use disable, require, verify-ca or verify-full",
                s.trim()
            )),
            other => Err(format!(
                "sslmode={other:?} is not one of disable, require, verify-ca, verify-full"
            )),
        }
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// The roots a server certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RootCerts {
    /// The embedded Amazon RDS and RDS Proxy roots.
    #[default]
    AmazonRds,
    /// A PEM file (`sslrootcert`), read once at start-up.
    File(PathBuf),
}

impl std::fmt::Display for RootCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootCerts::AmazonRds => f.write_str("the embedded Amazon RDS roots"),
            RootCerts::File(p) => write!(f, "sslrootcert {}", p.display()),
        }
    }
}

/// `sslmode` and `sslrootcert` together; `explicit_root` records whether `sslrootcert` was
/// given (libpq's `require` verifies the chain only then).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_certs: RootCerts,
}

/// Why the TLS set-up could not be built (always a configuration mistake).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsError {
    #[error("sslrootcert {path}: {why}")]
    RootFile { path: String, why: String },
}

impl TlsSettings {
    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let (pem, name): (std::borrow::Cow<'_, [u8]>, String) = match &self.root_certs {
            RootCerts::AmazonRds => (AMAZON_RDS_ROOTS_PEM.as_bytes().into(), String::new()),
            RootCerts::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| TlsError::RootFile {
                    path: path.display().to_string(),
                    why: format!("cannot be read ({})", e.kind()),
                })?;
                (bytes.into(), path.display().to_string())
            }
        };
        let mut store = RootCertStore::empty();
        let mut bad = 0usize;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            match cert {
                Ok(c) => {
                    if store.add(c).is_err() {
                        bad += 1;
                    }
                }
                Err(_) => bad += 1,
            }
        }
        if store.is_empty() {
            return Err(TlsError::RootFile {
                path: name,
                why: format!("holds no usable PEM certificate ({bad} unreadable)"),
            });
        }
        Ok(store)
    }

    /// The connector for these settings: built once (the roots are parsed here, so a bad
    /// `sslrootcert` fails start-up), cloned per connection.
    pub fn connector(&self) -> Result<MakeRustls, TlsError> {
        if self.mode == SslMode::Disable {
            return Ok(MakeRustls { config: None });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::RootFile {
                path: String::new(),
                why: e.to_string(),
            })?;
        let explicit_root = matches!(self.root_certs, RootCerts::File(_));
        let config = match self.mode {
            SslMode::VerifyFull => builder.with_root_certificates(self.roots()?),
            SslMode::VerifyCa => builder
                .dangerous()
                .with_custom_certificate_verifier(ChainOnly::new(self.roots()?, &provider)?),
            SslMode::Require if explicit_root => builder
                .dangerous()
                .with_custom_certificate_verifier(ChainOnly::new(self.roots()?, &provider)?),
            SslMode::Require | SslMode::Disable => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly { provider })),
        }
        .with_no_client_auth();
        Ok(MakeRustls {
            config: Some(Arc::new(config)),
        })
    }
}

/// `verify-ca`: the chain must end at a trusted root; the name in it is not compared.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ChainOnly {
    fn new(roots: RootCertStore, provider: &Arc<CryptoProvider>) -> Result<Arc<Self>, TlsError> {
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsError::RootFile {
                path: String::new(),
                why: e.to_string(),
            })?;
        Ok(Arc::new(Self { inner }))
    }
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `require` without `sslrootcert`: encrypted, the peer not authenticated (libpq's meaning).
/// The handshake's own signatures are still checked, so the session key is the peer's.
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// tokio-postgres's TLS hook over rustls. `None` when `sslmode=disable` (tokio-postgres then
/// never asks for a handshake).
#[derive(Clone)]
pub struct MakeRustls {
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for MakeRustls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.config.is_some() {
            "MakeRustls(tls)"
        } else {
            "MakeRustls(disabled)"
        })
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        let name = ServerName::try_from(domain.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{domain:?} is not a host name TLS can verify"),
            )
        });
        Ok(RustlsConnect {
            config: self.config.clone(),
            name,
        })
    }
}

/// One handshake's connector.
pub struct RustlsConnect {
    config: Option<Arc<ClientConfig>>,
    name: Result<ServerName<'static>, io::Error>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, io::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self.config.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "TLS is disabled (sslmode=disable)",
                )
            })?;
            let name = self.name?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

/// A TLS session to the database.
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// The rustls verdict inside a connect error, if the handshake is what failed.
pub(crate) fn handshake_refusal<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(r);
            }
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_bundle_holds_the_rds_and_proxy_roots() {
        // Given the embedded PEM
        // When it is parsed into a root store
        let store = TlsSettings::default().roots().unwrap();
        // Then every certificate of certs/README.md's count is a usable root
        assert_eq!(store.len(), 92);
    }

    #[test]
    fn sslmode_accepts_libpq_names_and_refuses_silent_fallbacks() {
        assert_eq!("verify-full".parse::<SslMode>(), Ok(SslMode::VerifyFull));
        assert_eq!("verify-ca".parse::<SslMode>(), Ok(SslMode::VerifyCa));
        assert_eq!("require".parse::<SslMode>(), Ok(SslMode::Require));
        assert_eq!("disable".parse::<SslMode>(), Ok(SslMode::Disable));
        assert!("prefer"
            .parse::<SslMode>()
            .unwrap_err()
            .contains("plaintext"));
        assert!("verify_full".parse::<SslMode>().is_err());
        assert_eq!(SslMode::default(), SslMode::VerifyFull);
    }

    #[test]
    fn a_missing_or_empty_root_file_names_the_file() {
        let missing = TlsSettings {
            mode: SslMode::VerifyFull,
            root_certs: RootCerts::File("/nonexistent/ca.pem".into()),
        };
        let e = missing.connector().unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/ca.pem") && e.contains("cannot be read"),
            "{e}"
        );

        let dir = std::env::temp_dir().join(format!("streamload-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = TlsSettings {
            mode: SslMode::VerifyCa,
            root_certs: RootCerts::File(empty.clone()),
        }
        .connector()
        .unwrap_err()
        .to_string();
        assert!(e.contains("no usable PEM certificate"), "{e}");
    }
}
