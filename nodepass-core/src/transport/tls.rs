//! TLS 1.3 for tunnel connections (and the master's HTTPS): server certificates (self-signed
//! at start, or PEM files reloaded when they change) and the client's verification modes.
//!
//! - `tls=1`: the server makes a fresh self-signed certificate; the client accepts any
//!   certificate but still checks the handshake signature. Protection against a man in the
//!   middle then comes from the key: the handshake proofs are bound to the TLS session
//!   (exporter), see the crate-private `protocol::auth`.
//! - `tls=2`: the client verifies the chain against the built-in web roots plus an optional
//!   `ca` file, and the name against `sni` (or the tunnel host).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::BufferedTcp;
use crate::error::{Error, Result};

/// How often certificate files are checked for changes.
pub const CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// rustls's aws-lc-rs provider (key exchange, signatures, hashes) with the record layer's
/// AES-GCM from whichever of the two AES-GCM implementations in the binary is faster on this
/// CPU ([`RecordAead::for_this_cpu`]), and TLS 1.3's AES-128-GCM-SHA256 preferred over the
/// default AES-256-GCM-SHA384 (the client offers its order and the server follows it).
///
/// Measured (docs/benchmarks.md, issue 17): the SHA-384 key schedule of every pool handshake
/// ran on SHA-512 code without hardware support (5.6% of the tunnel processes' CPU in the
/// `connect` workload at tls=1), while SHA-256 has it; AES-128 also takes 10 rounds per block
/// instead of 14 for bulk. Both suites are mandatory-to-implement TLS 1.3 suites with 128-bit
/// or better security. The two ends of a tunnel may pick different implementations: the
/// records on the wire are the same.
fn provider() -> Arc<CryptoProvider> {
    static AEAD: std::sync::OnceLock<RecordAead> = std::sync::OnceLock::new();
    let aead = *AEAD.get_or_init(|| {
        let aead = RecordAead::for_this_cpu();
        tracing::debug!(
            aes_gcm = aead.name(),
            "TLS records: the AES-GCM implementation for this CPU"
        );
        aead
    });
    provider_with(aead)
}

/// [`provider`] with the record layer of `aead`.
fn provider_with(aead: RecordAead) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    let preferred = match aead {
        RecordAead::AwsLc => rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        RecordAead::Ring => {
            p.cipher_suites = rustls::crypto::ring::default_provider().cipher_suites;
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        }
    };
    p.cipher_suites.retain(|s| s.suite() != preferred.suite());
    p.cipher_suites.insert(0, preferred);
    Arc::new(p)
}

/// Which library encrypts and decrypts TLS records (the AEAD of the cipher suites).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordAead {
    /// aws-lc-rs: AES-GCM with AVX-512 (VAES, VPCLMULQDQ on 512-bit registers) where the CPU
    /// has it; took AES-GCM from 28 % to 13 % of the samples of TLS bulk against ring on an
    /// AVX-512 machine (docs/benchmarks.md, round 6). Also the choice where neither has an edge.
    AwsLc,
    /// ring: AES-GCM with VAES and VPCLMULQDQ on 256-bit (AVX2) registers, which the aws-lc in
    /// the tree (aws-lc-sys 0.47) lacks: it falls back to 128-bit AES-NI code there. On a CPU
    /// with AVX2 and VAES but no AVX-512 (AMD Zen 3, recent Intel desktop parts) ring took
    /// 19-23 % less tunnel CPU per GB of TLS bulk (docs/benchmarks.md, round 9).
    Ring,
}

/// The x86 features that decide [`RecordAead::for_this_cpu`].
#[derive(Debug, Clone, Copy, Default)]
struct AesFeatures {
    /// AVX-512 F, BW and VL: what aws-lc's 512-bit AES-GCM needs besides VAES and VPCLMULQDQ.
    avx512: bool,
    /// VAES and VPCLMULQDQ (vector AES and carry-less multiply).
    vaes: bool,
    /// AVX2 (256-bit integer vectors).
    avx2: bool,
}

