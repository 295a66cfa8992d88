//! Envoy's substitution format strings for access logs
//! (`log_format.text_format_source` and `json_format`) and header values
//! (`request_headers_to_add` ...): literal text and `%COMMAND%` operators,
//! parsed once when the config is compiled.
//!
//! ```text
//!  "%REQ(:METHOD)% %RESPONSE_CODE% -> %UPSTREAM_HOST%\n"
//!   └ [Op(Req), Text(" "), Op(ResponseCode), Text(" -> "), Op(UpstreamHost), Text("\n")]
//! ```
//! A value that is missing prints `-` in text; in JSON an entry that is one
//! operator alone gets its type (numbers for codes, sizes and durations,
//! `null` when missing), as Envoy's typed JSON does. An operator we do not
//! implement is a config error naming it.

use super::Entry;

/// One piece of a format string.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// The operator, its length limit and how it was written.
    Op(Op, Option<usize>, String),
}

/// The operators weft-proxy implements.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    /// `REQ(name?alternative)`: the first of the two request headers present.
    Req(String, Option<String>),
    Resp(String, Option<String>),
    StartTime,
    Protocol,
    ResponseCode,
    ResponseFlags,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    DownstreamRemoteAddress { port: bool },
    DownstreamLocalAddress { port: bool },
    Hostname,
    /// The downstream TLS connection's SNI.
    RequestedServerName,
    ConnectionTerminationDetails,
    ResponseCodeDetails,
    RouteName,
    UpstreamTransportFailureReason,
    UpstreamLocalAddress { port: bool },
}

/// A parsed format string.
#[derive(Debug, Clone, PartialEq)]
pub struct Format {
    parts: Vec<Part>,
}

/// What header values may use: the downstream connection.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    pub remote: Option<std::net::SocketAddr>,
    pub local: Option<std::net::SocketAddr>,
    pub protocol: &'static str,
    /// The SNI of a downstream TLS connection.
    pub requested_server_name: Option<std::sync::Arc<str>>,
}

/// The response the log line describes: its status line and headers as sent.
pub type Response<'a> = Option<&'a pingora_http::ResponseHeader>;

impl Format {
    /// Parses `text`; the error names the operator or the byte at fault.
    pub fn parse(text: &str) -> Result<Format, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find('%') {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 1..];
            let Some(end) = after.find('%') else {
                return Err(format!("unterminated operator at byte {}: {:?}", text.len() - rest.len() + start, &rest[start..]));
            };
            let command = &after[..end];
            if command.is_empty() {
                // `%%` is a literal percent sign.
                parts.push(Part::Text("%".into()));
            } else {
                let (op, limit) = operator(command)?;
                parts.push(Part::Op(op, limit, format!("%{command}%")));
            }
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Format { parts })
    }

    /// A header value's format: only operators known before the response
    /// (the connection's addresses, the protocol, the host name) are
    /// allowed there.
    pub fn parse_header_value(text: &str) -> Result<Format, String> {
        let format = Format::parse(text)?;
        for part in &format.parts {
            if let Part::Op(op, _, source) = part {
                if connection_value(op, &Conn::default()).is_none() {
                    return Err(format!("{source} is not supported in header values by weft-proxy (connection addresses, PROTOCOL and HOSTNAME are)"));
                }
            }
        }
        Ok(format)
    }

    /// A header value for a request on `conn`: missing values are empty,
    /// as Envoy's header formatter leaves them.
    pub fn header_value(&self, conn: &Conn) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Op(op, limit, _) => {
                    let v = connection_value(op, conn).flatten();
                    out.push_str(&truncate(v.as_deref().unwrap_or_default(), *limit));
                }
            }
        }
        out
    }

    /// Whether any operator reads request headers beyond the default
    /// format's (the entry then keeps a copy of them).
    pub fn reads_request_headers(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Op(Op::Req(..), ..)))
    }

    /// The line, missing values as `-`.
    pub fn text(&self, entry: &Entry, response: Response<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Op(op, limit, _) => out.push_str(&truncate(value(op, entry, response).as_deref().unwrap_or("-"), *limit)),
            }
        }
        out
    }

    /// The value of a JSON entry: one operator alone keeps its type.
    pub fn json(&self, entry: &Entry, response: Response<'_>) -> serde_json::Value {
        use serde_json::Value;
        match self.parts.as_slice() {
            [Part::Op(op, limit, _)] => match value(op, entry, response) {
                None => Value::Null,
                Some(v) if numeric(op) => v.parse::<u64>().map_or(Value::String(v), |n| Value::Number(n.into())),
                Some(v) => Value::String(truncate(&v, *limit)),
            },
            _ => Value::String(self.text(entry, response)),
        }
    }
}

fn numeric(op: &Op) -> bool {
    matches!(op, Op::ResponseCode | Op::BytesReceived | Op::BytesSent | Op::Duration)
}

