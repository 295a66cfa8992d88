//! `x-forwarded-for` as Envoy extends it, and the address Envoy names
//! itself by (an edge proxy's loopback peer, a mirrored request's sender).

use std::net::IpAddr;

use http::HeaderValue;
use pingora_http::RequestHeader;

/// This host's address as Envoy picks it: the first non-loopback IPv4
/// address of the interfaces, else the first IPv6 one.
pub fn local_address() -> Option<IpAddr> {
    static LOCAL: std::sync::OnceLock<Option<IpAddr>> = std::sync::OnceLock::new();
    *LOCAL.get_or_init(|| {
        let ips: Vec<IpAddr> =
            if_addrs::get_if_addrs().ok()?.into_iter().filter(|i| !i.is_loopback()).map(|i| i.ip()).collect();
        ips.iter().find(|ip| ip.is_ipv4()).or_else(|| ips.first()).copied()
    })
}

/// Appends `hop` to x-forwarded-for (`a,b`, Envoy's separator).
pub fn append(req: &mut RequestHeader, hop: IpAddr) {
    let xff = match req.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev},{hop}"),
        None => hop.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        let _ = req.insert_header("x-forwarded-for", v);
    }
}

/// The rightmost `x-forwarded-for` address: the hop nearest this proxy.
/// `None` when the header is missing or that entry is not an IP address.
pub fn last(req: &RequestHeader) -> Option<IpAddr> {
    let xff = req.headers.get("x-forwarded-for")?.to_str().ok()?;
    xff.rsplit(',').next()?.trim().parse().ok()
}
