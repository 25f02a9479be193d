//! The injected sidecar's own settings: the chart's defaults (operator flags `--sidecar-log-level` and friends)
//! with the pod's log annotations on top, turned into the sidecar's flags and environment. Every value is checked
//! here: a bad default stops the operator at start naming its flag, a bad annotation refuses the pod naming the
//! annotation, so no sidecar is started with a value it would reject or misread.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;

use crate::{Refusal, annotation, quantity};

/// Flags the webhook sets itself: extra arguments may not replace them (the pod's wiring depends on them).
const MANAGED_FLAGS: &[&str] = &[
    "--config",
    "--secrets-dir",
    "--listen-addr",
    "--listen",
    "--admin-addr",
    "--admin",
    "--metrics-addr",
    "--metrics",
    "--log-json",
];
/// Environment the webhook sets itself.
const MANAGED_ENV: &[&str] = &["RUST_LOG"];

/// What every injected sidecar runs with unless its pod says otherwise (only logging can be set per pod).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// The `RUST_LOG` filter (`debug`, `kproxy=debug,info`); `None`: the sidecar's default, info.
    pub log_level: Option<String>,
    /// JSON log lines instead of text.
    pub log_json: bool,
    /// `--memory-budget-bytes` as a quantity (`256Mi`); `None`: half the container's memory limit.
    pub memory_budget: Option<String>,
    /// `--connection-memory-bytes` as a quantity; `None`: an eighth of the budget.
    pub connection_memory: Option<String>,
    pub idle_timeout_seconds: Option<u64>,
    pub frame_timeout_seconds: Option<u64>,
    pub request_timeout_seconds: Option<u64>,
    pub upstream_connections: Option<u64>,
    pub upstream_long_poll_connections: Option<u64>,
    /// Appended to the sidecar's arguments, e.g. `--max-in-flight=128`.
    pub extra_args: Vec<String>,
    /// `NAME=VALUE` pairs added to the sidecar's environment.
    pub extra_env: Vec<String>,
}

