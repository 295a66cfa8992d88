//! Access logs in Envoy's default format, line for line (times, durations
//! and generated ids masked).

use std::time::Duration;

use weft_e2e::{Kind, Proxy, Request, Upstream};

const LOGGED: &str = r#"
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: ${ADMIN} } }
static_resources:
  listeners:
  - name: main
    address: { socket_address: { address: 127.0.0.1, port_value: ${LISTEN} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: ${LOG}
          route_config:
            virtual_hosts:
            - name: ok
              domains: ["ok.test"]
              routes:
              - match: { prefix: "/direct" }
                direct_response: { status: 200, body: { inline_string: "hi" } }
              - match: { prefix: "/dead" }
                route: { cluster: dead, retry_policy: { retry_on: connect-failure, num_retries: 1 } }
              - match: { prefix: "/fault" }
                route: { cluster: up }
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                    abort: { http_status: 503, percentage: { numerator: 100 } }
              - match: { prefix: "/limited" }
                route: { cluster: up }
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                    stat_prefix: limited
                    token_bucket: { max_tokens: 0, fill_interval: 60s }
                    filter_enabled: { default_value: { numerator: 100 } }
                    filter_enforced: { default_value: { numerator: 100 } }
              - match: { prefix: "/cors" }
                route: { cluster: up }
                typed_per_filter_config:
                  envoy.filters.http.cors:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                    allow_origin_string_match: [ { exact: "https://a.test" } ]
                    allow_methods: "GET,PUT"
              - match: { prefix: "/" }
                route: { cluster: up, prefix_rewrite: "/rewritten/" }
          http_filters:
          - name: envoy.filters.http.cors
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: http
          - name: envoy.filters.http.fault
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: up
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${UP_up} } } }
  - name: dead
    connect_timeout: 1s
    load_assignment:
      cluster_name: dead
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 1 } } }
"#;

/// A log line with volatile fields masked.
fn normalize(line: &str) -> String {
    let re = regex::Regex::new(
        r#"^\[[^\]]+\] "([^"]*)" (\d+) (\S+) (\d+) (\d+) \d+ (\S+) "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)"$"#,
    )
    .expect("regex");
    let Some(c) = re.captures(line) else {
        return format!("UNPARSED: {line}");
    };
    let present = |v: &str| if v == "-" { "-" } else { "<set>" };
    format!(
        "\"{}\" {} {} {} {} ust={} xff={} ua={} rid={} auth={} upstream={}",
        &c[1], &c[2], &c[3], &c[4], &c[5], present(&c[6]), &c[7], &c[8], present(&c[9]), &c[10], &c[11]
    )
}

/// One request of each kind the logs tell apart: proxied (with a user
/// agent, with a body), direct response, fault abort, local rate limit,
/// dead upstream, no route, a CORS preflight.
fn requests() -> [Request; 8] {
    [
        Request::get("/page?x=1").header("host", "ok.test").header("user-agent", "test-agent/1.0"),
        Request::get("/direct").header("host", "ok.test").header("x-forwarded-for", "203.0.113.9"),
        Request::get("/").header("host", "ok.test").method("POST").body("hello"),
        Request::get("/fault").header("host", "ok.test"),
        Request::get("/limited").header("host", "ok.test"),
        Request::get("/dead").header("host", "ok.test"),
        Request::get("/nowhere").header("host", "unknown.test"),
        Request::get("/cors").method("OPTIONS").header("host", "ok.test").header("origin", "https://a.test").header("access-control-request-method", "PUT"),
    ]
}

