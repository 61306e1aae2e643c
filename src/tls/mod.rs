//! TLS: terminating clients' `wss://`/`https://`, and connecting to a TLS upstream.
//!
//! The server certificate lives behind an `ArcSwap` that rustls asks on every handshake, so a
//! renewed pair is used by the next handshake while established connections keep the
//! session they negotiated. Renewal tools write the certificate and the key at different
//! moments: a pair is only swapped in once the key matches the certificate; until then the
//! old pair keeps serving.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::credentials::watcher::Reloadable;
use crate::credentials::ReloadResult;

mod upstream;
pub(crate) use upstream::{server_name, upstream_client_config};

/// Warn this long before a certificate expires.
pub(crate) const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Why certificate or key files cannot be used. Names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Missing, unreadable, not a regular file, too large.
    #[error("TLS file {path} {why}")]
    File {
        path: PathBuf,
        why: crate::files::FileError,
    },
    #[error("TLS certificate file {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS key file {path} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("TLS key {path} is not a supported key: {why}")]
    BadKey { path: PathBuf, why: String },
    #[error("TLS certificate {path} cannot be parsed: {why}")]
    BadCertificate { path: PathBuf, why: String },
    #[error("TLS key {key} does not match certificate {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS: {0}")]
    Config(String),
}

/// A TLS file: a regular file of at most `max` bytes (`credentials.max_file_bytes`).
fn read(path: &Path, max: u64) -> Result<Vec<u8>, TlsError> {
    crate::files::read_limited(path, max).map_err(|why| TlsError::File {
        path: path.to_path_buf(),
        why,
    })
}

/// PEM certificates from a file (a chain, or a CA bundle) of at most `max` bytes.
pub(crate) fn load_certs(path: &Path, max: u64) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, max)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// What operators want to know about the serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub not_after: SystemTime,
    /// RFC 3339 form of `not_after`, for logs.
    pub not_after_text: String,
    pub serial: String,
    /// First 8 hex digits of the leaf's SHA-256.
    pub fingerprint: String,
}

impl CertInfo {
    fn of(leaf: &CertificateDer<'_>, path: &Path) -> Result<CertInfo, TlsError> {
        let bad = |why: String| TlsError::BadCertificate {
            path: path.to_path_buf(),
            why,
        };
        let (_, cert) =
            x509_parser::parse_x509_certificate(leaf).map_err(|e| bad(e.to_string()))?;
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let san = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|ext| {
                ext.value.general_names.iter().find_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => Some(format!("{ip:?}")),
                    _ => None,
                })
            });
        let subject = cn.or(san).unwrap_or_else(|| cert.subject().to_string());
        let ts = cert.validity().not_after.timestamp();
        let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(ts.max(0) as u64);
        let digest = Sha256::digest(leaf.as_ref());
        Ok(CertInfo {
            subject,
            not_after,
            not_after_text: humantime::format_rfc3339_seconds(not_after).to_string(),
            serial: cert.raw_serial_as_string(),
            fingerprint: digest[..4].iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    /// Time left before expiry (zero once expired).
    pub fn remaining(&self) -> Duration {
        self.not_after
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}

/// A certificate chain and its matching key, ready for rustls.
pub(crate) struct Pair {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

impl fmt::Debug for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pair").field("info", &self.info).finish()
    }
}

/// Loads and checks a certificate/key pair: parsable, supported, and matching.
pub(crate) fn load_pair(cert_path: &Path, key_path: &Path, max: u64) -> Result<Pair, TlsError> {
    let chain = load_certs(cert_path, max)?;
    let key_pem = read(key_path, max)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey {
        path: key_path.to_path_buf(),
    })?;
    let signer = crypto::sign_key(&key).map_err(|e| TlsError::BadKey {
        path: key_path.to_path_buf(),
        why: e.to_string(),
    })?;
    let info = CertInfo::of(&chain[0], cert_path)?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|_| TlsError::Mismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
    })?;
    Ok(Pair {
        key: Arc::new(certified),
        info,
    })
}

/// Hands rustls the current pair on every handshake.
#[derive(Debug)]
pub(crate) struct CertResolver {
    current: ArcSwap<Pair>,
}

impl CertResolver {
    pub(crate) fn current(&self) -> Arc<Pair> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

pub(super) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(crypto::provider())
}

/// The listener's key exchange: X25519, then P-256 — what browsers offer (with aws-lc-rs,
/// their post-quantum hybrid X25519MLKEM768 first). Without P-384: a client whose first key
/// share is P-384 (ring's own client default since rustls 0.23.48) is asked to retry with
/// one of these, instead of making the server do P-384, which costs ring several times X25519
/// (bench/RESULTS.md). One round trip more for that rare client; a
/// flood of such handshakes costs no more than any other.
fn server_provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = crypto::provider();
    p.kx_groups = crypto::SERVER_KX.to_vec();
    Arc::new(p)
}

/// The crypto provider, chosen at build time: ring (the default), or aws-lc-rs with
/// `--features aws-lc-rs`. Everything that names one lives here.
#[cfg(not(feature = "aws-lc-rs"))]
mod crypto {
    use rustls::crypto::ring::{self, kx_group};
    use rustls::crypto::SupportedKxGroup;

    pub(super) fn provider() -> rustls::crypto::CryptoProvider {
        ring::default_provider()
    }

    pub(super) const SERVER_KX: &[&dyn SupportedKxGroup] = &[kx_group::X25519, kx_group::SECP256R1];

    pub(super) use ring::sign::any_supported_type as sign_key;
    pub(super) use ring::Ticketer;
}

#[cfg(feature = "aws-lc-rs")]
mod crypto {
    use rustls::crypto::aws_lc_rs::{self, kx_group};
    use rustls::crypto::SupportedKxGroup;

