//! The registry's resources (ServiceEntry, WorkloadEntry) checked as
//! `istioctl validate` checks them, as far as weft implements them:
//! endpoint addresses by resolution (IPs for STATIC, IPs or host names for
//! DNS), DNS entries' hosts and endpoint counts, endpoint port names; and
//! what no proxy could run (a LOGICAL_DNS cluster with several endpoints).

use weft_crds::networking::service_entry::{Resolution, ServiceEntrySpec, ServicePort};
use weft_crds::networking::WorkloadEntrySpec;
use weft_crds::status::{Level, Problem};

use super::{finding, Finding};
use crate::index::{is_dns, Index, Key};

const UNIX: &str = "unix://";

pub fn service_entry(index: &Index, key: &Key, spec: &ServiceEntrySpec, findings: &mut Vec<Finding>) {
    let mut report = |level: Level, problem: Problem, path: &str, message: &str| findings.push(finding(key, level, problem, path, message));
    let resolution = spec.resolution.unwrap_or(Resolution::None);
    let mode = mode(resolution);
    let dns = is_dns(resolution);
    if resolution == Resolution::DynamicDns {
        report(Level::Error, Problem::UnsupportedField, "spec.resolution", "DYNAMIC_DNS is not supported by weft yet (NONE, STATIC, DNS and DNS_ROUND_ROBIN are)");
    }
    if dns && spec.endpoints.is_empty() {
        // The hosts are the endpoints then: names to resolve.
        for (i, host) in spec.hosts.iter().enumerate().filter(|(_, h)| !is_fqdn(h)) {
            let message = format!("hosts must be FQDN if no endpoints are provided for resolution mode {mode}: {host:?} is not");
            report(Level::Error, Problem::InvalidValue, &format!("spec.hosts[{i}]"), &message);
        }
    }
    if resolution == Resolution::DnsRoundRobin && spec.endpoints.len() > 1 {
        report(Level::Error, Problem::InvalidValue, "spec.endpoints", "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN");
    }
    for (i, e) in spec.endpoints.iter().enumerate() {
        let path = format!("spec.endpoints[{i}]");
        let place = if dns { Place::Dns } else { Place::Static };
        if let Some((problem, message)) = e.address.as_deref().and_then(|a| address_problem(a, place)) {
            report(Level::Error, problem, &format!("{path}.address"), &message);
        }
        for (name, number) in &e.ports {
            let ppath = format!("{path}.ports.{name}");
            if !spec.ports.iter().any(|p| p.name == *name) {
                report(Level::Error, Problem::ReferenceNotFound, &ppath, &format!("endpoint port {number} is not defined by the service entry (it has no port named {name})"));
            }
            if !(1..=65535).contains(number) {
                report(Level::Error, Problem::InvalidValue, &ppath, &format!("port number {number} must be in the range 1..65535"));
            }
        }
    }
    let service = spec.hosts.first().and_then(|h| index.services.get(h));
    if spec.workload_selector.is_some() {
        let selected = service.map_or(&[][..], |s| s.instances.as_slice());
        if dns {
            report(Level::Warning, Problem::InvalidValue, "spec.workloadSelector", &format!("workloadSelector should not be set when resolution mode is {mode}"));
        } else if let Some(named) = selected.iter().find(|i| !i.has_ip()) {
            let message = format!("selects a WorkloadEntry whose address {:?} is a host name: as in istiod, only DNS entries resolve names, so it is not an endpoint of this {mode} entry", named.address);
            report(Level::Warning, Problem::InvalidValue, "spec.workloadSelector", &message);
        }
        if resolution == Resolution::DnsRoundRobin && selected.len() > 1 {
            let message = format!(
                "selects {} WorkloadEntries, and resolution mode DNS_ROUND_ROBIN (a LOGICAL_DNS cluster) takes exactly one endpoint: proxies would reject the cluster",
                selected.len()
            );
            report(Level::Error, Problem::InvalidValue, "spec.workloadSelector", &message);
        }
    }
    if resolution != Resolution::None && spec.hosts.len() > 1 && spec.ports.iter().any(|p| !http_or_tls(p)) {
        // Plain TCP carries no name to tell the hosts apart by.
        report(Level::Error, Problem::InvalidValue, "spec.hosts", "multiple hosts provided with non-HTTP, non-TLS ports");
    }
}

