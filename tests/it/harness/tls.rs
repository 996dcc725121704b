//! Certificates for a TLS `redis-server`, made by `openssl` for each test in a temp dir of its
//! own, and the fred TLS settings that trust them.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
};

use fred::{
    rustls::{
        ClientConfig, ConfigBuilder, RootCertStore,
        client::WantsClientCert,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
    types::config::{TlsConfig, TlsConnector},
};

use super::redis::require;

static DIRS: AtomicU64 = AtomicU64::new(0);

/// A new P-256 key, unencrypted, for `openssl req`.
const EC_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

/// A CA, a server certificate for `127.0.0.1` and `localhost` and a client certificate
/// (`client.pem`, `client.key`, for mutual TLS) signed by it, and a second CA that signed
/// nothing (for the wrong-CA tests). Removed on drop.
pub struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// Makes the certificates with `openssl` (P-256 keys, valid for a day).
    pub fn generate() -> Self {
        require("openssl");
        let dir = std::env::temp_dir().join(format!(
            "tower-scs-tls-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the TLS temp dir");
        let certs = Certs { dir };
        certs.ca("ca", "tower-scs-test-CA");
        certs.ca("other-ca", "tower-scs-unrelated-CA");
        std::fs::write(
            certs.path("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        certs.signed("server", "localhost", 2);
        std::fs::write(
            certs.path("client.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        )
        .expect("write client.ext");
        certs.signed("client", "sessions", 3);
        certs
    }

    /// A key `<name>.key` and a certificate `<name>.pem` for `cn`, signed by the CA, with the
    /// extensions in `<name>.ext`.
    fn signed(&self, name: &str, cn: &str, serial: u32) {
        self.openssl(&format!(
            "req -new {EC_KEY} -subj /CN={cn} -keyout {name}.key -out {name}.csr"
        ));
        self.openssl(&format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -set_serial {serial} -days 1 \
             -extfile {name}.ext -out {name}.pem"
        ));
    }

    /// A self-signed CA certificate `<name>.pem` and its key `<name>.key`.
    fn ca(&self, name: &str, cn: &str) {
        self.openssl(&format!(
            "req -x509 {EC_KEY} -days 1 -subj /CN={cn} -keyout {name}.key -out {name}.pem \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign"
        ));
    }

    /// Runs `openssl <args>` (split on white space) in the certificates' dir; panics with its
    /// output if it fails.
    fn openssl(&self, args: &str) {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The CA that signed the server's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A CA that did not sign the server's certificate (PEM).
    pub fn other_ca_file(&self) -> PathBuf {
        self.path("other-ca.pem")
    }

    /// redis-server's TLS options for the server certificate; clients need no certificate.
    pub fn server_args(&self) -> Vec<String> {
        let file = |name: &str| self.path(name).display().to_string();
        vec![
            "--tls-cert-file".into(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// fred's TLS settings trusting the CA in the PEM file `ca` only (no client certificate).
pub fn trusting(ca: &Path) -> TlsConfig {
    TlsConnector::from(roots(ca).with_no_client_auth()).into()
}

/// [`trusting`] `ca`, and showing the client certificate of `certs` (mutual TLS).
pub fn with_client_cert(ca: &Path, certs: &Certs) -> TlsConfig {
    let chain = CertificateDer::pem_file_iter(certs.path("client.pem"))
        .expect("read client.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates");
    let key = PrivateKeyDer::from_pem_file(certs.path("client.key")).expect("client.key");
    let config = roots(ca)
        .with_client_auth_cert(chain, key)
        .expect("a client certificate rustls takes");
    TlsConnector::from(config).into()
}

/// A rustls client config builder trusting the CA in the PEM file `ca` only.
fn roots(ca: &Path) -> ConfigBuilder<ClientConfig, WantsClientCert> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read the CA file") {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a CA certificate rustls takes");
    }
    ClientConfig::builder().with_root_certificates(roots)
}
