//! TLS to the broker (rustls with the `ring` crypto provider) and the
//! operator-facing explanation of connection failures.
//!
//! This module owns:
//!
//! * [`TlsClient`]: the rustls client configuration, built once at start
//!   from PEM files ([`TlsClient::load`]): the CA that signed the broker's
//!   certificate, and optionally a client certificate and its key. Every
//!   problem with those files is a [`TlsSetupError`] naming the config key,
//!   so a bad file stops the daemon at start (and `check-config` reports it)
//!   instead of failing every connection attempt. Key material is never
//!   printed: not by `Debug`, not in errors.
//! * [`explain`]: a connection failure the operator must fix (a TLS
//!   handshake refused either way, a login refused by the broker) turned
//!   into one specific sentence with the config key to check; `None` for
//!   ordinary outages (connection refused, timeouts), which the driver logs
//!   as such.
//!
//! The broker's certificate is checked against `broker.host` as rumqttc
//! passes it to rustls: a DNS name or an IP address that must be in the
//! certificate's subjectAltName.

use rumqttc::{ConnectReturnCode, ConnectionError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A TLS file that cannot be used; `key` is the config key that names it.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsSetupError {
    pub key: &'static str,
    pub message: String,
}

/// The client certificate and where its key comes from.
#[derive(Debug, Clone, Copy)]
pub struct ClientIdentity<'a> {
    /// PEM certificate chain, leaf first.
    pub cert_file: &'a Path,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: &'a Path,
    /// Where the key path came from, for errors: `broker.client_key_file`,
    /// or the systemd credential.
    pub key_setting: &'static str,
}

/// A ready rustls client configuration. Cheap to clone (shared).
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    ca_file: PathBuf,
    client_cert_file: Option<PathBuf>,
    key_setting: Option<&'static str>,
}

impl TlsClient {
    /// Read and check the CA file and, if given, the client certificate and
    /// key; build the rustls configuration (TLS 1.2 and 1.3, `ring`).
    pub fn load(
        ca_file: &Path,
        identity: Option<ClientIdentity<'_>>,
    ) -> Result<TlsClient, TlsSetupError> {
        let ca_key = "broker.ca_file";
        let ca = read(ca_key, ca_file)?;
        let roots = certificates(ca_key, ca_file, &ca)?;
        let mut store = RootCertStore::empty();
        for (i, cert) in roots.into_iter().enumerate() {
            store.add(cert).map_err(|e| TlsSetupError {
                key: ca_key,
                message: format!(
                    "{}: certificate {} is not usable as a CA: {e}",
                    ca_file.display(),
                    i + 1
                ),
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError {
                key: "broker.tls",
                message: format!("TLS provider: {e}"),
            })?
            .with_root_certificates(store);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some(id) => {
                let cert_key = "broker.client_cert_file";
                let chain = certificates(cert_key, id.cert_file, &read(cert_key, id.cert_file)?)?;
                let key = private_key(id.key_setting, id.key_file)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsSetupError {
                        key: id.key_setting,
                        message: format!(
                            "{} with the certificate {}: {e}",
                            id.key_file.display(),
                            id.cert_file.display()
                        ),
                    })?
            }
        };
        Ok(TlsClient {
            config: Arc::new(config),
            ca_file: ca_file.to_owned(),
            client_cert_file: identity.map(|id| id.cert_file.to_owned()),
            key_setting: identity.map(|id| id.key_setting),
        })
    }

    /// The rustls configuration, for rumqttc's `TlsConfiguration::Rustls`.
    pub fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }

    /// Whether a client certificate is presented.
    pub fn has_client_certificate(&self) -> bool {
        self.client_cert_file.is_some()
    }

    /// One line for logs and `check-config`: files, never key contents.
    pub fn describe(&self) -> String {
        match (&self.client_cert_file, self.key_setting) {
            (Some(cert), Some(key)) => format!(
                "CA {}, client certificate {} (key from {key})",
                self.ca_file.display(),
                cert.display()
            ),
            _ => format!("CA {}, no client certificate", self.ca_file.display()),
        }
    }
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("ca_file", &self.ca_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key", &self.key_setting.map(|_| "<redacted>"))
            .finish()
    }
}

/// Two values are equal when they share one loaded configuration.
impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for TlsClient {}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|e| TlsSetupError {
        key,
        message: format!("cannot read {}: {e}", path.display()),
    })
}

/// Every CERTIFICATE block of a PEM file; at least one.
fn certificates(
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError {
            key,
            message: format!("{}: not a PEM certificate file: {e}", path.display()),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError {
            key,
            message: format!(
                "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                path.display()
            ),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file. The error never quotes the file.
fn private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM private key (PKCS#8, PKCS#1 or SEC1) in it"
            }
            _ => "not a readable PEM private key",
        };
        TlsSetupError {
            key,
            message: format!("{}: {why}", path.display()),
        }
    })
}

