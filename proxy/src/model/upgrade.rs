//! `upgrade_configs`: which HTTP/1.1 upgrades (WebSocket and the like) the
//! connection manager lets through, and a route's overrides.
//!
//! As in Envoy, a route's entry for the upgrade type decides; without one,
//! the connection manager's; without either, the upgrade is refused (403).

use weft_envoy_api::pb::envoy::config::route::v3 as xds_route;
use weft_envoy_api::pb::envoy::extensions::filters::network::http_connection_manager::v3 as xds_hcm;

use super::{ConfigError, Result};

/// Upgrade types (lowercase) and whether each is enabled.
#[derive(Debug, Default, Clone)]
pub struct Upgrades(Vec<(String, bool)>);

impl Upgrades {
    /// The connection manager's `upgrade_configs`.
    pub fn compile_manager(configs: &[xds_hcm::http_connection_manager::UpgradeConfig], path: &str) -> Result<Self> {
        Self::compile(configs.iter().map(|c| (c.upgrade_type.as_str(), c.enabled.as_ref().map(|b| b.value))), path)
    }

    /// A route action's `upgrade_configs`.
    pub fn compile_route(configs: &[xds_route::route_action::UpgradeConfig], path: &str) -> Result<Self> {
        Self::compile(configs.iter().map(|c| (c.upgrade_type.as_str(), c.enabled.as_ref().map(|b| b.value))), path)
    }

    fn compile<'a>(configs: impl Iterator<Item = (&'a str, Option<bool>)>, path: &str) -> Result<Self> {
        let mut out: Vec<(String, bool)> = Vec::new();
        for (i, (kind, enabled)) in configs.enumerate() {
            let field = format!("{path}[{i}].upgrade_type");
            if kind.is_empty() {
                return Err(ConfigError::new(field, "upgrade_type is required"));
            }
            // CONNECT is a method, not an `upgrade` header: Envoy tunnels it
            // differently, and we do not.
            if kind.eq_ignore_ascii_case("connect") {
                return Err(ConfigError::new(field, "CONNECT is not supported by weft-proxy"));
            }
            let kind = kind.to_ascii_lowercase();
            if out.iter().any(|(k, _)| *k == kind) {
                return Err(ConfigError::new(field, format!("duplicate upgrade type {kind}")));
            }
            out.push((kind, enabled.unwrap_or(true)));
        }
        Ok(Upgrades(out))
    }

    fn get(&self, kind: &str) -> Option<bool> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(kind)).map(|(_, on)| *on)
    }
}

/// Whether an upgrade of type `kind` may go through: the route's setting,
/// else the connection manager's.
pub fn allowed(kind: &str, route: Option<&Upgrades>, manager: &Upgrades) -> bool {
    route.and_then(|r| r.get(kind)).or_else(|| manager.get(kind)).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrades(list: &[(&str, Option<bool>)]) -> Upgrades {
        Upgrades::compile(list.iter().copied(), "upgrade_configs").expect("valid")
    }

    #[test]
    fn the_route_decides_before_the_manager() {
        let manager = upgrades(&[("websocket", None), ("h2c", Some(false))]);
        assert!(allowed("WebSocket", None, &manager));
        assert!(!allowed("h2c", None, &manager));
        assert!(!allowed("spdy/3", None, &manager));
        let route = upgrades(&[("h2c", Some(true)), ("websocket", Some(false))]);
        assert!(allowed("h2c", Some(&route), &manager));
        assert!(!allowed("websocket", Some(&route), &manager));
        assert!(!allowed("websocket", None, &Upgrades::default()));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |list: &[(&str, Option<bool>)]| Upgrades::compile(list.iter().copied(), "x.upgrade_configs").expect_err("invalid").to_string();
        assert!(err(&[("CONNECT", None)]).contains("x.upgrade_configs[0].upgrade_type"));
        assert!(err(&[("websocket", None), ("WebSocket", None)]).contains("x.upgrade_configs[1].upgrade_type: duplicate"));
        assert!(err(&[("", None)]).contains("required"));
    }
}