impl RecordAead {
    /// The faster implementation on this CPU: ring on x86-64 with VAES and AVX2 but no
    /// AVX-512, aws-lc-rs everywhere else.
    fn for_this_cpu() -> Self {
        #[cfg(target_arch = "x86_64")]
        let features = AesFeatures {
            avx512: std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl"),
            vaes: std::arch::is_x86_feature_detected!("vaes")
                && std::arch::is_x86_feature_detected!("vpclmulqdq"),
            avx2: std::arch::is_x86_feature_detected!("avx2"),
        };
        #[cfg(not(target_arch = "x86_64"))]
        let features = AesFeatures::default();
        Self::for_features(features)
    }

    fn for_features(f: AesFeatures) -> Self {
        if f.vaes && f.avx2 && !f.avx512 {
            RecordAead::Ring
        } else {
            RecordAead::AwsLc
        }
    }

    fn name(self) -> &'static str {
        match self {
            RecordAead::AwsLc => "aws-lc-rs",
            RecordAead::Ring => "ring",
        }
    }
}

/// The server side of tunnel (or API) TLS: a config whose certificate can be swapped live.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    resolver: Arc<SwappableCert>,
    files: Option<(PathBuf, PathBuf)>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish()
    }
}

impl ServerTls {
    /// A fresh self-signed certificate (`tls=1`) for the given names. Without the
    /// `self-signed` feature this is an error saying so.
    #[cfg(feature = "self-signed")]
    pub fn self_signed(names: &[String]) -> Result<Self> {
        let ck = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| Error::Tls(format!("cannot generate a self-signed certificate: {e}")))?;
        let certs = vec![ck.cert.der().clone()];
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
            .map_err(|e| Error::Tls(format!("generated key: {e}")))?;
        Self::build(certified(certs, key)?, None, &[])
    }

    /// A fresh self-signed certificate (`tls=1`): not in this build.
    #[cfg(not(feature = "self-signed"))]
    pub fn self_signed(_names: &[String]) -> Result<Self> {
        Err(Error::Tls(
            "tls=1 needs a self-signed certificate generator, which this build of nodepass-core \
             leaves out (feature `self-signed`); use tls=2 with certificate files"
                .into(),
        ))
    }

    /// A certificate chain and key from PEM files (`tls=2`), reloadable with
    /// [`ServerTls::watch`].
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self> {
        let ck = load_files(cert, key)?;
        Self::build(ck, Some((cert.to_path_buf(), key.to_path_buf())), &[])
    }

    /// The same certificate with ALPN protocols set (the master serves `h2` and `http/1.1`).
    pub fn with_alpn(&self, protocols: &[&[u8]]) -> Result<Self> {
        let current = self.resolver.current();
        Self::build_shared(
            self.resolver.clone(),
            self.files.clone(),
            protocols,
            current,
        )
    }

    fn build(ck: CertifiedKey, files: Option<(PathBuf, PathBuf)>, alpn: &[&[u8]]) -> Result<Self> {
        let resolver = Arc::new(SwappableCert(RwLock::new(Arc::new(ck))));
        let current = resolver.current();
        Self::build_shared(resolver, files, alpn, current)
    }

    fn build_shared(
        resolver: Arc<SwappableCert>,
        files: Option<(PathBuf, PathBuf)>,
        alpn: &[&[u8]],
        _current: Arc<CertifiedKey>,
    ) -> Result<Self> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(ServerTls {
            config: Arc::new(config),
            resolver,
            files,
        })
    }

    /// The rustls server configuration.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// A tokio acceptor.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// The DER of the leaf certificate currently presented.
    pub fn leaf_der(&self) -> CertificateDer<'static> {
        self.resolver.current().cert[0].clone()
    }

    /// For certificate files: check them every [`CERT_RELOAD_INTERVAL`] and swap in the new
    /// certificate when they change (a bad file is logged and the old certificate kept).
    /// Established connections are not touched. The watcher runs on `tracker` until `shutdown`
    /// is cancelled; returns `false` (and spawns nothing) for a self-signed certificate.
    pub fn watch(&self, tracker: &TaskTracker, shutdown: CancellationToken) -> bool {
        let Some((cert, key)) = self.files.clone() else {
            return false;
        };
        let resolver = self.resolver.clone();
        tracker.spawn(tracing::Instrument::in_current_span(
            async move {
                let mut seen = (stamp(&cert), stamp(&key));
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(CERT_RELOAD_INTERVAL) => {}
                    }
                    let now = (stamp(&cert), stamp(&key));
                    if now == seen {
                        continue;
                    }
                    match load_files(&cert, &key) {
                        Ok(ck) => {
                            *crate::sync::write(&resolver.0) = Arc::new(ck);
                            seen = now;
                            tracing::info!(cert = %cert.display(), "tls certificate reloaded");
                        }
                        Err(e) => {
                            // Files may be mid-write; try again next tick, keep serving the old one.
                            tracing::warn!(error = %e, "tls certificate reload failed, keeping the previous one");
                        }
                    }
                }
            },
        ));
        true
    }
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| Error::Tls(format!("crt {}: {e}", cert.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Tls(format!("crt {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "crt {}: no certificate found",
            cert.display()
        )));
    }
    let pk = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Tls(format!("key {}: {e}", key.display())))?;
    certified(certs, pk)
}