impl Settings {
    /// Every problem with the defaults, each naming the operator flag and its value.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(level) = &self.log_level
            && let Err(e) = log_filter(level)
        {
            problems.push(format!("--sidecar-log-level={level}: {e}"));
        }
        let budget = bytes_of("--sidecar-memory-budget", &self.memory_budget, &mut problems);
        let share = bytes_of("--sidecar-connection-memory", &self.connection_memory, &mut problems);
        if let (Some(budget), Some(share)) = (budget, share)
            && share > budget
        {
            problems.push(format!(
                "--sidecar-connection-memory={}: more than the memory budget ({})",
                self.connection_memory.as_deref().unwrap_or_default(),
                self.memory_budget.as_deref().unwrap_or_default()
            ));
        }
        for (flag, value) in [
            ("--sidecar-idle-timeout-seconds", self.idle_timeout_seconds),
            ("--sidecar-frame-timeout-seconds", self.frame_timeout_seconds),
            ("--sidecar-request-timeout-seconds", self.request_timeout_seconds),
            ("--sidecar-upstream-connections", self.upstream_connections),
            ("--sidecar-upstream-long-poll-connections", self.upstream_long_poll_connections),
        ] {
            if value == Some(0) {
                problems.push(format!("{flag}=0: must be at least 1"));
            }
        }
        for arg in &self.extra_args {
            let name = arg.split('=').next().unwrap_or_default();
            if !name.starts_with("--") {
                problems.push(format!("--sidecar-extra-arg={arg}: expected --flag or --flag=value"));
            } else if MANAGED_FLAGS.contains(&name) {
                problems.push(format!("--sidecar-extra-arg={arg}: {name} is set by the webhook"));
            }
        }
        for pair in &self.extra_env {
            match pair.split_once('=') {
                Some((name, _)) if !valid_env_name(name) => {
                    problems.push(format!("--sidecar-extra-env={pair}: {name:?} is not a variable name"))
                }
                Some((name, _)) if MANAGED_ENV.contains(&name) => {
                    problems.push(format!("--sidecar-extra-env={pair}: {name} is set by the webhook"))
                }
                Some(_) => {}
                None => problems.push(format!("--sidecar-extra-env={pair}: expected NAME=VALUE")),
            }
        }
        problems
    }

    /// These defaults with the pod's log annotations applied, each checked.
    pub fn for_pod(&self, annotations: &BTreeMap<String, String>) -> Result<Settings, Refusal> {
        let invalid = |annotation: &'static str, value: &str, reason: String| Refusal::InvalidAnnotation {
            annotation,
            value: value.to_string(),
            reason,
        };
        let mut out = self.clone();
        if let Some(value) = annotations.get(annotation::LOG_LEVEL) {
            log_filter(value).map_err(|e| invalid(annotation::LOG_LEVEL, value, e))?;
            out.log_level = Some(value.clone());
        }
        match annotations.get(annotation::LOG_FORMAT).map(String::as_str) {
            None => {}
            Some("text") => out.log_json = false,
            Some("json") => out.log_json = true,
            Some(other) => return Err(invalid(annotation::LOG_FORMAT, other, "expected \"text\" or \"json\"".into())),
        }
        Ok(out)
    }

    /// The sidecar's flags for these settings (after the ones the webhook wires the pod with).
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.log_json {
            args.push("--log-json".to_string());
        }
        let bytes = |q: &Option<String>| q.as_deref().and_then(|q| quantity::parse(q).ok()).map(|b| b.round() as u64);
        let numbers = [
            ("--memory-budget-bytes", bytes(&self.memory_budget)),
            ("--connection-memory-bytes", bytes(&self.connection_memory)),
            ("--idle-timeout-seconds", self.idle_timeout_seconds),
            ("--frame-timeout-seconds", self.frame_timeout_seconds),
            ("--request-timeout-seconds", self.request_timeout_seconds),
            ("--upstream-connections", self.upstream_connections),
            ("--upstream-long-poll-connections", self.upstream_long_poll_connections),
        ];
        args.extend(numbers.into_iter().filter_map(|(flag, v)| v.map(|v| format!("{flag}={v}"))));
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Whether the extra arguments or environment set the proxy's threads (the webhook then sets none).
    pub fn sets_worker_threads(&self) -> bool {
        self.extra_args.iter().any(|a| a.split('=').next() == Some("--worker-threads"))
            || self.extra_env.iter().any(|p| p.split('=').next() == Some("KPROXY_WORKER_THREADS"))
    }

    /// The sidecar's environment for these settings (after the webhook's own).
    pub fn env(&self) -> Vec<EnvVar> {
        let var =
            |name: &str, value: &str| EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() };
        let mut env: Vec<EnvVar> = self.log_level.iter().map(|filter| var("RUST_LOG", filter)).collect();
        env.extend(self.extra_env.iter().filter_map(|pair| pair.split_once('=')).map(|(n, v)| var(n, v)));
        env
    }
}

/// A filter the sidecar would not parse makes it fall back to its default silently: checked with the same parser.
fn log_filter(value: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(value)
        .map(drop)
        .map_err(|e| format!("not a log filter ({e}); e.g. debug or kproxy=debug,info"))
}

