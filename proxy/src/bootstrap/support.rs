//! The subset of the Envoy API that weft-proxy implements, as data.
//!
//! Each message type lists the fields we act on. [`check`] walks a decoded
//! config and rejects any set field outside the list with its path and
//! "not supported by weft-proxy". Adding a field here is a promise that the
//! model compiler implements it and a differential test covers it.

use weft_envoy_api::prost_reflect::{DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value};

/// A field or extension type that weft-proxy does not implement.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {what} is not supported by weft-proxy")]
pub struct Unsupported {
    pub path: String,
    pub what: String,
}

/// Message types we accept, with the fields we implement.
/// `google.protobuf.*` wrappers and durations are leaves and always accepted.
const SUPPORTED: &[(&str, &[&str])] = &[
    (
        "envoy.config.bootstrap.v3.Bootstrap",
        // stats_flush_interval: accepted; weft-proxy's stats are always current.
        &["node", "static_resources", "dynamic_resources", "admin", "stats_flush_interval"],
    ),
    ("envoy.config.bootstrap.v3.Bootstrap.DynamicResources", &["lds_config", "cds_config", "ads_config"]),
    ("envoy.config.core.v3.ConfigSource", &["path", "path_config_source", "ads", "resource_api_version"]),
    ("envoy.config.core.v3.AggregatedConfigSource", &[]),
    (
        "envoy.config.core.v3.ApiConfigSource",
        &["api_type", "transport_api_version", "grpc_services", "set_node_on_first_message_only"],
    ),
    ("envoy.config.core.v3.GrpcService", &["envoy_grpc"]),
    ("envoy.config.core.v3.GrpcService.EnvoyGrpc", &["cluster_name"]),
    ("envoy.config.core.v3.PathConfigSource", &["path"]),
    ("envoy.service.discovery.v3.DiscoveryResponse", &["version_info", "resources", "type_url"]),
    (
        "envoy.config.bootstrap.v3.Bootstrap.StaticResources",
        &["listeners", "clusters"],
    ),
    ("envoy.config.bootstrap.v3.Admin", &["address"]),
    ("envoy.config.core.v3.Node", &["id", "cluster", "metadata"]),
    ("envoy.config.core.v3.Address", &["socket_address"]),
    (
        "envoy.config.core.v3.SocketAddress",
        &["address", "port_value", "protocol"],
    ),
    (
        "envoy.config.listener.v3.Listener",
        &["name", "address", "filter_chains", "default_filter_chain", "listener_filters", "stat_prefix"],
    ),
    ("envoy.config.listener.v3.ListenerFilter", &["name", "typed_config"]),
    ("envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector", &[]),
    (
        "envoy.config.listener.v3.FilterChain",
        &["filters", "name", "filter_chain_match", "transport_socket"],
    ),
    (
        "envoy.config.listener.v3.FilterChainMatch",
        &["server_names", "transport_protocol", "application_protocols"],
    ),
    ("envoy.config.core.v3.TransportSocket", &["name", "typed_config"]),
    ("envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer", &[]),
    (
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        &["common_tls_context", "require_client_certificate"],
    ),
    ("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", &["common_tls_context", "sni"]),
    (
        "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext",
        &["tls_params", "tls_certificates", "validation_context", "alpn_protocols"],
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.TlsParameters",
        &["tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites", "ecdh_curves"],
    ),
    ("envoy.extensions.transport_sockets.tls.v3.TlsCertificate", &["certificate_chain", "private_key"]),
    (
        "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext",
        &["trusted_ca", "match_typed_subject_alt_names"],
    ),
    ("envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher", &["san_type", "matcher"]),
    ("envoy.config.listener.v3.Filter", &["name", "typed_config"]),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        &[
            "stat_prefix",
            "codec_type",
            "route_config",
            "http_filters",
            "use_remote_address",
            "server_name",
            "generate_request_id",
            "access_log",
            "forward_client_cert_details",
            "set_current_client_cert_details",
            "stream_idle_timeout",
            "common_http_protocol_options",
            "drain_timeout",
            "delayed_close_timeout",
            "max_request_headers_kb",
            "normalize_path",
            "merge_slashes",
            "path_with_escaped_slashes_action",
            "rds",
            "upgrade_configs",
            "http2_protocol_options",
        ],
    ),
    ("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig", &["upgrade_type", "enabled"]),
    ("envoy.config.core.v3.HttpProtocolOptions", &["idle_timeout", "max_requests_per_connection", "max_connection_duration"]),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.Rds",
        &["config_source", "route_config_name"],
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.SetCurrentClientCertDetails",
        &["subject", "uri", "dns"],
    ),
    ("envoy.config.accesslog.v3.AccessLog", &["name", "typed_config"]),
    ("envoy.extensions.access_loggers.file.v3.FileAccessLog", &["path", "log_format"]),
    ("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", &["log_format"]),
    ("envoy.extensions.access_loggers.stream.v3.StderrAccessLog", &["log_format"]),
    // Operators are checked when the format is parsed (access_log/format.rs).
    ("envoy.config.core.v3.SubstitutionFormatString", &["text_format", "text_format_source", "json_format"]),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
        &["name", "typed_config"],
    ),
    ("envoy.extensions.filters.http.router.v3.Router", &[]),
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", &["stat_prefix", "cluster", "weighted_clusters", "idle_timeout"]),
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster", &["clusters"]),
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight", &["name", "weight"]),
    (
        "envoy.extensions.filters.http.fault.v3.HTTPFault",
        &["delay", "abort", "headers", "max_active_faults"],
    ),
    ("envoy.extensions.filters.common.fault.v3.FaultDelay", &["fixed_delay", "header_delay", "percentage"]),
    ("envoy.extensions.filters.common.fault.v3.FaultDelay.HeaderDelay", &[]),
    ("envoy.extensions.filters.http.fault.v3.FaultAbort", &["http_status", "grpc_status", "header_abort", "percentage", "response_body"]),
    ("envoy.extensions.filters.http.fault.v3.FaultAbort.HeaderAbort", &[]),
    ("envoy.type.v3.FractionalPercent", &["numerator", "denominator"]),
    ("envoy.extensions.filters.http.cors.v3.Cors", &[]),
    (
        "envoy.extensions.filters.http.cors.v3.CorsPolicy",
        &[
            "allow_origin_string_match",
            "allow_methods",
            "allow_headers",
            "expose_headers",
            "max_age",
            "allow_credentials",
            "filter_enabled",
            "shadow_enabled",
            "allow_private_network_access",
            "forward_not_matching_preflights",
        ],
    ),
    (
        "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        &[
            "stat_prefix",
            "status",
            "token_bucket",
            "filter_enabled",
            "filter_enforced",
            "request_headers_to_add_when_not_enforced",
            "response_headers_to_add",
            "local_rate_limit_per_downstream_connection",
            "enable_x_ratelimit_headers",
            "rate_limited_as_resource_exhausted",
        ],
    ),
    ("envoy.type.v3.TokenBucket", &["max_tokens", "tokens_per_fill", "fill_interval"]),
    ("envoy.type.v3.HttpStatus", &["code"]),
    (
        "envoy.config.route.v3.RouteConfiguration",
        &[
            "name",
            "virtual_hosts",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "validate_clusters",
            "request_mirror_policies",
        ],
    ),
    (
        "envoy.config.route.v3.VirtualHost",
        &[
            "name",
            "domains",
            "routes",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "retry_policy",
            "typed_per_filter_config",
            "request_mirror_policies",
        ],
    ),
    (
        "envoy.config.route.v3.Route",
        &[
            "name",
            "match",
            "route",
            "redirect",
            "direct_response",
            "typed_per_filter_config",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
        ],
    ),
    (
        "envoy.config.route.v3.RouteMatch",
        &[
            "prefix",
            "path",
            "safe_regex",
            "path_separated_prefix",
            "case_sensitive",
            "headers",
            "query_parameters",
        ],
    ),
    (
        "envoy.type.matcher.v3.RegexMatcher",
        &["google_re2", "regex"],
    ),
    ("envoy.type.matcher.v3.RegexMatcher.GoogleRE2", &[]),
    (
        "envoy.config.route.v3.HeaderMatcher",
        &[
            "name",
            "exact_match",
            "safe_regex_match",
            "range_match",
            "present_match",
            "prefix_match",
            "suffix_match",
            "contains_match",
            "string_match",
            "invert_match",
            "treat_missing_header_as_empty",
        ],
    ),
    (
        "envoy.type.matcher.v3.StringMatcher",
        &[
            "exact",
            "prefix",
            "suffix",
            "contains",
            "safe_regex",
            "ignore_case",
        ],
    ),
    ("envoy.type.v3.Int64Range", &["start", "end"]),
    (
        "envoy.config.route.v3.QueryParameterMatcher",
        &["name", "string_match", "present_match"],
    ),
    (
        "envoy.config.route.v3.RouteAction",
        &[
            "cluster",
            "weighted_clusters",
            "timeout",
            "retry_policy",
            "prefix_rewrite",
            "regex_rewrite",
            "host_rewrite_literal",
            "request_mirror_policies",
            "hash_policy",
            "auto_host_rewrite",
            "idle_timeout",
            "upgrade_configs",
        ],
    ),
    ("envoy.config.route.v3.RouteAction.UpgradeConfig", &["upgrade_type", "enabled"]),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy",
        &["header", "query_parameter", "connection_properties", "terminal"],
    ),
    ("envoy.config.route.v3.RouteAction.HashPolicy.Header", &["header_name"]),
    ("envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter", &["name"]),
    ("envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties", &["source_ip"]),
    (
        "envoy.config.route.v3.RouteAction.RequestMirrorPolicy",
        &["cluster", "runtime_fraction", "disable_shadow_host_suffix_append"],
    ),
    ("envoy.config.core.v3.RuntimeFractionalPercent", &["default_value", "runtime_key"]),
    (
        "envoy.config.route.v3.WeightedCluster",
        &["clusters", "total_weight"],
    ),
    (
        "envoy.config.route.v3.WeightedCluster.ClusterWeight",
        &[
            "name",
            "weight",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
        ],
    ),
    (
        "envoy.config.route.v3.RetryPolicy.RetryHostPredicate",
        &["name", "typed_config"],
    ),
    ("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate", &[]),
    (
        "envoy.config.route.v3.RetryPolicy",
        &[
            "retry_host_predicate",
            "host_selection_retry_max_attempts",
            "retry_on",
            "num_retries",
            "per_try_timeout",
            "retriable_status_codes",
            "retry_back_off",
        ],
    ),
    (
        "envoy.config.route.v3.RetryPolicy.RetryBackOff",
        &["base_interval", "max_interval"],
    ),
    (
        "envoy.config.route.v3.RedirectAction",
        &[
            "https_redirect",
            "scheme_redirect",
            "host_redirect",
            "port_redirect",
            "path_redirect",
            "prefix_rewrite",
            "response_code",
            "strip_query",
        ],
    ),
    (
        "envoy.config.route.v3.DirectResponseAction",
        &["status", "body"],
    ),
    (
        "envoy.config.core.v3.DataSource",
        &["inline_string", "inline_bytes", "filename"],
    ),
    (
        "envoy.config.core.v3.HeaderValueOption",
        &["header", "append", "append_action", "keep_empty_value"],
    ),
    ("envoy.config.core.v3.HeaderValue", &["key", "value"]),
    (
        "envoy.type.matcher.v3.RegexMatchAndSubstitute",
        &["pattern", "substitution"],
    ),
    (
        "envoy.config.cluster.v3.Cluster",
        &[
            "name",
            "type",
            "connect_timeout",
            "lb_policy",
            "load_assignment",
            "dns_lookup_family",
            "dns_refresh_rate",
            "circuit_breakers",
            "least_request_lb_config",
            "ring_hash_lb_config",
            "maglev_lb_config",
            "transport_socket",
            "outlier_detection",
            "health_checks",
            "http2_protocol_options",
            "typed_extension_protocol_options",
            "eds_cluster_config",
            "upstream_connection_options",
        ],
    ),
    ("envoy.config.cluster.v3.UpstreamConnectionOptions", &["tcp_keepalive"]),
    ("envoy.config.core.v3.TcpKeepalive", &["keepalive_probes", "keepalive_time", "keepalive_interval"]),
    ("envoy.config.cluster.v3.Cluster.EdsClusterConfig", &["eds_config", "service_name"]),
    (
        "envoy.config.core.v3.Http2ProtocolOptions",
        &[
            "max_concurrent_streams",
            "initial_stream_window_size",
            "initial_connection_window_size",
            "override_stream_error_on_invalid_http_message",
        ],
    ),
    ("envoy.config.core.v3.Http1ProtocolOptions", &[]),
    ("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", &["explicit_http_config", "common_http_protocol_options"]),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig",
        &["http_protocol_options", "http2_protocol_options"],
    ),
    (
        "envoy.config.cluster.v3.OutlierDetection",
        &[
            "consecutive_5xx",
            "enforcing_consecutive_5xx",
            "consecutive_gateway_failure",
            "enforcing_consecutive_gateway_failure",
            "interval",
            "base_ejection_time",
            "max_ejection_time",
            "max_ejection_percent",
        ],
    ),
    (
        "envoy.config.core.v3.HealthCheck",
        &["timeout", "interval", "no_traffic_interval", "unhealthy_threshold", "healthy_threshold", "http_health_check"],
    ),
    ("envoy.config.core.v3.HealthCheck.HttpHealthCheck", &["path", "host", "expected_statuses"]),
    (
        "envoy.config.cluster.v3.Cluster.RingHashLbConfig",
        &["minimum_ring_size", "maximum_ring_size", "hash_function"],
    ),
    ("envoy.config.cluster.v3.Cluster.MaglevLbConfig", &["table_size"]),
    ("envoy.config.cluster.v3.Cluster.LeastRequestLbConfig", &["choice_count"]),
    ("envoy.config.cluster.v3.CircuitBreakers", &["thresholds"]),
    (
        "envoy.config.cluster.v3.CircuitBreakers.Thresholds",
        &["priority", "max_requests", "max_retries", "max_connections", "max_pending_requests"],
    ),
    (
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        &["cluster_name", "endpoints"],
    ),
    (
        "envoy.config.endpoint.v3.LocalityLbEndpoints",
        &["lb_endpoints", "priority"],
    ),
    ("envoy.config.endpoint.v3.LbEndpoint", &["endpoint", "load_balancing_weight"]),
    ("envoy.config.endpoint.v3.Endpoint", &["address", "hostname"]),
    // proxy-wasm plugins (wasm/).
    ("envoy.extensions.filters.http.wasm.v3.Wasm", &["config"]),
    (
        "envoy.extensions.wasm.v3.PluginConfig",
        &["name", "root_id", "vm_config", "configuration", "fail_open", "failure_policy"],
    ),
    (
        "envoy.extensions.wasm.v3.VmConfig",
        &["vm_id", "runtime", "code", "configuration", "environment_variables"],
    ),
    ("envoy.extensions.wasm.v3.EnvironmentVariables", &["host_env_keys", "key_values"]),
    ("envoy.config.core.v3.AsyncDataSource", &["local", "remote"]),
    ("envoy.config.core.v3.RemoteDataSource", &["http_uri", "sha256"]),
    ("envoy.config.core.v3.HttpUri", &["uri", "cluster", "timeout"]),
];

