//! Bootstrap templates for the tests: one listener whose connection
//! manager sends every request through one route action, in front of
//! clusters built from parts. Placeholders (`${LISTEN}`, `${UP_<name>}`,
//! ...) are filled by `proxy::render`.

/// Admin, a listener on `${LISTEN}` routing `/` with `route` (the fields of
/// a RouteAction, e.g. `cluster: up, timeout: 1s`), and `clusters`.
pub fn single_route(route: &str, clusters: &[String]) -> String {
    single_route_with("", route, clusters)
}

/// [`single_route`] with connection manager fields added (`manager`, one
/// line of YAML such as `upgrade_configs: [...]`).
pub fn single_route_with(manager: &str, route: &str, clusters: &[String]) -> String {
    let vhost = format!(r#"virtual_hosts:
- {{ name: all, domains: ["*"], routes: [ {{ match: {{ prefix: "/" }}, route: {{ {route} }} }} ] }}"#);
    with_route_config(manager, &vhost, clusters)
}

/// Admin, a listener on `${LISTEN}` whose connection manager (with the
/// `manager` fields) has the route configuration `route_config` (its
/// fields as unindented YAML lines), and `clusters`.
pub fn with_route_config(manager: &str, route_config: &str, clusters: &[String]) -> String {
    let route_config: String = route_config.lines().map(|l| format!("            {l}\n")).collect();
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: ${{ADMIN}} }} }}
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: ${{LISTEN}} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          {manager}
          route_config:
{route_config}          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
{}"#,
        clusters.concat()
    )
}

/// A cluster: `fields` are cluster-level YAML lines (unindented), then the
/// load assignment's localities.
pub fn cluster(name: &str, fields: &str, localities: &[String]) -> String {
    let fields: String = fields.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("    {l}\n")).collect();
    let localities: String = localities.iter().map(|l| format!("      - {l}\n")).collect();
    format!("  - name: {name}\n{fields}    load_assignment:\n      cluster_name: {name}\n      endpoints:\n{localities}")
}

/// A locality at `priority` with the given endpoints.
pub fn locality(priority: u32, endpoints: &[String]) -> String {
    format!("{{ priority: {priority}, lb_endpoints: [ {} ] }}", endpoints.join(", "))
}

/// The named test upstream as an endpoint (127.0.0.1, its port).
pub fn upstream(name: &str) -> String {
    endpoint("127.0.0.1", &format!("${{UP_{name}}}"), "")
}

/// An lb_endpoint at `address:port` (the address may be a DNS name);
/// `extra` prefixes LbEndpoint fields, e.g. `load_balancing_weight: 2, `.
pub fn endpoint(address: &str, port: &str, extra: &str) -> String {
    format!("{{ {extra}endpoint: {{ address: {{ socket_address: {{ address: {address}, port_value: {port} }} }} }} }}")
}
