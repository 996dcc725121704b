//! Certificates for a TLS `redis-server`, made by `openssl` for each test in a temp dir of its
//! own, and the fred TLS settings that trust them.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
};

use fred::{
    rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, pem::PemObject},
    },
    types::config::{TlsConfig, TlsConnector},
};

use super::redis::require;

static DIRS: AtomicU64 = AtomicU64::new(0);

/// A new P-256 key, unencrypted, for `openssl req`.
const EC_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

/// A CA, a server certificate for `127.0.0.1` and `localhost` signed by it, and a second CA
/// that signed nothing (for the wrong-CA tests). Removed on drop.
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
        certs.openssl(&format!(
            "req -new {EC_KEY} -subj /CN=localhost -keyout server.key -out server.csr"
        ));
        certs.openssl(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 1 \
             -extfile server.ext -out server.pem",
        );
        certs
    }

    /// A self-signed CA certificate `<name>.pem` and its key `<name>.key`.
    fn ca(&self, name: &str, cn: &str) {
        self.openssl(&format!(
            "req -x509 {EC_KEY} -days 1 -subj /CN={cn} -keyout {name}.key -out {name}.pem \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
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
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read the CA file") {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a CA certificate rustls takes");
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(config).into()
}