fn truncate(v: &str, limit: Option<usize>) -> String {
    match limit {
        Some(n) => v.chars().take(n).collect(),
        None => v.to_string(),
    }
}

/// `COMMAND`, `COMMAND(args)` or `COMMAND(args):LIMIT`.
fn operator(command: &str) -> Result<(Op, Option<usize>), String> {
    let (head, limit) = match command.rsplit_once("):") {
        Some((head, n)) => (format!("{head})"), Some(n.parse::<usize>().map_err(|_| format!("%{command}%: the length after ':' must be a number"))?)),
        None => (command.to_string(), None),
    };
    let (name, args) = match head.split_once('(') {
        Some((name, rest)) => {
            let args = rest.strip_suffix(')').ok_or_else(|| format!("%{command}%: missing ')'"))?;
            (name, Some(args))
        }
        None => (head.as_str(), None),
    };
    let headers = |args: Option<&str>| -> Result<(String, Option<String>), String> {
        let args = args.filter(|a| !a.is_empty()).ok_or_else(|| format!("%{command}%: a header name is required"))?;
        Ok(match args.split_once('?') {
            Some((a, b)) => (a.to_ascii_lowercase(), Some(b.to_ascii_lowercase())),
            None => (args.to_ascii_lowercase(), None),
        })
    };
    let plain = |op: Op| match args {
        None => Ok(op),
        Some(_) => Err(format!("%{command}%: arguments are not supported by weft-proxy")),
    };
    let op = match name {
        "REQ" => {
            let (a, b) = headers(args)?;
            Op::Req(a, b)
        }
        "RESP" => {
            let (a, b) = headers(args)?;
            Op::Resp(a, b)
        }
        "START_TIME" => plain(Op::StartTime)?,
        "PROTOCOL" => plain(Op::Protocol)?,
        "RESPONSE_CODE" => plain(Op::ResponseCode)?,
        "RESPONSE_FLAGS" => plain(Op::ResponseFlags)?,
        "BYTES_RECEIVED" => plain(Op::BytesReceived)?,
        "BYTES_SENT" => plain(Op::BytesSent)?,
        "DURATION" => plain(Op::Duration)?,
        "UPSTREAM_HOST" => plain(Op::UpstreamHost)?,
        "UPSTREAM_CLUSTER" => plain(Op::UpstreamCluster)?,
        "DOWNSTREAM_REMOTE_ADDRESS" => plain(Op::DownstreamRemoteAddress { port: true })?,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => plain(Op::DownstreamRemoteAddress { port: false })?,
        "DOWNSTREAM_LOCAL_ADDRESS" => plain(Op::DownstreamLocalAddress { port: true })?,
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => plain(Op::DownstreamLocalAddress { port: false })?,
        "HOSTNAME" => plain(Op::Hostname)?,
        "REQUESTED_SERVER_NAME" => plain(Op::RequestedServerName)?,
        "CONNECTION_TERMINATION_DETAILS" => plain(Op::ConnectionTerminationDetails)?,
        "RESPONSE_CODE_DETAILS" => plain(Op::ResponseCodeDetails)?,
        "ROUTE_NAME" => plain(Op::RouteName)?,
        // RAW: without an alternate stat name, which we do not have.
        "UPSTREAM_CLUSTER_RAW" => plain(Op::UpstreamCluster)?,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => plain(Op::UpstreamTransportFailureReason)?,
        "UPSTREAM_LOCAL_ADDRESS" => plain(Op::UpstreamLocalAddress { port: true })?,
        "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => plain(Op::UpstreamLocalAddress { port: false })?,
        _ => return Err(format!("%{command}%: this operator is not supported by weft-proxy")),
    };
    Ok((op, limit))
}

/// An address with or without its port.
fn address(a: Option<std::net::SocketAddr>, port: bool) -> Option<String> {
    a.map(|a| if port { a.to_string() } else { a.ip().to_string() })
}

/// The value of an operator about the downstream connection (what header
/// values may use); `None` for any other operator.
fn connection_value(op: &Op, conn: &Conn) -> Option<Option<String>> {
    Some(match op {
        Op::DownstreamRemoteAddress { port } => address(conn.remote, *port),
        Op::DownstreamLocalAddress { port } => address(conn.local, *port),
        Op::Protocol => Some(conn.protocol.to_string()).filter(|p| !p.is_empty()),
        Op::Hostname => hostname(),
        Op::RequestedServerName => conn.requested_server_name.as_deref().map(str::to_string),
        _ => return None,
    })
}