pub fn workload_entry(key: &Key, spec: &WorkloadEntrySpec, findings: &mut Vec<Finding>) {
    if let Some((problem, message)) = spec.address.as_deref().and_then(|a| address_problem(a, Place::Workload)) {
        findings.push(finding(key, Level::Error, problem, "spec.address", &message));
    }
}

/// Where an address is given, for what Istio accepts there.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    /// A STATIC or NONE entry's endpoint: an IP address (or a Unix socket).
    Static,
    /// A DNS entry's endpoint: an IP address or a host name to resolve.
    Dns,
    /// A WorkloadEntry, which does not know the entries that select it:
    /// any of these (a host name is only used by DNS entries).
    Workload,
}

/// What is wrong with an endpoint address, if anything.
fn address_problem(address: &str, place: Place) -> Option<(Problem, String)> {
    let names = place != Place::Static;
    if address.parse::<std::net::IpAddr>().is_ok() || (names && is_fqdn(address)) {
        None
    } else if address.starts_with(UNIX) && place != Place::Dns {
        Some((Problem::UnsupportedField, "Unix domain socket endpoints are not supported by weft yet".into()))
    } else if names {
        Some((Problem::InvalidValue, format!("{address:?} is not a valid FQDN or an IP address")))
    } else {
        Some((Problem::InvalidValue, format!("{address:?} is not an IP address")))
    }
}

/// Istio's name for a resolution, as messages spell it.
fn mode(resolution: Resolution) -> &'static str {
    match resolution {
        Resolution::None => "NONE",
        Resolution::Static => "STATIC",
        Resolution::Dns => "DNS",
        Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
        Resolution::DynamicDns => "DYNAMIC_DNS",
    }
}

/// Ports whose requests name their host (HTTP's authority, TLS's SNI).
fn http_or_tls(port: &ServicePort) -> bool {
    let protocol = port.protocol.as_deref().unwrap_or_default().to_ascii_uppercase();
    matches!(protocol.as_str(), "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" | "HTTP_PROXY" | "HTTPS" | "TLS")
}

/// A fully qualified domain name as Istio's `ValidateFQDN` takes it: at
/// most 255 characters of DNS-1123 labels (a trailing dot allowed), the
/// last not all digits. No wildcards.
pub fn is_fqdn(name: &str) -> bool {
    let labels: Vec<&str> = name.strip_suffix('.').unwrap_or(name).split('.').collect();
    let numeric_tld = labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    !name.is_empty() && name.len() <= 255 && !numeric_tld && labels.iter().all(|l| is_dns1123_label(l))
}

/// Lowercase letters, digits and `-`, 1 to 63 of them, starting and ending
/// with a letter or digit.
fn is_dns1123_label(label: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = label.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(|b| alnum(*b) || *b == b'-')
        && bytes.first().copied().is_some_and(alnum)
        && bytes.last().copied().is_some_and(alnum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdns() {
        for good in ["localhost", "api.localhost", "www.googleapis.com", "a-b.example.", "x1.io"] {
            assert!(is_fqdn(good), "{good}");
        }
        for bad in ["", "*.example.com", "Upper.example", "-a.example", "a..b", "10.0.0.0/24", "unix:///tmp/s.sock", "1.2.3.4", "a.123", &"a".repeat(64)] {
            assert!(!is_fqdn(bad), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(address_problem("10.0.0.1", Place::Static), None);
        assert_eq!(address_problem("::1", Place::Dns), None);
        assert_eq!(address_problem("db.example", Place::Dns), None);
        assert_eq!(address_problem("db.example", Place::Workload), None);
        assert!(matches!(address_problem("db.example", Place::Static), Some((Problem::InvalidValue, m)) if m.contains("not an IP")));
        assert!(matches!(address_problem("unix:///s.sock", Place::Static), Some((Problem::UnsupportedField, _))));
        assert!(matches!(address_problem("unix:///s.sock", Place::Workload), Some((Problem::UnsupportedField, _))));
        assert!(matches!(address_problem("unix:///s.sock", Place::Dns), Some((Problem::InvalidValue, m)) if m.contains("FQDN")));
        assert!(matches!(address_problem("10.0.0.0/24", Place::Dns), Some((Problem::InvalidValue, _))));
    }
}
