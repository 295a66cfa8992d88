//! Bookinfo translated for the ingress gateway and a sidecar, compared
//! with checked-in golden files (regenerate with WEFT_UPDATE_GOLDEN=1).

use std::collections::BTreeMap;

use weft_operator::index::Index;
use weft_operator::translate::snapshot;
use weft_operator::validate::validate;
use weft_operator::xds::{Proxy, Role};

use crate::{bookinfo, repo};

fn proxy(role: Role, ip: &str, namespace: &str, labels: &[(&str, &str)]) -> Proxy {
    Proxy {
        id: format!("{}~{ip}~x.{namespace}~{namespace}.svc.cluster.local", role.id_prefix()),
        role,
        ip: ip.into(),
        workload: "x".into(),
        namespace: namespace.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }
}

fn golden(name: &str, proxy: &Proxy) {
    let index = std::sync::Arc::new(Index::build(&validate(&bookinfo()).accepted));
    let actual = serde_json::to_string_pretty(&snapshot(&index, proxy).to_json()).expect("json") + "\n";
    let path = repo(&format!("operator/tests/golden/{name}.json"));
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(expected == actual, "{name}: translation differs from {} (WEFT_UPDATE_GOLDEN=1 regenerates it; review the diff)", path.display());
}

#[test]
fn bookinfo_ingress_gateway() {
    golden("bookinfo-gateway", &proxy(Role::Gateway, "127.0.0.1", "istio-system", &[("istio", "ingressgateway")]));
}

#[test]
fn bookinfo_productpage_sidecar() {
    golden("bookinfo-productpage-sidecar", &proxy(Role::Sidecar, "127.0.1.1", "default", &[("app", "productpage"), ("version", "v1")]));
}
