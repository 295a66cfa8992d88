//! Access logs (`http_connection_manager.access_log`): stdout, stderr or
//! a file, in a `log_format` of its own (text or JSON, see [`format`]) or
//! Envoy's default format:
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
//! %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
//! "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
//! ```
//! Workers never write: lines go over a bounded channel to one writer
//! thread per destination; when it is full, lines are dropped and counted
//! rather than stalling requests.

use std::collections::HashMap;
use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use weft_envoy_api::pb::envoy::config::accesslog::v3 as xds_accesslog;
use weft_envoy_api::pb::envoy::extensions::access_loggers::file::v3 as xds_file;
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;
use weft_envoy_api::pb::envoy::extensions::access_loggers::stream::v3 as xds_stream;

use crate::model::listener::unpack;
use crate::model::{ConfigError, Result};

pub mod format;
use format::Format;

const FILE: &str = "envoy.extensions.access_loggers.file.v3.FileAccessLog";
const STDOUT: &str = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR: &str = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";
/// Lines buffered per destination before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// Where one access log writes, and how its lines look.
#[derive(Debug, Clone)]
pub struct AccessLog {
    sender: SyncSender<String>,
    format: LineFormat,
    /// The format reads request headers the default format does not keep
    /// (found once, at compile time: asked on every request).
    reads_request_headers: bool,
}

#[derive(Debug, Clone)]
enum LineFormat {
    /// Envoy's default format (kept apart: the common case, formatted once
    /// for every log that uses it).
    Default,
    Text(Format),
    /// Keys sorted; nested objects as configured.
    Json(Json),
}

#[derive(Debug, Clone)]
enum Json {
    Value(Format),
    Object(Vec<(String, Json)>),
}

impl AccessLog {
    pub fn compile(log: &xds_accesslog::AccessLog, path: &str) -> Result<Self> {
        use xds_accesslog::access_log::ConfigType;
        let Some(ConfigType::TypedConfig(any)) = &log.config_type else {
            return Err(ConfigError::new(format!("{path}.typed_config"), "typed_config is required"));
        };
        let tpath = format!("{path}.typed_config");
        // Other formats than log_format are refused by the support table.
        let (destination, log_format) = match weft_envoy_api::type_name(&any.type_url) {
            FILE => {
                let f: xds_file::FileAccessLog = unpack(any, FILE, &tpath)?;
                if f.path.is_empty() {
                    return Err(ConfigError::new(format!("{tpath}.path"), "path is required"));
                }
                let format = match f.access_log_format {
                    Some(xds_file::file_access_log::AccessLogFormat::LogFormat(s)) => Some(s),
                    _ => None,
                };
                (f.path, format)
            }
            STDOUT => {
                let s: xds_stream::StdoutAccessLog = unpack(any, STDOUT, &tpath)?;
                let format = s.access_log_format.map(|xds_stream::stdout_access_log::AccessLogFormat::LogFormat(f)| f);
                ("/dev/stdout".to_string(), format)
            }
            STDERR => {
                let s: xds_stream::StderrAccessLog = unpack(any, STDERR, &tpath)?;
                let format = s.access_log_format.map(|xds_stream::stderr_access_log::AccessLogFormat::LogFormat(f)| f);
                ("/dev/stderr".to_string(), format)
            }
            other => return Err(ConfigError::new(tpath, format!("access logger {other} is not supported by weft-proxy"))),
        };
        let format = match log_format {
            Some(f) => line_format(&f, &format!("{tpath}.log_format"))?,
            None => LineFormat::Default,
        };
        fn json(j: &Json) -> bool {
            match j {
                Json::Value(f) => f.reads_request_headers(),
                Json::Object(entries) => entries.iter().any(|(_, j)| json(j)),
            }
        }
        let reads_request_headers = match &format {
            LineFormat::Default => false,
            LineFormat::Text(f) => f.reads_request_headers(),
            LineFormat::Json(j) => json(j),
        };
        Ok(AccessLog { sender: writer(&destination, path)?, format, reads_request_headers })
    }

    /// Whether lines need request headers the default format does not keep.
    pub fn reads_request_headers(&self) -> bool {
        self.reads_request_headers
    }