/// A connection failure only the operator can fix, in one sentence naming
/// what to check. `None` for ordinary outages.
pub fn explain(error: &ConnectionError, broker: &str, username: Option<&str>) -> Option<String> {
    if let ConnectionError::ConnectionRefused(code) = error {
        let user = username.map_or("(no username)".to_owned(), |u| format!("user {u:?}"));
        let (what, hint) = match code {
            ConnectReturnCode::NotAuthorized => (
                "not authorized",
                "check broker.username and the password (broker.password_file, \
                 $DOSETRACK_BROKER_PASSWORD or the systemd credential broker-password) \
                 against the broker's password_file",
            ),
            ConnectReturnCode::BadUserNamePassword => (
                "bad user name or password",
                "check broker.username and the password (broker.password_file, \
                 $DOSETRACK_BROKER_PASSWORD or the systemd credential broker-password)",
            ),
            ConnectReturnCode::BadClientId => (
                "client identifier rejected",
                "check broker.client_id against the broker's clientid rules",
            ),
            ConnectReturnCode::RefusedProtocolVersion => (
                "unsupported protocol version",
                "the broker must accept MQTT 3.1.1",
            ),
            ConnectReturnCode::ServiceUnavailable => {
                ("server unavailable", "check the broker's log")
            }
            ConnectReturnCode::Success => return None,
        };
        return Some(format!(
            "MQTT broker {broker} refused the login as {user}: {what} — {hint}"
        ));
    }
    let Some(tls) = find_rustls_error(error) else {
        // The broker hung up mid-handshake without a TLS alert: most often
        // a plain MQTT port (which reads the ClientHello as garbage).
        if let ConnectionError::Tls(rumqttc::TlsError::Io(e)) = error {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                return Some(format!(
                    "TLS handshake with broker {broker} failed: the broker closed the connection — \
                     is broker.port a TLS listener? (or set broker.tls = false)"
                ));
            }
        }
        return None;
    };
    let hint = match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "check broker.ca_file: it must hold the CA that signed the broker's certificate"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the broker's certificate does not name broker.host: use a host name or IP \
                 address from its subjectAltName"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the broker's certificate has expired: renew it (or check this machine's clock)"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the broker's certificate is not valid yet: check this machine's clock"
            }
            _ => "check the broker's certificate and broker.ca_file",
        },
        rustls::Error::AlertReceived(a) => match a {
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRequired
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied => {
                "the broker refused our client certificate: check broker.client_cert_file and \
                 broker.client_key_file, and that the broker's cafile holds the CA that signed it"
            }
            _ => "check the broker's log and TLS settings",
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "is this port a TLS listener? (broker.port, broker.tls)"
        }
        _ => "check the broker's TLS settings",
    };
    Some(format!(
        "TLS handshake with broker {broker} failed: {tls} — {hint}"
    ))
}

/// The rustls error somewhere in `e`'s chain, including inside `io::Error`s
/// (tokio-rustls wraps it in one, whose `source()` skips it).
fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(e);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(r) = find_rustls_error(inner) {
                return Some(r);
            }
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_error(e: rustls::Error) -> ConnectionError {
        ConnectionError::Tls(rumqttc::TlsError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e,
        )))
    }

    #[test]
    fn handshake_failures_name_what_to_check() {
        let unknown = tls_error(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        let m = explain(&unknown, "127.0.0.1:8883", None).unwrap();
        assert!(
            m.starts_with("TLS handshake with broker 127.0.0.1:8883 failed: invalid peer certificate: UnknownIssuer"),
            "{m}"
        );
        assert!(m.contains("broker.ca_file"), "{m}");
        let expired = tls_error(rustls::Error::InvalidCertificate(CertificateError::Expired));
        assert!(explain(&expired, "b:1", None).unwrap().contains("expired"));
        let name = tls_error(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ));
        assert!(explain(&name, "b:1", None).unwrap().contains("broker.host"));
        let refused = tls_error(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        ));
        assert!(explain(&refused, "b:1", None)
            .unwrap()
            .contains("broker.client_cert_file"));
        // Inside the MQTT state's I/O error (read after the handshake).
        let late = ConnectionError::MqttState(rumqttc::StateError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        )));
        assert!(explain(&late, "b:1", None)
            .unwrap()
            .contains("client certificate"));
    }

    #[test]
    fn login_refusals_are_explained_and_ordinary_outages_are_not() {
        let m = explain(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
            "b:1",
            Some("dosetrack"),
        )
        .unwrap();
        assert!(
            m.contains("not authorized") && m.contains("\"dosetrack\""),
            "{m}"
        );
        assert!(m.contains("broker.password_file"), "{m}");
        let io = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(explain(&io, "b:1", None), None);
        assert_eq!(explain(&ConnectionError::NetworkTimeout, "b:1", None), None);
    }

    #[test]
    fn bad_files_are_errors_naming_the_key_without_key_contents() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = TlsClient::load(&missing, None).unwrap_err();
        assert_eq!(e.key, "broker.ca_file");
        assert!(e.message.contains("missing.pem"), "{e}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello\n").unwrap();
        let e = TlsClient::load(&garbage, None).unwrap_err();
        assert_eq!(e.key, "broker.ca_file");
        assert!(e.message.contains("no PEM certificate"), "{e}");
        // A key file that is not a key: the error must not quote it.
        let secret = dir.path().join("key.pem");
        std::fs::write(&secret, "TOP-SECRET-NOT-A-KEY\n").unwrap();
        let e = private_key("broker.client_key_file", &secret).unwrap_err();
        assert_eq!(e.key, "broker.client_key_file");
        assert!(!e.to_string().contains("TOP-SECRET"), "{e}");
    }
}