fn certified(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::Tls(format!("unusable private key: {e}")))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .map_err(|e| Error::Tls(format!("certificate and key do not match: {e}")))?;
    Ok(ck)
}

/// A certificate resolver whose certificate can be replaced while serving.
#[derive(Debug)]
struct SwappableCert(RwLock<Arc<CertifiedKey>>);

impl SwappableCert {
    fn current(&self) -> Arc<CertifiedKey> {
        // Never held across `.await`.
        crate::sync::read(&self.0).clone()
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// How the client checks the server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientVerify {
    /// `tls=1`: any certificate (the key-bound handshake protects against a man in the middle).
    SelfSigned,
    /// `tls=2`: full chain and name verification.
    WebPki {
        /// Extra trust anchors (PEM) besides the built-in web roots.
        ca: Option<PathBuf>,
    },
}

/// The client side of tunnel TLS.
#[derive(Clone)]
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("name", &self.name)
            .finish()
    }
}

impl ClientTls {
    /// A client TLS configuration; `name` is the SNI and (for `WebPki`) the verified name.
    pub fn new(verify: &ClientVerify, name: &str) -> Result<Self> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls(e.to_string()))?;
        let config = match verify {
            ClientVerify::SelfSigned => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth(),
            ClientVerify::WebPki { ca } => {
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                if let Some(ca) = ca {
                    for cert in CertificateDer::pem_file_iter(ca)
                        .map_err(|e| Error::Tls(format!("ca {}: {e}", ca.display())))?
                    {
                        let cert =
                            cert.map_err(|e| Error::Tls(format!("ca {}: {e}", ca.display())))?;
                        roots
                            .add(cert)
                            .map_err(|e| Error::Tls(format!("ca {}: {e}", ca.display())))?;
                    }
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        let name = ServerName::try_from(name.to_string())
            .map_err(|_| Error::Tls(format!("{name:?} is not a valid tls server name")))?;
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// Run the TLS handshake over `tcp` (read through a [`BufferedTcp`]).
    ///
    /// Cancel safety: safe; a dropped future drops the connection.
    pub async fn connect(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<BufferedTcp>> {
        self.connector
            .connect(self.name.clone(), BufferedTcp::new(tcp))
            .await
    }

    /// Run the TLS handshake over `tcp`, offering the ALPN protocol `alpn` (the caller checks
    /// what was agreed). Cancel safe (drops the connection).
    pub async fn connect_alpn(
        &self,
        tcp: tokio::net::TcpStream,
        alpn: &[u8],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<BufferedTcp>> {
        self.connector
            .with_alpn(vec![alpn.to_vec()])
            .connect(self.name.clone(), BufferedTcp::new(tcp))
            .await
    }

    /// The rustls configuration and the server name, for a transport that runs TLS itself
    /// (QUIC, `type=1`).
    pub(crate) fn parts(&self) -> (Arc<rustls::ClientConfig>, ServerName<'static>) {
        (self.connector.config().clone(), self.name.clone())
    }
}

/// Accepts any server certificate but still verifies the handshake signature made with it.
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
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::HandshakeKind;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Pool refills depend on both: the preferred suite (SHA-256 key schedule, AES-128) and
    /// resumption of the first connection's session by the next ones (no certificate work).
    #[cfg(feature = "self-signed")]
    #[tokio::test]
    async fn prefers_aes128_and_later_connections_resume() {
        let server = ServerTls::self_signed(&["nodepass".into()]).unwrap();
        let client = ClientTls::new(&ClientVerify::SelfSigned, "nodepass").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = server.acceptor();
        let serve = tokio::spawn(async move {
            for _ in 0..3 {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = acceptor.accept(tcp).await.unwrap();
                let mut b = [0u8; 1];
                tls.read_exact(&mut b).await.unwrap();
                tls.write_all(&b).await.unwrap();
                tls.flush().await.unwrap();
            }
        });
        let mut kinds = Vec::new();
        for _ in 0..3 {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut tls = client.connect(tcp).await.unwrap();
            // The echo makes the client read the server's session tickets.
            tls.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.unwrap();
            let conn = tls.get_ref().1;
            assert_eq!(
                conn.negotiated_cipher_suite().map(|s| s.suite()),
                Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
            );
            kinds.push(conn.handshake_kind());
        }
        serve.await.unwrap();
        assert_eq!(
            kinds,
            [
                Some(HandshakeKind::Full),
                Some(HandshakeKind::Resumed),
                Some(HandshakeKind::Resumed)
            ]
        );
    }

    #[test]
    fn ring_records_only_on_vaes_avx2_without_avx512() {
        let f = |avx512, vaes, avx2| RecordAead::for_features(AesFeatures { avx512, vaes, avx2 });
        assert_eq!(f(false, true, true), RecordAead::Ring, "Zen 3, Alder Lake");
        assert_eq!(f(true, true, true), RecordAead::AwsLc, "AVX-512 with VAES");
        assert_eq!(
            f(false, false, true),
            RecordAead::AwsLc,
            "AES-NI and AVX2 only"
        );
        assert_eq!(f(false, true, false), RecordAead::AwsLc, "no AVX2");
        assert_eq!(f(false, false, false), RecordAead::AwsLc, "not x86-64");
    }

    /// The two ends of a tunnel may pick different record-layer libraries (different CPUs):
    /// each pair carries a megabyte each way byte for byte, on the suite of the library chosen.
    #[cfg(feature = "self-signed")]
    #[tokio::test]
    async fn record_layers_of_both_libraries_interoperate() {
        use rustls::crypto::{aws_lc_rs, ring};
        let suite = |aead| match aead {
            RecordAead::AwsLc => aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
            RecordAead::Ring => ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        };
        let same = |a: rustls::SupportedCipherSuite, b: rustls::SupportedCipherSuite| match (a, b) {
            (rustls::SupportedCipherSuite::Tls13(a), rustls::SupportedCipherSuite::Tls13(b)) => {
                std::ptr::eq(a, b)
            }
            _ => false,
        };
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let cert = ServerTls::self_signed(&["nodepass".into()]).unwrap();
        for (server_aead, client_aead) in [
            (RecordAead::AwsLc, RecordAead::Ring),
            (RecordAead::Ring, RecordAead::AwsLc),
            (RecordAead::Ring, RecordAead::Ring),
        ] {
            let server_config =
                rustls::ServerConfig::builder_with_provider(provider_with(server_aead))
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .unwrap()
                    .with_no_client_auth()
                    .with_cert_resolver(cert.resolver.clone());
            let client_provider = provider_with(client_aead);
            let client_config =
                rustls::ClientConfig::builder_with_provider(client_provider.clone())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .unwrap()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCert(
                        client_provider.signature_verification_algorithms,
                    )))
                    .with_no_client_auth();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
            let len = data.len();
            let serve = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = acceptor.accept(tcp).await.unwrap();
                let mut got = vec![0u8; len];
                tls.read_exact(&mut got).await.unwrap();
                tls.write_all(&got).await.unwrap();
                tls.shutdown().await.unwrap();
                tls.get_ref().1.negotiated_cipher_suite().unwrap()
            });
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("nodepass").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(&data).await.unwrap();
            let mut back = Vec::new();
            tls.read_to_end(&mut back).await.unwrap();
            assert!(
                back == data,
                "{server_aead:?} <- {client_aead:?}: bytes differ"
            );
            let client_suite = tls.get_ref().1.negotiated_cipher_suite().unwrap();
            let server_suite = serve.await.unwrap();
            assert!(
                same(client_suite, suite(client_aead)),
                "client on {client_aead:?}"
            );
            assert!(
                same(server_suite, suite(server_aead)),
                "server on {server_aead:?}"
            );
        }
    }
}
