//! Test certificates, made once per test process with the `openssl` CLI:
//! a CA with a server and two client identities (SPIFFE URI SANs, as a mesh
//! issues them), and a second, untrusted CA with a client of its own.
//! Bootstraps name them through `${CERTS}`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
pub const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
pub const OTHER_ID: &str = "spiffe://cluster.local/ns/default/sa/other";

/// The directory holding `ca.pem`, `server.{pem,key}`, `client.{pem,key}`,
/// `other.{pem,key}` (same CA, another identity), `rogue-ca.pem` and
/// `rogue.{pem,key}` (client identity signed by the untrusted CA).
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("weft-e2e-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cert dir");
        make_ca(&dir, "ca", "Weft Test CA");
        make_ca(&dir, "rogue-ca", "Rogue CA");
        make_leaf(&dir, "ca", "server", "server", &format!("DNS:example.com,DNS:*.example.com,URI:{SERVER_ID}"));
        make_leaf(&dir, "ca", "client", "client", &format!("URI:{CLIENT_ID},DNS:client.example.com"));
        make_leaf(&dir, "ca", "other", "other", &format!("URI:{OTHER_ID}"));
        make_leaf(&dir, "rogue-ca", "rogue", "client", &format!("URI:{CLIENT_ID}"));
        dir
    })
}

pub fn path(name: &str) -> PathBuf {
    dir().join(name)
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl (Debian package openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn make_ca(dir: &Path, name: &str, cn: &str) {
    let (key, pem, subj) = (format!("{name}.key"), format!("{name}.pem"), format!("/O=weft-test/CN={cn}"));
    openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key]);
    openssl(
        dir,
        &["req", "-x509", "-new", "-key", &key, "-out", &pem, "-days", "3650", "-subj", &subj,
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    );
}

fn make_leaf(dir: &Path, ca: &str, name: &str, cn: &str, sans: &str) {
    let (key, csr, pem, ext) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={sans}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"),
    )
    .expect("ext file");
    openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key]);
    openssl(dir, &["req", "-new", "-key", &key, "-out", &csr, "-subj", &format!("/O=weft/CN={cn}")]);
    openssl(
        dir,
        &["x509", "-req", "-in", &csr, "-CA", &format!("{ca}.pem"), "-CAkey", &format!("{ca}.key"),
          "-CAcreateserial", "-out", &pem, "-days", "3650", "-extfile", &ext],
    );
}