    /// The line for a request; `default` is Envoy's default line, made
    /// once for all the logs that use it.
    pub fn line(&self, entry: &Entry, response: format::Response<'_>, default: &mut Option<String>) -> String {
        fn json(j: &Json, entry: &Entry, response: format::Response<'_>) -> serde_json::Value {
            match j {
                Json::Value(f) => f.json(entry, response),
                Json::Object(entries) => serde_json::Value::Object(entries.iter().map(|(k, j)| (k.clone(), json(j, entry, response))).collect()),
            }
        }
        match &self.format {
            LineFormat::Default => default.get_or_insert_with(|| entry.format()).clone(),
            LineFormat::Text(f) => f.text(entry, response),
            LineFormat::Json(j) => format!("{}\n", json(j, entry, response)),
        }
    }

    /// Queues a line; never blocks.
    pub fn write(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.sender.try_send(line) {
            dropped().fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// `log_format`: a text format (inline, or the deprecated `text_format`)
/// or a JSON object of formats.
fn line_format(f: &xds_core::SubstitutionFormatString, path: &str) -> Result<LineFormat> {
    use xds_core::substitution_format_string::Format as F;
    let text = |t: &str, field: &str| Format::parse(t).map(LineFormat::Text).map_err(|e| ConfigError::new(format!("{path}.{field}"), e));
    match &f.format {
        #[allow(deprecated)]
        Some(F::TextFormat(t)) => text(t, "text_format"),
        Some(F::TextFormatSource(source)) => match &source.specifier {
            Some(xds_core::data_source::Specifier::InlineString(t)) => text(t, "text_format_source.inline_string"),
            _ => Err(ConfigError::new(format!("{path}.text_format_source"), "only inline_string is supported by weft-proxy")),
        },
        Some(F::JsonFormat(s)) => json_object(s, &format!("{path}.json_format")).map(LineFormat::Json),
        None => Err(ConfigError::new(path, "a format (text_format_source or json_format) is required")),
    }
}

fn json_object(s: &weft_envoy_api::pb::google::protobuf::Struct, path: &str) -> Result<Json> {
    use weft_envoy_api::pb::google::protobuf::value::Kind;
    let mut entries = Vec::new();
    for (key, value) in &s.fields {
        let at = format!("{path}.{key}");
        let entry = match &value.kind {
            Some(Kind::StringValue(t)) => Json::Value(Format::parse(t).map_err(|e| ConfigError::new(&at, e))?),
            Some(Kind::StructValue(inner)) => json_object(inner, &at)?,
            _ => return Err(ConfigError::new(at, "only strings and nested objects are supported by weft-proxy")),
        };
        entries.push((key.clone(), entry));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Json::Object(entries))
}

/// Lines dropped because a writer fell behind.
pub fn dropped() -> &'static std::sync::atomic::AtomicU64 {
    static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    &DROPPED
}

/// One writer thread per destination, shared by every log that names it.
fn writer(destination: &str, path: &str) -> Result<SyncSender<String>> {
    static WRITERS: OnceLock<Mutex<HashMap<String, SyncSender<String>>>> = OnceLock::new();
    let mut writers = WRITERS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(sender) = writers.get(destination) {
        return Ok(sender.clone());
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(destination)
        .map_err(|e| ConfigError::new(format!("{path}.typed_config.path"), format!("cannot open {destination}: {e}")))?;
    let (sender, receiver) = sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("weft-access-log".into())
        .spawn(move || write_lines(file, receiver))
        .map_err(|e| ConfigError::new(path, format!("cannot start the access log writer: {e}")))?;
    writers.insert(destination.to_string(), sender.clone());
    Ok(sender)
}

fn write_lines(file: std::fs::File, lines: Receiver<String>) {
    let mut out = std::io::BufWriter::new(file);
    while let Ok(line) = lines.recv() {
        let _ = out.write_all(line.as_bytes());
        // Write what is queued, then flush: one write per burst.
        while let Ok(more) = lines.try_recv() {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
    }
}

/// What the default format needs to know about a request.
#[derive(Debug, Default)]
pub struct Entry {
    pub start: Option<SystemTime>,
    pub method: String,
    pub path: String,
    /// The downstream connection: addresses and protocol.
    pub conn: format::Conn,
    pub status: u16,
    pub flags: Vec<&'static str>,
    pub bytes_received: usize,
    pub bytes_sent: usize,
    pub duration_ms: u128,
    pub upstream_service_time: Option<String>,
    pub forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub authority: Option<String>,
    pub upstream_host: Option<std::net::SocketAddr>,
    /// Shared, not copied: set on every routed request.
    pub upstream_cluster: Option<std::sync::Arc<crate::model::Cluster>>,
    /// Some access log wants this request: what costs a copy or a system
    /// call is only recorded then.
    pub logging: bool,
    /// Why the last upstream connection failed, as Envoy words it.
    pub transport_failure: Option<String>,
    pub route_name: Option<String>,
    /// The local address of the upstream connection used.
    pub upstream_local: Option<std::net::SocketAddr>,
    /// The path after a route rewrote it (`%REQ(:PATH)%`; the original
    /// is then `%REQ(X-ENVOY-ORIGINAL-PATH)%`, as in Envoy).
    pub routed_path: Option<String>,
    /// The details of a filter's reply (see `LocalReply::details`).
    pub reply_details: Option<Box<str>>,
    /// The request headers, kept when a log format reads any.
    request: Option<http::HeaderMap>,
}

impl Entry {
    /// Takes what the log shows of the request (after the connection
    /// manager's own headers, before route rewrites).
    pub fn describe_request(&mut self, req: &pingora_http::RequestHeader) {
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        self.method = req.method.to_string();
        self.path = String::from_utf8_lossy(req.raw_path()).into_owned();
        self.forwarded_for = header("x-forwarded-for");
        self.user_agent = header("user-agent");
        self.request_id = header("x-request-id");
        self.authority = req.uri.authority().map(|a| a.to_string()).or_else(|| header("host"));
    }

    /// Like [`describe_request`](Self::describe_request), keeping all the
    /// headers for `%REQ(...)%`.
    pub fn keep_request(&mut self, req: &pingora_http::RequestHeader) {
        self.describe_request(req);
        self.request = Some(req.headers.clone());
    }

    /// A request header as `%REQ(name)%` reads it (pseudo-headers too).
    pub fn request_header(&self, name: &str) -> Option<String> {
        let nonempty = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
        match name {
            ":method" => nonempty(&self.method),
            ":path" => self.routed_path.clone().or_else(|| nonempty(&self.path)),
            "x-envoy-original-path" if self.routed_path.is_some() => nonempty(&self.path),
            ":authority" | "host" => self.authority.clone(),
            _ => self.request.as_ref()?.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        }
    }

    pub fn flag(&mut self, flag: &'static str) {
        if !self.flags.contains(&flag) {
            self.flags.push(flag);
        }
    }

    /// The line in Envoy's default format.
    pub fn format(&self) -> String {
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        // In the order they were set, as Envoy 1.40 prints them.
        let flags = if self.flags.is_empty() { "-".to_string() } else { self.flags.join(",") };
        let start = self.start.map(rfc3339_millis).unwrap_or_else(|| "-".into());
        let upstream = self.upstream_host.map(|h| h.to_string()).unwrap_or_else(|| "-".into());
        let status = if self.status == 0 { "0".to_string() } else { self.status.to_string() };
        format!(
            "[{start}] \"{} {} {}\" {status} {flags} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{upstream}\"\n",
            self.method,
            self.path,
            self.conn.protocol,
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
            or_dash(&self.upstream_service_time),
            or_dash(&self.forwarded_for),
            or_dash(&self.user_agent),
            or_dash(&self.request_id),
            or_dash(&self.authority),
        )
    }
}

/// `2026-11-26T06:09:03.123Z`, as Envoy prints START_TIME.
fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_rfc3339_with_millis() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_667_343_123);
        assert_eq!(rfc3339_millis(t), "2026-11-26T04:29:03.123Z");
        assert_eq!(rfc3339_millis(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn default_format_prints_dashes_for_missing_values() {
        let conn = format::Conn { protocol: "HTTP/1.1", ..Default::default() };
        let e = Entry { method: "GET".into(), path: "/".into(), conn, status: 404, ..Default::default() };
        let line = e.format();
        assert_eq!(line, "[-] \"GET / HTTP/1.1\" 404 - 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\"\n");
    }
}