/// A whole, positive number of bytes from a quantity; `None` (and a problem naming `flag`) when it is not.
fn bytes_of(flag: &str, value: &Option<String>, problems: &mut Vec<String>) -> Option<f64> {
    let value = value.as_deref()?;
    match quantity::parse_resource(value) {
        Ok(b) if b >= 1.0 && b.fract() == 0.0 => Some(b),
        Ok(_) => {
            problems.push(format!("{flag}={value}: expected a whole number of bytes such as 256Mi"));
            None
        }
        Err(e) => {
            problems.push(format!("{flag}={value}: {e}"));
            None
        }
    }
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn chart_defaults_become_the_sidecars_flags_and_env() {
        let settings = Settings {
            log_level: Some("kproxy=debug,info".into()),
            log_json: true,
            memory_budget: Some("256Mi".into()),
            connection_memory: Some("16Mi".into()),
            idle_timeout_seconds: Some(300),
            frame_timeout_seconds: Some(20),
            request_timeout_seconds: Some(120),
            upstream_connections: Some(2),
            upstream_long_poll_connections: Some(8),
            extra_args: vec!["--max-in-flight=128".into()],
            extra_env: vec!["TZ=UTC".into()],
        };
        assert!(settings.validate().is_empty(), "{:?}", settings.validate());
        assert_eq!(
            settings.args(),
            [
                "--log-json",
                "--memory-budget-bytes=268435456",
                "--connection-memory-bytes=16777216",
                "--idle-timeout-seconds=300",
                "--frame-timeout-seconds=20",
                "--request-timeout-seconds=120",
                "--upstream-connections=2",
                "--upstream-long-poll-connections=8",
                "--max-in-flight=128",
            ]
        );
        let env: Vec<(String, String)> =
            settings.env().into_iter().map(|e| (e.name, e.value.unwrap_or_default())).collect();
        assert_eq!(env, [("RUST_LOG".into(), "kproxy=debug,info".into()), ("TZ".into(), "UTC".into())]);
        assert!(Settings::default().args().is_empty() && Settings::default().env().is_empty());
    }

    #[test]
    fn bad_defaults_are_reported_naming_flag_and_value() {
        let settings = Settings {
            log_level: Some("kproxy=loud".into()),
            memory_budget: Some("16Mi".into()),
            connection_memory: Some("32Mi".into()),
            request_timeout_seconds: Some(0),
            extra_args: vec!["--admin-addr=0.0.0.0:1".into(), "verbose".into()],
            extra_env: vec!["RUST_LOG=trace".into(), "1X=2".into(), "NOVALUE".into()],
            ..Settings::default()
        };
        let problems = settings.validate().join("\n");
        for needle in [
            "--sidecar-log-level=kproxy=loud: not a log filter",
            "--sidecar-connection-memory=32Mi: more than the memory budget (16Mi)",
            "--sidecar-request-timeout-seconds=0",
            "--sidecar-extra-arg=--admin-addr=0.0.0.0:1: --admin-addr is set by the webhook",
            "--sidecar-extra-arg=verbose: expected --flag",
            "--sidecar-extra-env=RUST_LOG=trace: RUST_LOG is set by the webhook",
            "--sidecar-extra-env=1X=2",
            "--sidecar-extra-env=NOVALUE: expected NAME=VALUE",
        ] {
            assert!(problems.contains(needle), "missing {needle:?} in\n{problems}");
        }
        let fractional = Settings { memory_budget: Some("0.5".into()), ..Settings::default() };
        assert!(fractional.validate()[0].contains("whole number of bytes"));
    }

    #[test]
    fn pod_annotations_override_the_log_defaults_and_bad_ones_name_the_annotation() {
        let defaults = Settings { log_level: Some("warn".into()), log_json: true, ..Settings::default() };
        let pod = defaults.for_pod(&annotations(&[(annotation::LOG_LEVEL, "debug"), (annotation::LOG_FORMAT, "text")]));
        let pod = pod.unwrap();
        assert_eq!((pod.log_level.as_deref(), pod.log_json), (Some("debug"), false));
        assert_eq!(defaults.for_pod(&BTreeMap::new()).unwrap(), defaults, "no annotation: the defaults");
        let err = defaults.for_pod(&annotations(&[(annotation::LOG_FORMAT, "xml")])).unwrap_err().to_string();
        assert!(err.contains(annotation::LOG_FORMAT) && err.contains("xml"), "{err}");
        let err = defaults.for_pod(&annotations(&[(annotation::LOG_LEVEL, "a=b=c")])).unwrap_err().to_string();
        assert!(err.contains(annotation::LOG_LEVEL) && err.contains("a=b=c"), "{err}");
    }
}
