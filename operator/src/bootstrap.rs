//! `weft-operator bootstrap`: the Envoy v3 bootstrap of one proxy, as
//! Istio's injector would write it — node identity, the `xds-grpc` cluster
//! (HTTP/2 to the operator), delta ADS for listeners and clusters, and the admin
//! listener on 15000. The same file starts weft-proxy and a stock Envoy.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::xds::Role;

/// Who the proxy is and where it finds the operator.
#[derive(Debug, Clone)]
pub struct Identity {
    pub role: Role,
    pub workload: String,
    pub namespace: String,
    /// The proxy's address, the second field of its node id.
    pub ip: String,
    pub labels: BTreeMap<String, String>,
    pub xds: SocketAddr,
    pub admin_port: u16,
}

impl Identity {
    /// Istio's node id: `sidecar~IP~WORKLOAD.NS~NS.svc.cluster.local`.
    pub fn node_id(&self) -> String {
        format!(
            "{}~{}~{}.{ns}~{ns}.svc.cluster.local",
            self.role.id_prefix(),
            self.ip,
            self.workload,
            ns = self.namespace
        )
    }
}

/// The bootstrap as JSON (which is also YAML).
pub fn render(id: &Identity) -> Value {
    json!({
        "node": {
            "id": id.node_id(),
            "cluster": format!("{}.{}", id.workload, id.namespace),
            "metadata": {
                "NAMESPACE": id.namespace,
                "WORKLOAD_NAME": id.workload,
                "LABELS": id.labels,
            },
        },
        "admin": {
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": id.admin_port } },
        },
        "dynamic_resources": {
            "ads_config": {
                // Incremental xDS, as Istio's proxies speak it by default:
                // a change sends only what changed (weft-proxy and Envoy
                // both speak it; GRPC, state of the world, also works).
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [ { "envoy_grpc": { "cluster_name": "xds-grpc" } } ],
            },
            "cds_config": { "ads": {}, "resource_api_version": "V3" },
            "lds_config": { "ads": {}, "resource_api_version": "V3" },
        },
        "static_resources": {
            "clusters": [{
                "name": "xds-grpc",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} },
                    },
                },
                "load_assignment": {
                    "cluster_name": "xds-grpc",
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": { "socket_address": {
                        "address": id.xds.ip().to_string(),
                        "port_value": id.xds.port(),
                    } } } }] }],
                },
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::Proxy;

    #[test]
    fn node_parses_back_to_the_identity() {
        let id = Identity {
            role: Role::Gateway,
            workload: "ingressgateway".into(),
            namespace: "istio-system".into(),
            ip: "10.0.0.7".into(),
            labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
            xds: "127.0.0.1:15010".parse().expect("address"),
            admin_port: 15000,
        };
        let json = render(&id);
        assert_eq!(
            json["node"]["id"],
            "router~10.0.0.7~ingressgateway.istio-system~istio-system.svc.cluster.local"
        );
        // Decode the node as a proxy would send it and identify it.
        let node: weft_envoy_api::pb::envoy::config::core::v3::Node = decode_node(&json["node"]);
        let proxy = Proxy::from_node(Some(&node)).expect("identifies");
        assert_eq!(proxy.role, Role::Gateway);
        assert_eq!(proxy.namespace, "istio-system");
        assert_eq!(proxy.labels, id.labels);
    }

    fn decode_node(v: &Value) -> weft_envoy_api::pb::envoy::config::core::v3::Node {
        let pool = weft_envoy_api::pool_for(&["envoy.config.core.v3.Node"]);
        let desc = pool
            .get_message_by_name("envoy.config.core.v3.Node")
            .expect("in the pool");
        let msg = weft_envoy_api::decode_json(desc, v).expect("node decodes");
        msg.transcode_to().expect("transcodes")
    }
}