/// Every message type of the supported subset: the roots of the descriptor
/// pool a load needs.
pub fn roots() -> Vec<&'static str> {
    SUPPORTED.iter().map(|(name, _)| *name).collect()
}

fn supported_fields(message: &str) -> Option<&'static [&'static str]> {
    SUPPORTED
        .iter()
        .find(|(name, _)| *name == message)
        .map(|(_, fields)| *fields)
}

/// Rejects any set field outside [`SUPPORTED`], naming its path.
pub fn check(msg: &DynamicMessage) -> Result<(), Unsupported> {
    walk(msg, &mut String::new())
}

fn walk(msg: &DynamicMessage, path: &mut String) -> Result<(), Unsupported> {
    let desc = msg.descriptor();
    let name = desc.full_name();
    if name.starts_with("google.protobuf.") && name != "google.protobuf.Any" {
        return Ok(());
    }
    if name == "google.protobuf.Any" {
        return walk_any(msg, path);
    }
    let Some(allowed) = supported_fields(name) else {
        return Err(Unsupported {
            path: display(path),
            what: format!("message type {name}"),
        });
    };
    for (field, value) in msg.fields() {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(field.name());
        if !allowed.contains(&field.name()) {
            return Err(Unsupported {
                path: path.clone(),
                what: format!("field `{}`", field.name()),
            });
        }
        walk_value(value, path)?;
        path.truncate(len);
    }
    Ok(())
}

