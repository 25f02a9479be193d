//! The shipped Grafana dashboard evaluated against the node's real Prometheus: every panel's PromQL (and every
//! template variable's query) with the variables set to the running pod, asked of Prometheus' HTTP API while it
//! scrapes a real injected sidecar under traffic and the operator. A query that errors fails; so does one that
//! returns no series, unless its panel is listed in [`MAY_BE_EMPTY`] with the reason its metric has none here.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use kproxy_e2e::{Env, wait_for, workspace_root};
use serde_json::Value;

use crate::prometheus::query;

/// Panels whose metric only has series after an event the node flow cannot cause cheaply, and why.
pub const MAY_BE_EMPTY: &[(&str, &str)] = &[
    (
        "Route refusals",
        "kproxy_route_refused_total{api} is created by the first request spanning two clusters (a group's offsets or a \
         transaction naming topics routed elsewhere); the app only produces and consumes one routed topic",
    ),
    (
        "Upstream re-authentications",
        "kproxy_upstream_reauthentications_total{cluster,result} is created by the first KIP-368 renewal of a SASL \
         session; the node's brokers are reached over plaintext (tests/upstream_reauth.rs covers it)",
    ),
];

/// The rate window `$__rate_interval` stands for: four scrape intervals of the test's 5 s monitors, and more.
const RATE_INTERVAL: &str = "1m";

/// One query of the dashboard: the panel it belongs to and its PromQL with the variables set.
struct Query {
    panel: String,
    expr: String,
}

/// Every panel's targets (rows' nested panels included) with `$namespace`, `$pod` and `$__rate_interval` set;
/// an unknown variable is an error.
fn queries(dashboard: &Value, ns: &str, pod: &str) -> Result<Vec<Query>> {
    let mut panels: Vec<&Value> = Vec::new();
    for p in dashboard["panels"].as_array().context("the dashboard has no panels")? {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    let mut out = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().with_context(|| format!("panel {title:?} has a target without expr"))?;
            out.push(Query { panel: title.clone(), expr: substitute(expr, ns, pod)? });
        }
    }
    // label_values(<selector>, <label>): the selector must select series carrying the label.
    for v in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let Some(def) = v["definition"].as_str() else { continue };
        let inner = def.strip_prefix("label_values(").and_then(|d| d.strip_suffix(')'));
        let (selector, label) =
            inner.and_then(|i| i.rsplit_once(',')).context("a variable that is not label_values")?;
        let expr = format!("count by ({}) ({})", label.trim(), substitute(selector, ns, pod)?);
        out.push(Query { panel: format!("variable {}", v["name"].as_str().unwrap_or_default()), expr });
    }
    Ok(out)
}

fn substitute(expr: &str, ns: &str, pod: &str) -> Result<String> {
    let expr =
        expr.replace("$__rate_interval", RATE_INTERVAL).replace("$namespace", ns).replace("$pod", &regex_quote(pod));
    if expr.contains('$') {
        bail!("a dashboard variable the test does not know: {expr}");
    }
    Ok(expr)
}

/// A pod name as a literal inside `=~"..."` (names hold only [a-z0-9-.], of which `.` is special).
fn regex_quote(s: &str) -> String {
    s.replace('.', "\\\\.")
}

/// Evaluates every query; waits up to `patience` for each empty one (a counter created by a recent event needs two
/// scrapes before `rate` sees it); fails listing every query that errored or stayed empty.
pub fn check(env: &Env, prometheus: &str, ns: &str, pod: &str, patience: Duration) -> Result<()> {
    let path = workspace_root().join("charts/kproxy/dashboards/kproxy.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let queries = queries(&dashboard, ns, pod)?;
    let mut failures = Vec::new();
    let mut empty_allowed = Vec::new();
    for q in &queries {
        let allowed = MAY_BE_EMPTY.iter().any(|(panel, _)| *panel == q.panel);
        let result = match allowed {
            true => query(env, prometheus, &q.expr),
            false => wait_for(&format!("panel {:?}: {}", q.panel, q.expr), patience, || {
                let series = query(env, prometheus, &q.expr)?;
                Ok((!series.is_empty()).then_some(series))
            }),
        };
        match result {
            Ok(series) if series.is_empty() => empty_allowed.push(q.panel.as_str()),
            Ok(series) => eprintln!("dashboard {:?}: {} series, e.g. {}", q.panel, series.len(), series[0]),
            Err(e) => failures.push(format!("{:?}: {}: {e:#}", q.panel, q.expr)),
        }
    }
    eprintln!(
        "dashboard: {} queries evaluated, {} failed, empty where allowed: {empty_allowed:?}",
        queries.len(),
        failures.len()
    );
    if !failures.is_empty() {
        bail!("dashboard queries that errored or returned nothing:\n{}", failures.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_panel_and_variable_is_found_and_every_variable_is_set() {
        let path = workspace_root().join("charts/kproxy/dashboards/kproxy.json");
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let queries = queries(&dashboard, "shop", "shop-1.a").unwrap();
        assert!(queries.iter().all(|q| !q.expr.contains('$')));
        assert!(queries.iter().any(|q| q.expr.contains("pod=~\"shop-1\\\\.a\"")));
        for (panel, _) in MAY_BE_EMPTY {
            assert!(queries.iter().any(|q| q.panel == *panel), "{panel} is no panel of the dashboard");
        }
    }
}
