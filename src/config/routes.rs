//! `routes`: mail from senders matching a rule goes to its own smarthosts.

use super::SenderRule;
use super::ctx::Ctx;
use super::smarthost::{Smarthost, smarthost_list};
use serde::Deserialize;

/// Mail from senders matching `rule` goes to its own smarthosts.
#[derive(Debug, Clone)]
pub struct Route {
    pub rule: SenderRule,
    pub smarthosts: Vec<Smarthost>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    r#match: String,
    smarthost: serde_yaml::Value,
}

/// `routes`, in order: the first match wins.
pub(super) fn routes(cx: &mut Ctx) -> Vec<Route> {
    let mut routes = Vec::new();
    let raw: Vec<RawRoute> = cx.section("routes").unwrap_or_default();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("routes[{i}]");
        let rule = SenderRule::parse(&r.r#match)
            .map_err(|e| cx.add(&format!("{key}.match"), e))
            .ok();
        let hosts = smarthost_list(cx, &r.smarthost, &format!("{key}.smarthost"));
        if let (Some(rule), Some(smarthosts)) = (rule, hosts) {
            routes.push(Route { rule, smarthosts });
        }
    }
    routes
}