fn value(op: &Op, e: &Entry, response: Response<'_>) -> Option<String> {
    if let Some(v) = connection_value(op, &e.conn) {
        return v;
    }
    match op {
        Op::Req(name, alt) => e.request_header(name).or_else(|| alt.as_deref().and_then(|a| e.request_header(a))),
        Op::Resp(name, alt) => {
            let headers = &response?.headers;
            let get = |n: &str| headers.get(n).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            get(name).or_else(|| alt.as_deref().and_then(get))
        }
        Op::StartTime => e.start.map(super::rfc3339_millis),
        Op::ResponseCode => Some(e.status.to_string()),
        // "-" even in typed JSON, as Envoy.
        Op::ResponseFlags => Some(if e.flags.is_empty() { "-".into() } else { e.flags.join(",") }),
        Op::BytesReceived => Some(e.bytes_received.to_string()),
        Op::BytesSent => Some(e.bytes_sent.to_string()),
        Op::Duration => Some(e.duration_ms.to_string()),
        Op::UpstreamHost => e.upstream_host.map(|h| h.to_string()),
        Op::UpstreamCluster => e.upstream_cluster.as_ref().map(|c| c.name.clone()),
        Op::ResponseCodeDetails => Some(details(e)),
        Op::RouteName => e.route_name.clone(),
        // Spaces as `_`, as Envoy prints it.
        Op::UpstreamTransportFailureReason => e.transport_failure.as_ref().map(|r| r.replace(' ', "_")),
        Op::UpstreamLocalAddress { port } => address(e.upstream_local, *port),
        // Envoy fills it when a network filter (RBAC) closes the
        // connection; weft-proxy has none, so it is "-" as in Envoy then.
        Op::ConnectionTerminationDetails => None,
        Op::Protocol | Op::DownstreamRemoteAddress { .. } | Op::DownstreamLocalAddress { .. } | Op::Hostname | Op::RequestedServerName => None,
    }
}

/// Envoy's response code details, from what the request went through
/// (its flags; a connect failure's reason with `_` for spaces, as Envoy).
fn details(e: &Entry) -> String {
    if let Some(d) = &e.reply_details {
        return d.to_string();
    }
    if e.flags.contains(&"UF") {
        return match &e.transport_failure {
            Some(reason) => format!("upstream_reset_before_response_started{{remote_connection_failure|{}}}", reason.replace(' ', "_")),
            None => "upstream_reset_before_response_started{remote_connection_failure}".into(),
        };
    }
    let flag = |f: &str| e.flags.contains(&f);
    let s = if flag("NR") {
        "route_not_found"
    } else if flag("NC") {
        "cluster_not_found"
    } else if flag("FI") {
        "fault_filter_abort"
    } else if flag("RL") {
        "local_rate_limited"
    } else if flag("UH") {
        "no_healthy_upstream"
    } else if flag("UT") {
        "response_timeout"
    } else if flag("UO") {
        "upstream_reset_before_response_started{overflow}"
    } else if flag("UPE") {
        "upstream_reset_before_response_started{protocol_error}"
    } else if flag("UC") {
        "upstream_reset_before_response_started{connection_termination}"
    } else if e.upstream_host.is_some() {
        "via_upstream"
    } else {
        "direct_response"
    };
    s.to_string()
}

fn hostname() -> Option<String> {
    static NAME: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    NAME.get_or_init(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string())).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let mut req = pingora_http::RequestHeader::build("GET", b"/a?b", None).expect("request");
        let _ = req.insert_header("user-agent", "curl/8");
        let _ = req.insert_header("host", "example.com");
        let start = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_667_343_123);
        let conn = Conn { protocol: "HTTP/1.1", ..Default::default() };
        let mut e = Entry { start: Some(start), status: 503, conn, duration_ms: 7, ..Default::default() };
        e.keep_request(&req);
        e.flag("UF");
        e.flag("URX");
        e
    }

    #[test]
    fn text_formats_like_envoy() {
        let f = Format::parse("[%START_TIME%] %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(USER-AGENT):4% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% 100%%\n").expect("parses");
        assert_eq!(f.text(&entry(), None), "[2026-11-26T04:29:03.123Z] GET /a?b curl 503 UF,URX - 100%\n");
    }

    #[test]
    fn json_entries_keep_their_types() {
        let e = entry();
        let code = Format::parse("%RESPONSE_CODE%").expect("parses");
        assert_eq!(code.json(&e, None), serde_json::json!(503));
        assert_eq!(Format::parse("%UPSTREAM_HOST%").expect("parses").json(&e, None), serde_json::Value::Null);
        assert_eq!(Format::parse("code %RESPONSE_CODE%").expect("parses").json(&e, None), serde_json::json!("code 503"));
        assert_eq!(Format::parse("%REQ(:AUTHORITY)%").expect("parses").json(&e, None), serde_json::json!("example.com"));
    }

    #[test]
    fn bad_formats_name_what_is_wrong() {
        let error = |f: &str| Format::parse(f).err().unwrap_or_default();
        assert!(error("%NOPE%").contains("%NOPE%: this operator is not supported"));
        assert!(!error("%START_TIME(%s)%").is_empty());
        assert!(error("%REQ()%").contains("header name is required"));
        assert!(error("50% off").contains("unterminated operator at byte 2"));
        assert!(error("%REQ(A):x%").contains("must be a number"));
    }
}