fn walk_value(value: &Value, path: &mut String) -> Result<(), Unsupported> {
    match value {
        Value::Message(m) => walk(m, path),
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk_value(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Map(entries) => {
            // Keys in the path as the model compiler writes them:
            // `typed_per_filter_config["envoy.filters.http.cors"]`.
            for (key, item) in entries {
                let len = path.len();
                match key {
                    MapKey::String(k) => path.push_str(&format!("[{k:?}]")),
                    other => path.push_str(&format!("[{other:?}]")),
                }
                walk_value(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `typed_config` and friends: the inner type must be one we implement.
fn walk_any(msg: &DynamicMessage, path: &mut String) -> Result<(), Unsupported> {
    let type_url = msg
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let bytes = msg
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let type_name = weft_envoy_api::type_name(&type_url);
    // Well-known values (a plugin's `configuration` as StringValue,
    // BytesValue or Struct) are data, not extensions.
    if type_name.starts_with("google.protobuf.") && msg.descriptor().parent_pool().get_message_by_name(type_name).is_some() {
        return Ok(());
    }
    let inner: Option<MessageDescriptor> = msg.descriptor().parent_pool().get_message_by_name(type_name);
    let Some(inner) = inner.filter(|_| supported_fields(type_name).is_some()) else {
        return Err(Unsupported {
            path: display(path),
            what: format!("extension type {type_url}"),
        });
    };
    let decoded = DynamicMessage::decode(inner, bytes.as_ref()).map_err(|e| Unsupported {
        path: display(path),
        what: format!("undecodable {type_url} ({e})"),
    })?;
    walk(&decoded, path)
}

fn display(path: &str) -> String {
    if path.is_empty() {
        "<root>".into()
    } else {
        path.to_string()
    }
}
