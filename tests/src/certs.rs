//! Certificates for `tls=2`: a throw-away CA, leaf certificates it signs, and the PEM files a
//! server URL names with `crt=` and `key=` (a client names the CA with `ca=`).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use crate::IO_TIMEOUT;

/// The names every test leaf certificate is valid for.
pub const LEAF_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A certificate authority that exists only for one test.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    name: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("name", &self.name).finish()
    }
}

/// A leaf certificate and its private key.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The certificate, DER (what a TLS peer presents).
    pub der: CertificateDer<'static>,
}

impl Ca {
    /// A new self-signed CA called `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("self-signed ca");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
            name: name.to_string(),
        }
    }

    /// The CA certificate, PEM (for a client's `ca=` file).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `names`, signed by this CA, with a fresh key.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("leaf of {}", self.name));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// PEM files in a temporary directory (removed on drop): `ca.pem`, `server.crt`, `server.key`.
#[derive(Debug)]
pub struct CertFiles {
    dir: tempfile::TempDir,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server certificate (`crt=`).
    pub crt: PathBuf,
    /// The server key (`key=`).
    pub key: PathBuf,
}

impl CertFiles {
    /// Write `ca`'s certificate and a leaf it signs for [`LEAF_NAMES`]; returns the files and
    /// the leaf.
    pub fn new(ca: &Ca) -> (CertFiles, Leaf) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let files = CertFiles {
            ca: dir.path().join("ca.pem"),
            crt: dir.path().join("server.crt"),
            key: dir.path().join("server.key"),
            dir,
        };
        std::fs::write(&files.ca, ca.pem()).expect("write ca.pem");
        let leaf = ca.leaf(&LEAF_NAMES);
        files.replace(&leaf);
        (files, leaf)
    }

    /// Overwrite the server certificate and key in place (same paths), key first.
    pub fn replace(&self, leaf: &Leaf) {
        std::fs::write(&self.key, &leaf.key_pem).expect("write server.key");
        std::fs::write(&self.crt, &leaf.cert_pem).expect("write server.crt");
    }

    /// Write another CA's certificate next to the others; returns its path.
    pub fn write_ca(&self, file_name: &str, ca: &Ca) -> PathBuf {
        let path = self.dir.path().join(file_name);
        std::fs::write(&path, ca.pem()).expect("write a ca file");
        path
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A TLS 1.3 client configuration that accepts any server certificate (it still checks the
/// handshake signature). For looking at what a server presents, never for carrying data.
pub fn any_cert_client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(
            provider.signature_verification_algorithms,
        )))
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS 1.3 server configuration presenting `leaf`.
pub fn server_config(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("leaf key pem");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .expect("server certificate");
    Arc::new(config)
}

/// Open a TLS connection to `addr` (SNI `localhost`) and return the leaf certificate the
/// server presented. Bounded by [`IO_TIMEOUT`].
/// Cancel safe.
pub async fn presented_certificate(addr: SocketAddr) -> io::Result<CertificateDer<'static>> {
    let connector = tokio_rustls::TlsConnector::from(any_cert_client_config());
    let name = ServerName::try_from("localhost").expect("server name");
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        let tls = connector.connect(name, tcp).await?;
        let (_, conn) = tls.get_ref();
        conn.peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or_else(|| io::Error::other("no peer certificate"))
    };
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out"))?
}

/// Accepts any certificate but verifies the handshake signature made with it.
#[derive(Debug)]
struct AnyCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