/// Runs the requests through a proxy of `kind`, then stops it: both
/// proxies flush their access logs on shutdown.
async fn send_and_stop(kind: Kind, template: &str, up: &Upstream, requests: &[Request]) {
    let mut proxy = Proxy::start(kind, template, &[up]).await.expect("start");
    for r in requests {
        proxy.send(r).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.terminate();
}

#[tokio::test]
async fn access_log_lines_match_envoy() {
    let up = Upstream::start("up").await;
    let requests = requests();
    let mut lines = Vec::new();
    for kind in Kind::BOTH {
        let log = std::env::temp_dir().join(format!("weft-e2e-access-{}-{kind:?}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let template = LOGGED.replace("${LOG}", &log.display().to_string());
        send_and_stop(kind, &template, &up, &requests).await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        lines.push(text.lines().map(normalize).collect::<Vec<_>>());
    }
    assert_eq!(lines[0].len(), requests.len(), "Envoy logged:\n{}", lines[0].join("\n"));
    for (i, (e, w)) in lines[0].iter().zip(&lines[1]).enumerate() {
        assert_eq!(e, w, "line {i}: left Envoy, right weft-proxy");
    }
    assert_eq!(lines[0].len(), lines[1].len());
    assert!(lines[1][4].contains(" 429 RL "), "a local rate limit sets RL: {}", lines[1][4]);
}

/// The same requests logged through `log_format`: a text format with
/// Envoy's operators and a JSON one (typed values, nested objects).
const FORMATS: &str = r#"
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: ${LOG}.text
              log_format:
                text_format_source:
                  inline_string: "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% cluster=%UPSTREAM_CLUSTER% %UPSTREAM_HOST% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% ua=%REQ(USER-AGENT):4% ct=%RESP(CONTENT-TYPE)% %RESP(X-UPSTREAM?SERVER)% %REQ(:AUTHORITY)% %HOSTNAME% %RESPONSE_CODE_DETAILS% route=%ROUTE_NAME% raw=%UPSTREAM_CLUSTER_RAW% tfr=%UPSTREAM_TRANSPORT_FAILURE_REASON% ula=%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% sni=%REQUESTED_SERVER_NAME% ctd=%CONNECTION_TERMINATION_DETAILS% 100%%\n"
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: ${LOG}.json
              log_format:
                json_format:
                  code: "%RESPONSE_CODE%"
                  flags: "%RESPONSE_FLAGS%"
                  path: "%REQ(:PATH)%"
                  start: "%START_TIME%"
                  duration: "%DURATION%"
                  upstream: { cluster: "%UPSTREAM_CLUSTER%", host: "%UPSTREAM_HOST%" }
                  ua: "ua=%REQ(USER-AGENT)%"
                  sent: "%BYTES_SENT%"
                  remote: "%DOWNSTREAM_REMOTE_ADDRESS%"
                  upstream_local: "%UPSTREAM_LOCAL_ADDRESS%"
"#;

#[tokio::test]
async fn log_formats_match_envoy() {
    let up = Upstream::start("up").await;
    // requests()[1] carries x-forwarded-for: without use_remote_address
    // both take the downstream remote address from it.
    let requests = requests();
    let port = regex::Regex::new(r"127\.0\.0\.1:\d+").expect("regex");
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let log = std::env::temp_dir().join(format!("weft-e2e-formats-{}-{kind:?}", std::process::id()));
        let (text, json) = (log.with_extension("text"), log.with_extension("json"));
        let _ = (std::fs::remove_file(&text), std::fs::remove_file(&json));
        let template = LOGGED
            .replace("          access_log:\n", &format!("          access_log:{FORMATS}"))
            .replace("${LOG}", &log.display().to_string())
            .replace("              path: ${LOG}\n", "");
        send_and_stop(kind, &template, &up, &requests).await;
        let text_lines: Vec<String> = std::fs::read_to_string(&text).unwrap_or_default().lines().map(str::to_string).collect();
        let json_lines: Vec<serde_json::Value> = std::fs::read_to_string(&json)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{kind:?}: not JSON ({e}): {l}"));
                // Volatile: when, how long, the client's port; their shape is checked.
                assert!(v["start"].as_str().is_some_and(|s| s.ends_with('Z') && s.len() == 24), "{kind:?}: {v}");
                assert!(v["duration"].is_u64(), "{kind:?}: {v}");
                v["start"] = "<start>".into();
                v["duration"] = 0.into();
                for key in ["remote", "upstream_local"] {
                    if let Some(address) = v[key].as_str().map(str::to_string) {
                        v[key] = port.replace(&address, "127.0.0.1:<port>").into_owned().into();
                    }
                }
                v
            })
            .collect();
        seen.push((text_lines, json_lines));
    }
    assert_eq!(seen[0].0.len(), requests.len(), "Envoy logged:\n{}", seen[0].0.join("\n"));
    for i in 0..requests.len() {
        assert_eq!(seen[0].0.get(i), seen[1].0.get(i), "text line {i}: left Envoy, right weft-proxy");
        assert_eq!(seen[0].1.get(i), seen[1].1.get(i), "JSON line {i}: left Envoy, right weft-proxy");
    }
    assert_eq!(seen[1].1[0]["code"], 200, "typed: {}", seen[1].1[0]);
    assert_eq!(seen[1].1[1]["remote"], "203.0.113.9:0", "from x-forwarded-for: {}", seen[1].1[1]);
    assert!(seen[1].0[0].contains(" ua=test "), "a length limit: {}", seen[1].0[0]);
    assert!(seen[1].0[7].contains(" cors_response "), "the CORS filter's own details: {}", seen[1].0[7]);
}
