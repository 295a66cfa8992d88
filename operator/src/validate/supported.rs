//! The fields of each kind that translation implements, as path patterns:
//! `[]` stands for any list index, `*` for any map key. Any other field
//! that is set is reported as unsupported, naming its path, and the
//! resource is not put in effect.

/// A DestinationRule traffic policy (top level and per subset).
const TRAFFIC_POLICY: &[&str] = &[
    "loadBalancer.simple",
    "loadBalancer.consistentHash.httpHeaderName",
    "loadBalancer.consistentHash.httpQueryParameterName",
    "loadBalancer.consistentHash.useSourceIp",
    "loadBalancer.consistentHash.ringHash.minimumRingSize",
    "loadBalancer.consistentHash.minimumRingSize",
    "loadBalancer.consistentHash.maglev.tableSize",
    "connectionPool.tcp.maxConnections",
    "connectionPool.tcp.connectTimeout",
    "connectionPool.tcp.maxConnectionDuration",
    "connectionPool.tcp.tcpKeepalive.probes",
    "connectionPool.tcp.tcpKeepalive.time",
    "connectionPool.tcp.tcpKeepalive.interval",
    "connectionPool.http.http1MaxPendingRequests",
    "connectionPool.http.http2MaxRequests",
    "connectionPool.http.maxRetries",
    "connectionPool.http.maxRequestsPerConnection",
    "connectionPool.http.idleTimeout",
    "connectionPool.http.h2UpgradePolicy",
    "outlierDetection.consecutive5xxErrors",
    "outlierDetection.consecutiveErrors",
    "outlierDetection.consecutiveGatewayErrors",
    "outlierDetection.interval",
    "outlierDetection.baseEjectionTime",
    "outlierDetection.maxEjectionPercent",
];

const DESTINATION: &[&str] = &["host", "subset", "port.number"];
const HEADER_OPERATIONS: &[&str] = &["request.set.*", "request.add.*", "request.remove", "response.set.*", "response.add.*", "response.remove"];

const VIRTUAL_SERVICE: &[&str] = &[
    "hosts",
    "gateways",
    "http[].name",
    "http[].delegate.name",
    "http[].delegate.namespace",
    "http[].match[].name",
    "http[].match[].uri",
    "http[].match[].method",
    "http[].match[].authority",
    "http[].match[].scheme",
    "http[].match[].headers.*",
    "http[].match[].withoutHeaders.*",
    "http[].match[].queryParams.*",
    "http[].match[].ignoreUriCase",
    "http[].match[].port",
    "http[].match[].sourceLabels.*",
    "http[].match[].gateways",
    "http[].route[].weight",
    "http[].redirect.uri",
    "http[].redirect.authority",
    "http[].redirect.port",
    "http[].redirect.scheme",
    "http[].redirect.redirectCode",
    "http[].directResponse.status",
    "http[].directResponse.body.string",
    "http[].rewrite.uri",
    "http[].rewrite.authority",
    "http[].rewrite.uriRegexRewrite.match",
    "http[].rewrite.uriRegexRewrite.rewrite",
    "http[].timeout",
    "http[].retries.attempts",
    "http[].retries.perTryTimeout",
    "http[].retries.retryOn",
    "http[].fault.delay.fixedDelay",
    "http[].fault.delay.percentage.value",
    "http[].fault.delay.percent",
    "http[].fault.abort.httpStatus",
    "http[].fault.abort.percentage.value",
    "http[].mirrorPercentage.value",
    "http[].mirrors[].percentage.value",
    "http[].corsPolicy.allowOrigins",
    "http[].corsPolicy.allowOrigin",
    "http[].corsPolicy.allowMethods",
    "http[].corsPolicy.allowHeaders",
    "http[].corsPolicy.exposeHeaders",
    "http[].corsPolicy.maxAge",
    "http[].corsPolicy.allowCredentials",
    // On gateways only (validation reports them for sidecars).
    "tcp[].match[].port",
    "tcp[].match[].gateways",
    "tcp[].route[].weight",
    "tls[].match[].sniHosts",
    "tls[].match[].port",
    "tls[].match[].gateways",
    "tls[].route[].weight",
];

const SERVICE_ENTRY: &[&str] = &[
    "hosts",
    "ports[].number",
    "ports[].protocol",
    "ports[].name",
    "ports[].targetPort",
    "location",
    "resolution",
    "endpoints[].address",
    "endpoints[].ports.*",
    "endpoints[].labels.*",
    "endpoints[].weight",
    "workloadSelector.labels.*",
];

const WORKLOAD_ENTRY: &[&str] = &["address", "ports.*", "labels.*", "weight"];

/// `targetRef(s)`, OCI pulling and `match[].ports` are not here: see
/// [`reason`]. `pluginConfig` is the plugin's own, taken whole.
const WASM_PLUGIN: &[&str] = &[
    "selector.matchLabels.*",
    "url",
    "sha256",
    "pluginConfig",
    "pluginName",
    "phase",
    "priority",
    "failStrategy",
    "vmConfig.env[].name",
    "vmConfig.env[].value",
    "vmConfig.env[].valueFrom",
    "match[].mode",
    "type",
];

