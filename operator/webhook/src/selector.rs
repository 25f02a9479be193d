//! Kubernetes label selector matching (`matchLabels` and `matchExpressions`), as the API server defines it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Whether `labels` satisfy `selector`. An empty selector matches every pod, as in NetworkPolicy.
///
/// A malformed requirement (unknown operator, values where none are allowed or missing where needed) is an error
/// rather than a silent mismatch, so the user learns why a policy never applies.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    let by_labels = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let mut by_expressions = true;
    for requirement in selector.match_expressions.iter().flatten() {
        // Every requirement is checked even after a mismatch so a malformed one is always reported.
        by_expressions &= requirement_matches(requirement, labels)?;
    }
    Ok(by_labels && by_expressions)
}

fn requirement_matches(req: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    let values = req.values.as_deref().unwrap_or_default();
    let value = labels.get(&req.key);
    match req.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => {
            Err(format!("matchExpressions key {:?}: operator {} needs at least one value", req.key, req.operator))
        }
        "Exists" | "DoesNotExist" if !values.is_empty() => {
            Err(format!("matchExpressions key {:?}: operator {} takes no values", req.key, req.operator))
        }
        "In" => Ok(value.is_some_and(|v| values.contains(v))),
        "NotIn" => Ok(value.is_none_or(|v| !values.contains(v))),
        "Exists" => Ok(value.is_some()),
        "DoesNotExist" => Ok(value.is_none()),
        other => Err(format!(
            "matchExpressions key {:?}: unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)",
            req.key
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn sel(match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(matches(&LabelSelector::default(), &labels(&[])).unwrap());
        assert!(matches(&LabelSelector::default(), &labels(&[("app", "x")])).unwrap());
    }

    #[test]
    fn match_labels_need_every_pair() {
        let s = sel(&[("app", "pay"), ("tier", "web")], vec![]);
        assert!(matches(&s, &labels(&[("app", "pay"), ("tier", "web"), ("x", "y")])).unwrap());
        assert!(!matches(&s, &labels(&[("app", "pay")])).unwrap());
        assert!(!matches(&s, &labels(&[("app", "pay"), ("tier", "db")])).unwrap());
    }

    #[test]
    fn expressions_follow_kubernetes_semantics() {
        let pod = labels(&[("app", "pay"), ("env", "prod")]);
        let yes = |e| matches(&sel(&[], vec![e]), &pod).unwrap();
        assert!(yes(expr("env", "In", Some(&["prod", "stage"]))));
        assert!(!yes(expr("env", "In", Some(&["dev"]))));
        assert!(!yes(expr("missing", "In", Some(&["dev"]))));
        assert!(yes(expr("env", "NotIn", Some(&["dev"]))));
        assert!(!yes(expr("env", "NotIn", Some(&["prod"]))));
        // NotIn matches pods without the key, as the API server does.
        assert!(yes(expr("missing", "NotIn", Some(&["prod"]))));
        assert!(yes(expr("app", "Exists", None)));
        assert!(!yes(expr("missing", "Exists", None)));
        assert!(yes(expr("missing", "DoesNotExist", Some(&[]))));
        assert!(!yes(expr("app", "DoesNotExist", None)));
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        let s = sel(&[("app", "pay")], vec![expr("env", "In", Some(&["prod"]))]);
        assert!(matches(&s, &labels(&[("app", "pay"), ("env", "prod")])).unwrap());
        assert!(!matches(&s, &labels(&[("app", "pay"), ("env", "dev")])).unwrap());
        assert!(!matches(&s, &labels(&[("app", "other"), ("env", "prod")])).unwrap());
    }

    #[test]
    fn malformed_requirements_are_errors() {
        let pod = labels(&[("app", "pay")]);
        let err = |e| matches(&sel(&[("app", "nope")], vec![e]), &pod).unwrap_err();
        assert!(err(expr("app", "Equals", Some(&["pay"]))).contains("unknown operator"));
        assert!(err(expr("app", "In", None)).contains("needs at least one value"));
        assert!(err(expr("app", "Exists", Some(&["pay"]))).contains("takes no values"));
    }
}
