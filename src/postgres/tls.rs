//! TLS for [`super::PostgresStore::connect`] and `connect_with` (cargo feature
//! `postgres-tls`), as sqlx's `tls-rustls` does it: rustls with its `ring` provider,
//! through `tokio-postgres-rustls`, trusting the platform's root certificates
//! (`rustls-native-certs`) and those the app adds with
//! [`super::PostgresOptions::root_certificate`]. tokio-postgres decides from the URL's
//! `sslmode` whether to ask the server for TLS; rustls checks the server's certificate
//! and that it names the URL's host.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// A PEM given to [`super::PostgresOptions::root_certificate`]; `Debug` shows its size,
/// not its bytes.
#[derive(Clone)]
pub(super) struct Pem(pub(super) Vec<u8>);

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pem({} bytes)", self.0.len())
    }
}

fn bad(reason: String) -> Error {
    Error::InvalidOption {
        name: "PostgresOptions::root_certificate",
        reason,
    }
}

/// Every certificate of every PEM as a trust anchor: [`Error::InvalidOption`] for a PEM
/// with no certificate, one that does not decode, or a certificate rustls cannot use as a
/// root.
pub(super) fn custom_roots(pems: &[Pem]) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for (i, pem) in pems.iter().enumerate() {
        let which = if pems.len() == 1 {
            String::from("the PEM")
        } else {
            format!("PEM {} of {}", i + 1, pems.len())
        };
        let mut found = 0usize;
        for cert in CertificateDer::pem_slice_iter(&pem.0) {
            let cert =
                cert.map_err(|e| bad(format!("{which} does not decode as a certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("{which} holds no usable CA certificate: {e}")))?;
            found += 1;
        }
        if found == 0 {
            return Err(bad(format!(
                "{which} has no `-----BEGIN CERTIFICATE-----` section"
            )));
        }
    }
    Ok(roots)
}

/// The connector of `connect` and `connect_with`: the platform's roots (read off the
/// async workers) plus the app's, the `ring` provider, rustls's safe protocol versions
/// (TLS 1.2 and 1.3).
pub(super) async fn connector(pems: &[Pem]) -> Result<MakeRustlsConnect> {
    let mut roots = custom_roots(pems)?;
    // Certificates that do not parse, or a store that cannot be read, leave fewer roots:
    // a server they would have vouched for is then refused at the handshake
    // ("invalid peer certificate: UnknownIssuer"), never accepted unchecked.
    let native = tokio::task::spawn_blocking(rustls_native_certs::load_native_certs)
        .await
        .map_err(|e| Error::Io {
            context: "loading the platform's root certificates".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    roots.add_parsable_certificates(native.certs);
    // rustls 0.23.48 deprecated `ring`'s provider for want of post-quantum key exchange
    // (X25519MLKEM768, which only its aws-lc-rs provider has). It still negotiates the
    // classical key exchanges (X25519, P-256, P-384) every PostgreSQL server accepts;
    // aws-lc-rs would need cmake and a long C build.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidOption {
            name: "postgres-tls",
            reason: format!("rustls refused its own default protocol versions: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // What libpq offers since PostgreSQL 17 (whose servers require it with
    // `sslnegotiation=direct`); older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::Pem;
    use crate::error::Error;
    use crate::options::Options;
    use crate::postgres::{PostgresOptions, PostgresStore};

    #[test]
    fn a_pem_shows_its_size_not_its_bytes() {
        let popts = PostgresOptions::default().root_certificate("-----BEGIN CERTIFICATE-----");
        let shown = format!("{popts:?}");
        assert!(shown.contains("Pem(27 bytes)"), "{shown}");
        assert!(!shown.contains("BEGIN"), "{shown}");
        assert_eq!(format!("{:?}", Pem(vec![0; 3])), "Pem(3 bytes)");
    }

    #[tokio::test]
    async fn connect_tls_refuses_root_certificates_its_connector_would_ignore() {
        let popts = PostgresOptions::default().root_certificate("a PEM");
        // Port 1: nothing listens; the options are refused first.
        let r = PostgresStore::connect_tls(
            "postgres://a@127.0.0.1:1/a",
            Options::default(),
            popts,
            tokio_postgres::NoTls,
        )
        .await;
        assert!(
            matches!(
                r,
                Err(Error::InvalidOption {
                    name: "PostgresOptions::root_certificate",
                    ..
                })
            ),
            "{r:?}"
        );
    }
}