/// `tls.mode` is checked with the server's protocol (PASSTHROUGH only).
const GATEWAY: &[&str] =
    &["selector.*", "servers[].port.number", "servers[].port.protocol", "servers[].port.name", "servers[].hosts", "servers[].name", "servers[].tls.mode"];

/// Whether the field at `path` (indices already written as `[]`) of a
/// `kind`'s spec is implemented.
pub fn supported(kind: &str, path: &str) -> bool {
    static PATTERNS: std::sync::OnceLock<Vec<(&'static str, Vec<String>)>> = std::sync::OnceLock::new();
    let all = PATTERNS.get_or_init(|| {
        ["VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry", "Gateway", "WasmPlugin"].into_iter().map(|k| (k, patterns(k))).collect()
    });
    all.iter().find(|(k, _)| *k == kind).is_some_and(|(_, patterns)| patterns.iter().any(|p| matches(p, path)))
}

fn patterns(kind: &str) -> Vec<String> {
    match kind {
        "VirtualService" => {
            let mut p: Vec<String> = VIRTUAL_SERVICE.iter().map(|s| s.to_string()).collect();
            for prefix in ["http[].route[].destination", "http[].mirror", "http[].mirrors[].destination", "tcp[].route[].destination", "tls[].route[].destination"] {
                p.extend(DESTINATION.iter().map(|d| format!("{prefix}.{d}")));
            }
            for prefix in ["http[].headers", "http[].route[].headers"] {
                p.extend(HEADER_OPERATIONS.iter().map(|h| format!("{prefix}.{h}")));
            }
            p
        }
        "DestinationRule" => {
            let mut p = vec!["host".to_string(), "subsets[].name".into(), "subsets[].labels.*".into()];
            for level in ["trafficPolicy", "subsets[].trafficPolicy"] {
                p.extend(TRAFFIC_POLICY.iter().map(|t| format!("{level}.{t}")));
                p.push(format!("{level}.portLevelSettings[].port.number"));
                p.extend(TRAFFIC_POLICY.iter().map(|t| format!("{level}.portLevelSettings[].{t}")));
            }
            p
        }
        "ServiceEntry" => SERVICE_ENTRY.iter().map(|s| s.to_string()).collect(),
        "WorkloadEntry" => WORKLOAD_ENTRY.iter().map(|s| s.to_string()).collect(),
        "Gateway" => GATEWAY.iter().map(|s| s.to_string()).collect(),
        "WasmPlugin" => WASM_PLUGIN.iter().map(|s| s.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// Why an unsupported field is not supported, where there is more to say
/// than "not yet".
pub fn reason(kind: &str, path: &str) -> Option<&'static str> {
    const OCI: &str = "only used to pull OCI images, which weft does not: use a file:// or http:// url";
    const WASM: &[(&str, &str)] = &[
        ("imagePullPolicy", OCI),
        ("imagePullSecret", OCI),
        ("verificationKey", OCI),
        ("targetRef", "not supported by weft yet: select workloads with selector.matchLabels"),
        ("targetRefs[]", "not supported by weft yet: select workloads with selector.matchLabels"),
        (
            "match[].ports[]",
            "not supported by weft yet: a sidecar serves all ports on one outbound and one inbound listener, so a plugin cannot be limited to some",
        ),
    ];
    let table = match kind {
        "WasmPlugin" => WASM,
        _ => return None,
    };
    table.iter().find(|(p, _)| matches(p, path)).map(|(_, why)| *why)
}

/// A pattern matches a path equal to it, or (StringMatch, lists of
/// scalars) anything below it; `*` matches one map key.
fn matches(pattern: &str, path: &str) -> bool {
    let mut pat = pattern.split('.');
    let mut got = path.split('.');
    loop {
        match (pat.next(), got.next()) {
            (None, _) => return true,
            (Some(_), None) => return false,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(g)) if p == g => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(supported("VirtualService", "http[].route[].destination.host"));
        assert!(supported("VirtualService", "http[].match[].uri.prefix"));
        assert!(supported("VirtualService", "http[].match[].headers.end-user.exact"));
        assert!(supported("DestinationRule", "subsets[].trafficPolicy.loadBalancer.simple"));
        assert!(supported("VirtualService", "http[].delegate.name"));
        assert!(supported("VirtualService", "tcp[].route[].destination.host"));
        assert!(supported("VirtualService", "tls[].match[].sniHosts"));
        assert!(!supported("VirtualService", "tls[].match[].sourceLabels.app"));
        assert!(!supported("VirtualService", "tcp[].match[].destinationSubnets"));
        assert!(!supported("DestinationRule", "trafficPolicy.tls.mode"));
        assert!(supported("Gateway", "servers[].tls.mode"));
        assert!(!supported("Gateway", "servers[].tls.credentialName"));
        assert!(supported("WasmPlugin", "url"));
        assert!(supported("WasmPlugin", "pluginConfig.nested.list[].key"), "the plugin's configuration is taken whole");
        assert!(!supported("WasmPlugin", "match[].ports[].number"));
        assert_eq!(reason("WasmPlugin", "match[].ports[].number").map(|r| r.contains("one outbound")), Some(true));
        assert!(!supported("WasmPlugin", "targetRefs[].name"));
    }
}
