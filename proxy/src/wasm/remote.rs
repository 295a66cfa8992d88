//! `vm_config.code.remote`: a module fetched over HTTP through a cluster,
//! checked against its sha256 and kept on disk by that sha256, so a
//! restart or a second listener does not fetch it again.
//!
//! Config compilation runs off the workers (start-up, the xDS thread), so
//! the fetch is a plain blocking HTTP/1.1 GET with the configured timeout.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;

use crate::model::{Cluster, ConfigError, Result};

use super::code_cache::cache_dir;

pub fn fetch(remote: &xds_core::RemoteDataSource, path: &str, clusters: &HashMap<String, Arc<Cluster>>) -> Result<Bytes> {
    let sha = remote.sha256.to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ConfigError::new(format!("{path}.sha256"), "a remote module needs its sha256 (64 hex digits)"));
    }
    let cached = cache_dir().join(format!("{sha}.wasm"));
    if let Ok(bytes) = std::fs::read(&cached) {
        if super::engine::sha256_hex(&bytes) == sha {
            return Ok(Bytes::from(bytes));
        }
    }
    let upath = format!("{path}.http_uri");
    let Some(uri) = remote.http_uri.as_ref() else { return Err(ConfigError::new(upath, "http_uri is required")) };
    let xds_core::http_uri::HttpUpstreamType::Cluster(name) = uri.http_upstream_type.as_ref().ok_or_else(|| ConfigError::new(format!("{upath}.cluster"), "cluster is required"))?;
    let cluster = clusters.get(name).ok_or_else(|| ConfigError::new(format!("{upath}.cluster"), format!("unknown cluster {name}")))?;
    let timeout = uri.timeout.as_ref().map(crate::model::duration).unwrap_or(Duration::from_secs(5)).max(Duration::from_millis(1));
    let parsed: http::Uri = uri.uri.parse().map_err(|e| ConfigError::new(format!("{upath}.uri"), format!("invalid URI: {e}")))?;
    // A DNS cluster that has not resolved yet (it arrived in the same
    // update) is looked up here: compilation runs off the workers.
    let addr = cluster.pick(None).map(|h| h.addr()).or_else(|| resolve(cluster));
    let addr = addr.ok_or_else(|| ConfigError::new(format!("{upath}.cluster"), format!("cluster {name} has no hosts")))?;
    let body = get(addr, &parsed, timeout).map_err(|e| ConfigError::new(format!("{upath}.uri"), format!("cannot fetch {}: {e}", uri.uri)))?;
    let got = super::engine::sha256_hex(&body);
    if got != sha {
        return Err(ConfigError::new(format!("{path}.sha256"), format!("the fetched module's sha256 is {got}, not {sha}")));
    }
    let _ = std::fs::create_dir_all(cache_dir()).and_then(|_| std::fs::write(&cached, &body));
    Ok(Bytes::from(body))
}

fn resolve(cluster: &Cluster) -> Option<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let (host, port) = cluster.dns.as_ref()?.names.first()?;
    let addrs: Vec<_> = (host.as_str(), *port).to_socket_addrs().ok()?.collect();
    addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).copied()
}

fn get(addr: std::net::SocketAddr, uri: &http::Uri, timeout: Duration) -> std::result::Result<Vec<u8>, String> {
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    write!(tcp, "GET {target} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no complete response")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap_or_default().to_string();
    if status != "200" {
        return Err(format!("status {status}"));
    }
    let body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        return dechunk(&body).ok_or_else(|| "bad chunked body".to_string());
    }
    Ok(body)
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
