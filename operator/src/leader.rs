//! Leader election through a `coordination.k8s.io/v1` Lease, so only one replica reconciles at a time.
//!
//! The holder renews the Lease every `renew_interval`. A standby takes it over once the record has not changed
//! for `lease_duration` as measured on its own clock (so clock skew between replicas does not matter), or at
//! once when the holder released it on shutdown. A leader that cannot renew for two thirds of the lease
//! duration steps down before anyone else may take over.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Result;
use crate::admin::Health;

/// Which Lease to contend for and how fast.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica: the pod name in a cluster.
    pub identity: String,
    /// How long a silent holder keeps the Lease; the upper bound of a takeover after a crash.
    pub lease_duration: Duration,
    /// How often the holder renews and a standby retries.
    pub renew_interval: Duration,
}

/// Contends for one Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The holder and renew time last seen, and when (on our clock) they last changed.
    observed: Option<(String, Instant)>,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self { api: Api::namespaced(client, &config.namespace), config, observed: None }
    }

    /// Runs the election until `shutdown`, publishing whether this replica leads on `leading`. On shutdown the
    /// Lease is released if held, so a standby takes over without waiting for it to expire.
    pub async fn run(mut self, leading: watch::Sender<bool>, health: Arc<Health>, shutdown: CancellationToken) {
        let renew_deadline = self.config.lease_duration * 2 / 3;
        let mut last_renew: Option<Instant> = None;
        let mut ticker = tokio::time::interval(self.config.renew_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let lead = match self.try_acquire_or_renew().await {
                Ok(held) => {
                    health.set_ready(true);
                    if held {
                        last_renew = Some(Instant::now());
                    }
                    held
                }
                Err(e) => {
                    warn!(error = %e, lease = %self.config.name, "cannot read or write the leader Lease");
                    // Keep leading only while the Lease we last renewed cannot have been taken over yet.
                    *leading.borrow() && last_renew.is_some_and(|t| t.elapsed() < renew_deadline)
                }
            };
            leading.send_if_modified(|was| {
                let changed = *was != lead;
                *was = lead;
                changed
            });
        }
        if *leading.borrow() {
            leading.send_replace(false);
            match self.release().await {
                Ok(()) => info!(lease = %self.config.name, "released the leader Lease"),
                Err(e) => warn!(error = %e, "cannot release the leader Lease; a standby takes over when it expires"),
            }
        }
    }

    /// One election round: creates, renews or takes over the Lease. Returns whether we hold it.
    async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let now = MicroTime(Timestamp::now());
        let me = self.config.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now.clone(), 0)),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder == me {
            let mut renewed = spec;
            renewed.renew_time = Some(now);
            renewed.lease_duration_seconds = Some(self.duration_seconds());
            lease.spec = Some(renewed);
            return conflict_is_false(self.api.replace(&self.config.name, &PostParams::default(), &lease).await);
        }
        let record = format!("{holder}@{:?}", spec.renew_time);
        let seen = match &self.observed {
            Some((last, at)) if *last == record => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record, at));
                at
            }
        };
        let held_for = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        if !holder.is_empty() && seen.elapsed() < held_for.max(self.config.lease_duration) {
            return Ok(false);
        }
        info!(previous = %holder, lease = %self.config.name, "taking over the leader Lease");
        lease.spec = Some(self.spec(now, spec.lease_transitions.unwrap_or(0) + 1));
        conflict_is_false(self.api.replace(&self.config.name, &PostParams::default(), &lease).await)
    }

    /// Empties the holder so a standby does not wait out the lease duration.
    async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else { return Ok(()) };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api.replace(&self.config.name, &PostParams::default(), &lease).await?;
        Ok(())
    }

    fn spec(&self, now: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.duration_seconds()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// A 409 means another replica wrote the Lease first: we simply do not hold it.
fn conflict_is_false(result: kube::Result<Lease>) -> Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}
