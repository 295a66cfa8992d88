//! The Bookinfo demo, driven as a user would: the page through the
//! gateway, the 80/10/10 split, the 2 s delay rule, retries recovering
//! from a broken workload, and a file edit changing traffic within a
//! second. Everything is weft: operator, sidecars, gateway.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use weft_e2e::demo::{get, Demo, GATEWAY_PORT};
use weft_e2e::proxy::repo_root;

/// Which reviews workload answered, from the products API.
fn reviews_served_by(cookie: Option<&str>) -> Result<String, String> {
    let body = request("/api/v1/products/0/reviews", cookie)?;
    let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    json["podname"].as_str().map(str::to_string).ok_or_else(|| format!("no podname: {body}"))
}

fn request(path: &str, cookie: Option<&str>) -> Result<String, String> {
    match cookie {
        None => get(GATEWAY_PORT, path).map_err(|e| e.to_string()),
        Some(c) => {
            use std::io::{Read, Write};
            let mut tcp = std::net::TcpStream::connect(("127.0.0.1", GATEWAY_PORT)).map_err(|e| e.to_string())?;
            write!(tcp, "GET {path} HTTP/1.1\r\nhost: bookinfo\r\ncookie: {c}\r\nconnection: close\r\n\r\n").map_err(|e| e.to_string())?;
            let mut raw = String::new();
            tcp.read_to_string(&mut raw).map_err(|e| e.to_string())?;
            match raw.split_once("\r\n\r\n") {
                Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
                _ => Err(raw.lines().next().unwrap_or_default().to_string()),
            }
        }
    }
}

/// A request to reviews as the productpage app sends it: through its
/// sidecar, as an HTTP proxy. The response's status line and headers.
fn through_productpage_sidecar(path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect("127.0.1.1:15001") else { return "refused".into() };
    let _ = write!(tcp, "GET http://reviews:9080{path} HTTP/1.1\r\nhost: reviews:9080\r\nconnection: close\r\n\r\n");
    let mut raw = String::new();
    let _ = tcp.read_to_string(&mut raw);
    raw
}

fn apply(config: &Path, name: &str, text: &str) {
    let aside = config.join(format!(".{name}.tmp"));
    std::fs::write(&aside, text).expect("write");
    std::fs::rename(&aside, config.join(name)).expect("mv");
}

fn rule(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("config/samples/bookinfo-rules").join(name)).expect("sample rule")
}

#[test]
fn bookinfo_through_the_gateway() {
    let work = std::env::temp_dir().join(format!("weft-e2e-bookinfo-{}", std::process::id()));
    let demo = Demo::start(&work).unwrap_or_else(|e| panic!("{e}"));
    let config = demo.config_dir.clone();

    // The page renders with the book's details and its reviews.
    let page = get(GATEWAY_PORT, "/productpage").expect("product page");
    for part in ["The Comedy of Errors", "ISBN-10", "Reviewer1", "Reviews served by: reviews-v"] {
        assert!(page.contains(part), "the page lacks {part:?}: {page}");
    }

    // 80/10/10 over 1 000 requests, within four standard deviations.
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..1000 {
        *counts.entry(reviews_served_by(None).expect("reviews")).or_default() += 1;
    }
    let share = |w: &str| counts.get(w).copied().unwrap_or(0);
    assert!((740..=860).contains(&share("reviews-v1")), "{counts:?}");
    assert!((60..=140).contains(&share("reviews-v2")), "{counts:?}");
    assert!((60..=140).contains(&share("reviews-v3")), "{counts:?}");

    // Editing a file changes traffic within a second: all to v2.
    let all_v2 = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: reviews }\nspec:\n  hosts: [reviews]\n  http:\n  - route: [ { destination: { host: reviews, subset: v2 } } ]\n";
    apply(&config, "reviews-80-10-10.yaml", all_v2);
    let start = Instant::now();
    while (0..10).any(|_| reviews_served_by(None).as_deref() != Ok("reviews-v2")) {
        assert!(start.elapsed() < Duration::from_secs(1), "traffic not moved to v2 within a second");
    }

    // The delay rule holds jason's ratings calls 2 s; others are not held.
    apply(&config, "ratings-test-delay.yaml", &rule("ratings-test-delay.yaml"));
    std::thread::sleep(Duration::from_millis(500));
    let timed = |cookie: Option<&str>| {
        let t = Instant::now();
        let page = request("/productpage", cookie).expect("page");
        (t.elapsed(), page)
    };
    let (quick, _) = timed(None);
    let (slow, page) = timed(Some("user=jason"));
    assert!(quick < Duration::from_millis(500), "without the rule's user: {quick:?}");
    // ~2 s more; productpage gives up on reviews at 3 s, so a page that
    // still shows reviews arrived before that (with slack for a loaded CI).
    assert!(slow >= Duration::from_secs(2) && slow < Duration::from_millis(3500), "jason's page took {slow:?}");
    assert!(page.contains("Reviews served by"), "jason's page still has its reviews");
    assert!(page.contains("jason"), "jason is signed in on the page");

    // A broken v2 workload (nothing listens there): the retries rule
    // (gateway-error, connect-failure, 3 attempts) hides it ...
    std::fs::remove_file(config.join("ratings-test-delay.yaml")).expect("rm");
    apply(&config, "reviews-80-10-10.yaml", &rule("reviews-retries.yaml"));
    let broken = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: { name: reviews-v2-broken }\nspec:\n  address: 127.0.1.9\n  labels: { app: reviews, version: v2, security.istio.io/tlsMode: istio }\n";
    apply(&config, "broken.yaml", broken);
    std::thread::sleep(Duration::from_millis(500));
    // Checked where the rule acts, at productpage's sidecar (the app itself
    // also retries once, which would hide the difference).
    let failures = || (0..100).filter(|_| !through_productpage_sidecar("/reviews/0").starts_with("HTTP/1.1 200")).count();
    assert_eq!(failures(), 0, "with retries every request recovers");
    // ... which a rule without retries does not.
    let no_retries = rule("reviews-retries.yaml").replace("attempts: 3", "attempts: 0");
    assert_ne!(no_retries, rule("reviews-retries.yaml"));
    apply(&config, "reviews-80-10-10.yaml", &no_retries);
    std::thread::sleep(Duration::from_millis(500));
    assert!(failures() > 0, "without retries the broken workload shows");

    drop(demo);
    let _ = std::fs::remove_dir_all(&work);
}
