//! TLS both ways, on rustls with the `ring` provider: the HTTPS listener
//! ([`server`]) and the HTTPS forward connector ([`client`]).
//!
//! Certificates, keys and CA bundles are given as secret references
//! (`file:`, `credential:`, `env:`) like every other secret, so a key can come
//! from `LoadCredential=`. PEM is parsed with rustls-pki-types; errors name
//! the reference and what is wrong with it, and never quote the content (a
//! key file's bytes are the secret).

pub mod client;
pub mod server;

use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::SecretRef;

/// What went wrong loading TLS material. Messages name the reference, never
/// the bytes found there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {reference}: {message}")]
    Read {
        what: &'static str,
        reference: String,
        message: String,
    },
    #[error(
        "{what} {reference}: no PEM certificate found (expected \"-----BEGIN CERTIFICATE-----\")"
    )]
    NoCertificate {
        what: &'static str,
        reference: String,
    },
    #[error("{what} {reference}: PEM certificate #{index} is malformed")]
    BadPem {
        what: &'static str,
        reference: String,
        index: usize,
    },
    #[error("{what} {reference}: certificate #{index} cannot be parsed as X.509: {message}")]
    BadCertificate {
        what: &'static str,
        reference: String,
        index: usize,
        message: String,
    },
    #[error("private key {reference}: no private key found (expected an unencrypted PEM key: \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\")")]
    NoKey { reference: String },
    #[error("private key {reference}: unsupported key type (supported: RSA 2048 bits or more, ECDSA P-256/P-384, Ed25519)")]
    UnsupportedKey { reference: String },
    #[error("private key {key} does not match the certificate {cert} (the first certificate in the file must be the server's own)")]
    Mismatch { cert: String, key: String },
    #[error("{what}: {message}")]
    Config { what: &'static str, message: String },
}

/// The crypto provider every TLS config here is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.2 and 1.3 only (rustls has nothing older).
pub(crate) const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// `now + d`, saturating far in the future instead of overflowing (a
/// configured timeout of a thousand years is "never", not a panic).
pub fn deadline_after(d: std::time::Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(86_400 * 365 * 30))
}

fn read(what: &'static str, r: &SecretRef) -> Result<Vec<u8>, TlsError> {
    r.resolve().map(|s| s.0).map_err(|e| TlsError::Read {
        what,
        reference: r.to_string(),
        message: e.to_string(),
    })
}

/// Read a PEM certificate chain (or CA bundle): every `CERTIFICATE` block,
/// each checked to be X.509. Other blocks are ignored.
pub fn load_certs(
    what: &'static str,
    r: &SecretRef,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, r)?;
    let mut certs = Vec::new();
    for (i, c) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let c = c.map_err(|_| TlsError::BadPem {
            what,
            reference: r.to_string(),
            index: i + 1,
        })?;
        // Parse now, so a truncated or garbled certificate is an error here
        // rather than a handshake failure later.
        parse_validity(&c).map_err(|message| TlsError::BadCertificate {
            what,
            reference: r.to_string(),
            index: i + 1,
            message,
        })?;
        certs.push(c);
    }
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            reference: r.to_string(),
        });
    }
    Ok(certs)
}

/// Read a PEM private key. A parse error says only that no usable key was
/// found: the parser's own messages may quote the input.
pub fn load_key(r: &SecretRef) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("private key", r)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoKey {
        reference: r.to_string(),
    })
}

/// A certificate's subject and validity, as shown in /status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    pub subject: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Subject and validity period of a DER certificate (x509-cert).
pub fn parse_validity(der: &CertificateDer<'_>) -> Result<Validity, String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
    let v = &cert.tbs_certificate.validity;
    Ok(Validity {
        subject: cert.tbs_certificate.subject.to_string(),
        not_before: v.not_before.to_system_time(),
        not_after: v.not_after.to_system_time(),
    })
}

/// Load a certificate chain and its key and check that they belong
/// together and that rustls can sign with the key.
pub fn load_pair(
    cert: &SecretRef,
    key: &SecretRef,
) -> Result<(Arc<rustls::sign::CertifiedKey>, Validity), TlsError> {
    let chain = load_certs("certificate", cert)?;
    let validity = parse_validity(&chain[0]).map_err(|message| TlsError::BadCertificate {
        what: "certificate",
        reference: cert.to_string(),
        index: 1,
        message,
    })?;
    let der = load_key(key)?;
    let signing =
        provider()
            .key_provider
            .load_private_key(der)
            .map_err(|_| TlsError::UnsupportedKey {
                reference: key.to_string(),
            })?;
    let ck = rustls::sign::CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => {}
        // The key cannot tell its public half: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsError::Mismatch {
                cert: cert.to_string(),
                key: key.to_string(),
            })
        }
    }
    Ok((Arc::new(ck), validity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("whd-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn issue(d: &Dir, name: &str) -> (SecretRef, SecretRef, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let c = d.0.join(format!("{name}.crt"));
        let k = d.0.join(format!("{name}.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (SecretRef::File(c), SecretRef::File(k), key.serialize_pem())
    }

    #[test]
    fn huge_timeouts_saturate() {
        let d = deadline_after(std::time::Duration::MAX);
        assert!(d > tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365));
    }

    #[test]
    fn pair_loads_and_mismatch_is_refused_without_the_key() {
        let d = dir("pair");
        let (c1, k1, _) = issue(&d, "a");
        let (_, k2, key2) = issue(&d, "b");
        let (ck, v) = load_pair(&c1, &k1).unwrap();
        assert_eq!(ck.cert.len(), 1);
        assert!(v.not_after > v.not_before);
        let e = load_pair(&c1, &k2).unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("does not match") && msg.contains("b.key"),
            "{msg}"
        );
        let body: String = key2.lines().nth(1).unwrap().to_string();
        assert!(!msg.contains(&body), "key material in {msg}");
    }

    #[test]
    fn unreadable_garbled_and_missing_material_is_named() {
        let d = dir("bad");
        let (c, k, key) = issue(&d, "a");
        let missing = SecretRef::File(d.0.join("nope.crt"));
        let e = load_pair(&missing, &k).unwrap_err().to_string();
        assert!(e.contains("nope.crt") && e.contains("cannot read"), "{e}");

        // A key where the certificate should be: no certificate.
        let e = load_pair(&k, &k).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        assert!(!e.to_string().contains(key.lines().nth(1).unwrap()));

        // A certificate where the key should be: no key.
        let e = load_pair(&c, &c).unwrap_err();
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");

        // A truncated certificate body.
        let pem = std::fs::read_to_string(match &c {
            SecretRef::File(p) => p,
            _ => unreachable!(),
        })
        .unwrap();
        let lines: Vec<&str> = pem.lines().collect();
        let cut = format!("{}\n{}\n{}\n", lines[0], lines[1], lines[lines.len() - 1]);
        let t = d.0.join("cut.crt");
        std::fs::write(&t, cut).unwrap();
        let e = load_pair(&SecretRef::File(t), &k).unwrap_err();
        assert!(
            matches!(e, TlsError::BadCertificate { .. } | TlsError::BadPem { .. }),
            "{e}"
        );

        // A key PEM whose body is garbage: said without quoting it.
        let g = d.0.join("garbage.key");
        std::fs::write(
            &g,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXNlY3JldA@@==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = load_pair(&c, &SecretRef::File(g)).unwrap_err().to_string();
        assert!(!e.contains("c2VjcmV0"), "{e}");
    }
}
