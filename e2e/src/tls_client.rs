//! A TLS client for the tests: SNI, ALPN, an optional client identity from
//! `pki`, and what the handshake negotiated. HTTP/1.1 is spoken raw (as in
//! `client`), HTTP/2 through hyper when ALPN picked `h2`.

use std::pin::Pin;

use pingora_core::tls::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use pingora_core::tls::tokio_ssl::SslStream;
use tokio::net::TcpStream;

use crate::client::{exchange_h2, exchange_raw, parse, Observed, Request};
use crate::pki;

#[derive(Debug, Clone, Default)]
pub struct TlsClient {
    pub sni: Option<String>,
    /// Verify the server against the test CA.
    pub verify: bool,
    /// Present `<identity>.pem` / `<identity>.key` from `pki`.
    pub identity: Option<&'static str>,
    pub alpn: Vec<&'static str>,
}

/// What the handshake settled.
#[derive(Debug, Clone, PartialEq)]
pub struct Negotiated {
    pub alpn: Option<String>,
    pub version: String,
}

impl TlsClient {
    pub fn sni(name: &str) -> Self {
        TlsClient { sni: Some(name.into()), ..Self::default() }
    }

    pub fn identity(mut self, id: &'static str) -> Self {
        self.identity = Some(id);
        self
    }

    pub fn alpn(mut self, protos: &[&'static str]) -> Self {
        self.alpn = protos.to_vec();
        self
    }

    pub fn verify(mut self) -> Self {
        self.verify = true;
        self
    }

    /// Connects, handshakes, sends one request and reads the response.
    pub async fn send(&self, port: u16, req: &Request) -> anyhow::Result<(Observed, Negotiated)> {
        let mut b = SslConnector::builder(SslMethod::tls())?;
        if self.verify {
            b.set_ca_file(pki::path("ca.pem"))?;
        } else {
            b.set_verify(SslVerifyMode::NONE);
        }
        if let Some(id) = self.identity {
            b.set_certificate_chain_file(pki::path(&format!("{id}.pem")))?;
            b.set_private_key_file(pki::path(&format!("{id}.key")), SslFiletype::PEM)?;
        }
        if !self.alpn.is_empty() {
            let mut wire = Vec::new();
            for p in &self.alpn {
                wire.push(p.len() as u8);
                wire.extend_from_slice(p.as_bytes());
            }
            b.set_alpn_protos(&wire)?;
        }
        let mut conf = b.build().configure()?;
        conf.set_verify_hostname(false);
        conf.set_use_server_name_indication(self.sni.is_some());
        let ssl = conf.into_ssl(self.sni.as_deref().unwrap_or("localhost"))?;
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut stream = SslStream::new(ssl, tcp)?;
        Pin::new(&mut stream).connect().await.map_err(|e| anyhow::anyhow!("TLS handshake: {e}"))?;
        let negotiated = Negotiated {
            alpn: stream.ssl().selected_alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
            version: stream.ssl().version_str().to_string(),
        };
        let observed = if negotiated.alpn.as_deref() == Some("h2") {
            exchange_h2(stream, req, "https").await?
        } else {
            let head = req.method == "HEAD";
            let raw = exchange_raw(stream, &req.to_bytes(), head).await?;
            parse(&raw, head).ok_or_else(|| anyhow::anyhow!("no response ({} bytes)", raw.len()))?
        };
        Ok((observed, negotiated))
    }
}
