//! A throw-away CA and a server certificate for 127.0.0.1 signed by it, made with the openssl
//! CLI, for tests of the https:// control URL.

use std::{path::PathBuf, process::Command};

use tonic::transport::{Identity, ServerTlsConfig};

/// The files live in a temporary directory removed on drop.
pub struct TestPki {
    dir: PathBuf,
}

impl TestPki {
    /// Makes the CA and the certificate; panics (failing the test) without the openssl CLI.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tlsfleetctl-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &str| {
            let out = Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(&dir)
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run openssl ({e}): install it with `apt-get install -y openssl`")
                });
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "openssl {args}: {stderr}");
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        openssl(&format!(
            "req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca"
        ));
        openssl(&format!(
            "req {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1"
        ));
        // A leaf, not a second self-signed CA: webpki refuses a CA certificate as end entity.
        let ext = "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                   extendedKeyUsage=serverAuth\n";
        std::fs::write(dir.join("server.ext"), ext).unwrap();
        openssl(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
             -extfile server.ext -out server.pem",
        );
        Self { dir }
    }

    /// The server side: the certificate and its key.
    pub fn server_tls(&self) -> ServerTlsConfig {
        let read = |f: &str| std::fs::read(self.dir.join(f)).unwrap();
        ServerTlsConfig::new().identity(Identity::from_pem(read("server.pem"), read("server.key")))
    }

    /// The CA certificate file, for `--ca`.
    pub fn ca(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