    pub(super) fn provider() -> rustls::crypto::CryptoProvider {
        aws_lc_rs::default_provider()
    }

    pub(super) const SERVER_KX: &[&dyn SupportedKxGroup] = &[
        kx_group::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
    ];

    pub(super) use aws_lc_rs::sign::any_supported_type as sign_key;
    pub(super) use aws_lc_rs::Ticketer;
}

fn warn_expiry(info: &CertInfo, cert: &Path) {
    let left = info.remaining();
    if left.is_zero() {
        warn!(path = %cert.display(), not_after = %info.not_after_text, "[tls] certificate has EXPIRED; clients will refuse it");
    } else if left <= EXPIRY_WARNING {
        warn!(
            path = %cert.display(),
            not_after = %info.not_after_text,
            days_left = left.as_secs() / 86_400,
            "[tls] certificate expires soon"
        );
    }
}

/// The listener's TLS side: the rustls config and the reloadable certificate.
pub(crate) struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub resolver: Arc<CertResolver>,
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    /// `credentials.max_file_bytes`.
    max_file_bytes: u64,
    /// Serializes reloads (only the watcher calls them; never the handshake path).
    reload_lock: Mutex<()>,
}

impl ServerTls {
    /// Loads the pair (start-up errors name the file and the problem) and builds the config:
    /// TLS 1.2 and 1.3, the `alpn` protocols (`tls.alpn`), and client certificates when
    /// `client_ca` is set.
    pub(crate) fn new(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        alpn: &[String],
        max_file_bytes: u64,
    ) -> Result<ServerTls, TlsError> {
        let pair = load_pair(cert, key, max_file_bytes)?;
        warn_expiry(&pair.info, cert);
        info!(
            not_after = %pair.info.not_after_text,
            subject = %pair.info.subject,
            fingerprint = %pair.info.fingerprint,
            path = %cert.display(),
            "[tls] certificate loaded"
        );
        let resolver = Arc::new(CertResolver {
            current: ArcSwap::from_pointee(pair),
        });
        let builder = ServerConfig::builder_with_provider(server_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in load_certs(ca, max_file_bytes)? {
                    roots.add(c).map_err(|e| TlsError::BadCertificate {
                        path: ca.to_path_buf(),
                        why: e.to_string(),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        // Stateless session tickets (keys rotated every 6 hours, kept in memory only): any
        // number of clients that reconnect — after a gateway restart, every client at once —
        // resume without a full handshake, where the default session cache holds 256.
        config.ticketer = crypto::Ticketer::new().map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(ServerTls {
            config: Arc::new(config),
            resolver,
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: client_ca.map(Path::to_path_buf),
            max_file_bytes,
            reload_lock: Mutex::new(()),
        })
    }

    /// Re-reads the pair; swaps it in only when complete, matching, and different.
    pub(crate) fn reload(&self) -> ReloadResult {
        let _guard = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let pair = match load_pair(&self.cert, &self.key, self.max_file_bytes) {
            Ok(p) => p,
            Err(e) => {
                warn!(cause = %e, "[reload] tls rejected; keeping the current certificate");
                return ReloadResult::Rejected;
            }
        };
        let current = self.resolver.current();
        if current.info == pair.info {
            return ReloadResult::Unchanged;
        }
        warn_expiry(&pair.info, &self.cert);
        let info = pair.info.clone();
        // In force before it is logged (the reload runs on another thread than handshakes).
        self.resolver.current.store(Arc::new(pair));
        info!(
            not_after = %info.not_after_text,
            subject = %info.subject,
            fingerprint = %info.fingerprint,
            "[reload] tls applied"
        );
        ReloadResult::Applied { generation: 0 }
    }
}

impl Reloadable for ServerTls {
    fn paths(&self) -> Vec<PathBuf> {
        let mut p = vec![self.cert.clone(), self.key.clone()];
        p.extend(self.client_ca.clone());
        p
    }

    fn reload_all(&self) -> Vec<(String, ReloadResult)> {
        vec![(self.cert.display().to_string(), self.reload())]
    }

    fn reload_path(&self, _idx: usize) -> ReloadResult {
        self.reload()
    }

    /// Wakes the watcher when the certificate enters its last 14 days and when it expires,
    /// so a long-running process warns without waiting for a reload.
    fn next_deadline(&self, after: std::time::Instant) -> Option<std::time::Instant> {
        let info = self.resolver.current().info.clone();
        let now_sys = SystemTime::now();
        let now = std::time::Instant::now();
        // Half a second late, so the wall clock has certainly crossed the line on waking.
        let at = |t: SystemTime| {
            t.duration_since(now_sys)
                .ok()
                .map(|d| now + d + Duration::from_millis(500))
        };
        [
            info.not_after.checked_sub(EXPIRY_WARNING),
            Some(info.not_after),
        ]
        .into_iter()
        .flatten()
        .filter_map(at)
        .filter(|&i| i > after)
        .min()
    }

    fn deadlines_passed(&self, _since: std::time::Instant, _now: std::time::Instant) {
        warn_expiry(&self.resolver.current().info, &self.cert);
    }
}

/// The verified client certificate of a connection (mTLS).
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// Subject CN (or the full subject when there is no CN): the client's name in logs.
    pub name: Arc<str>,
    /// First 8 hex of the certificate's SHA-256.
    pub fingerprint: String,
    pub der: Arc<[u8]>,
}

impl ClientCert {
    pub fn from_der(der: &CertificateDer<'_>) -> Option<ClientCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| cert.subject().to_string());
        let digest = Sha256::digest(der.as_ref());
        Some(ClientCert {
            name: Arc::from(name),
            fingerprint: digest[..4].iter().map(|b| format!("{b:02x}")).collect(),
            der: Arc::from(der.as_ref()),
        })
    }
}
