//! The three-broker east cluster through the sidecar, under continuous traffic (an idempotent acks=all librdkafka
//! producer, a Java consumer group, a client on the bootstrap address: multi_broker/workload.rs): a rolling restart
//! of all three brokers, leaders moved by partition reassignment and kafka-leader-election, a broker killed with
//! SIGKILL and restarted, and a fourth broker joining. Every run is accounted for exactly, its figures printed and
//! checked (multi_broker/report.rs).
//!
//! The tests stop and start east's brokers, so they take turns. Broker 1, which single-broker tests bootstrap
//! from, is restarted only by the rolling restart, and at once; every test leaves east as it found it.

#[path = "multi_broker/east.rs"]
mod east;
#[path = "multi_broker/report.rs"]
mod report;
#[path = "multi_broker/workload.rs"]
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kproxy_e2e::{Env, env, unique, wait_for};
use workload::Workload;

/// East's brokers serve one of these tests at a time.
static EAST: Mutex<()> = Mutex::new(());

/// A test's hold on east: its turn, and east put back as it was when the test ends (passed or not).
struct Turn {
    _restore: east::Restore<'static>,
    _turn: MutexGuard<'static, ()>,
}

/// The environment, east's brokers to this test alone, and the traffic running through a sidecar.
fn begin(prefix: &str) -> Option<(&'static Env, Turn, Workload)> {
    let env = env()?;
    let turn = Turn { _turn: EAST.lock().unwrap_or_else(|p| p.into_inner()), _restore: east::Restore(env) };
    let w = Workload::start(env, &unique(prefix));
    Some((env, turn, w))
}

const SETTLE: Duration = Duration::from_secs(3);

#[test]
fn a_rolling_restart_of_all_three_brokers_loses_no_record_and_drops_no_bootstrap_connection() {
    let Some((env, _turn, w)) = begin("mb-roll") else { return };
    w.run_for(SETTLE);
    let mut steps = Vec::new();
    for id in [2, 3, 1] {
        // As an operator rolls a cluster: the next broker only once every replica is back in sync.
        let synced = east::wait_in_sync(env, &w.topic);
        // Traffic goes on while the broker is down: from its stop until its JVM has started and registered again.
        let stopped = east::broker(env, "stop", id);
        let started = east::broker(env, "start", id);
        steps.push(format!("broker {id}: in sync after {synced:.1?}, stopped in {stopped:.1?}, back in {started:.1?}"));
    }
    let synced = east::wait_in_sync(env, &w.topic);
    w.run_for(SETTLE);
    let report = w.finish(env);
    eprintln!("rolling restart: {}; all replicas in sync again after {synced:.1?}", steps.join("; "));
    report.print("rolling restart");
    report.check();
}

#[test]
fn leaders_moved_by_reassignment_and_leader_election_are_followed_without_client_errors() {
    let Some((env, _turn, w)) = begin("mb-lead") else { return };
    w.run_for(SETTLE);
    let parts = east::partitions(env, &w.topic).unwrap();
    let before: BTreeMap<i32, i32> = parts.iter().map(|(p, s)| (*p, s.leader)).collect();
    // Each partition's replicas rotated until another broker than its leader comes first, then that one elected:
    // every leader moves.
    let rotated: BTreeMap<i32, Vec<i32>> = parts
        .into_iter()
        .map(|(p, s)| {
            let mut replicas = s.replicas;
            replicas.rotate_left(1);
            if replicas.first() == Some(&s.leader) {
                replicas.rotate_left(1);
            }
            (p, replicas)
        })
        .collect();
    east::reassign(env, &w.topic, &rotated);
    east::elect_preferred(env, &w.topic, rotated.keys().copied());
    let after = east::wait_preferred_leaders(env, &w.topic);
    w.run_for(SETTLE);
    let report = w.finish(env);
    eprintln!("leader moves: leaders per partition {before:?} -> {after:?}");
    report.print("leader moves");
    report.check();
    assert!(before.iter().all(|(p, l)| after.get(p) != Some(l)), "every leader moved: {before:?} -> {after:?}");
    // The clients followed NOT_LEADER_OR_FOLLOWER through the virtual brokers; nothing reached the application.
    assert!(report.errors.is_empty(), "errors reached the producer: {:?}", report.errors);
    assert_eq!(report.commit_failures, 0, "a commit of the group failed");
}

#[test]
fn a_broker_killed_with_sigkill_and_restarted_loses_no_record() {
    let Some((env, _turn, w)) = begin("mb-kill") else { return };
    w.run_for(SETTLE);
    // A broker leading a partition, not broker 1 (the single-broker tests' bootstrap).
    let parts = east::partitions(env, &w.topic).unwrap();
    let victim = parts.values().map(|p| p.leader).find(|l| *l != 1).unwrap_or(2) as u32;
    let killed = Instant::now();
    east::broker(env, "kill", victim);
    w.run_for(Duration::from_secs(5));
    let started = east::broker(env, "start", victim);
    let down = killed.elapsed();
    let synced = east::wait_in_sync(env, &w.topic);
    w.run_for(SETTLE);
    let report = w.finish(env);
    eprintln!(
        "sigkill: broker {victim} (leading partitions {:?}) down for {down:.1?} (its start took {started:.1?}), \
         replicas in sync after {synced:.1?}",
        parts.iter().filter(|(_, p)| p.leader == victim as i32).map(|(id, _)| id).collect::<Vec<_>>(),
    );
    report.print("sigkill");
    report.check();
}

#[test]
fn a_fourth_broker_gets_a_virtual_broker_when_metadata_first_names_it_and_clients_follow_leaders_there() {
    let Some((env, _turn, w)) = begin("mb-join") else { return };
    let listeners = || w.sidecar.metric("kproxy_broker_listeners", &[]).unwrap();
    let (shown_before, listeners_before) = (w.brokers_seen().len(), listeners());
    let joined = east::broker(env, "start", east::SPARE);
    let spare = env.var(&format!("KPROXY_KAFKA_EAST_{}", east::SPARE)).to_string();
    let since = Instant::now();
    // The bootstrap client asks for Metadata four times a second: the first answer naming the new broker opens
    // its listener.
    let shown = wait_for("the new broker in the sidecar's Metadata", Duration::from_secs(60), || {
        let shown = w.brokers_seen();
        Ok((shown.len() == shown_before + 1 && listeners() == listeners_before + 1.0).then_some(shown))
    })
    .unwrap();
    let listed_after = since.elapsed();
    // Clients only ever see the sidecar's addresses.
    let real: BTreeSet<String> = ["1", "2", "3", "4"]
        .iter()
        .map(|id| env.var(&format!("KPROXY_KAFKA_EAST_{id}")).rsplit(':').next().unwrap_or_default().to_string())
        .collect();
    for (node, host, port) in &shown {
        assert!(host == "127.0.0.1" && !real.contains(&port.to_string()), "broker {node} shown at {host}:{port}");
    }
    // The new broker becomes every partition's leader: producer and group must follow it there.
    let onto_spare: BTreeMap<i32, Vec<i32>> = east::partitions(env, &w.topic)
        .unwrap()
        .into_iter()
        .map(|(p, s)| (p, [east::SPARE as i32].into_iter().chain(s.replicas.into_iter().take(2)).collect()))
        .collect();
    east::reassign(env, &w.topic, &onto_spare);
    east::elect_preferred(env, &w.topic, onto_spare.keys().copied());
    let leaders = east::wait_preferred_leaders(env, &w.topic);
    let elected = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    wait_for("the sidecar's upstream connections to the new broker", Duration::from_secs(60), || {
        Ok((w.upstream_connections(&spare) > 0.0).then_some(()))
    })
    .unwrap();
    w.run_for(SETTLE);
    let to_spare = w.upstream_connections(&spare);
    let report = w.finish(env);
    let acked_after = report.acks.values().filter(|(t, _, _)| *t > elected).count();
    eprintln!(
        "fourth broker: started in {joined:.1?}, in the sidecar's Metadata with a listener after {listed_after:.1?} \
         ({} brokers shown: {shown:?}); leaders now {leaders:?}; {to_spare} upstream connections to it; {acked_after} \
         records acknowledged after the election",
        shown.len(),
    );
    report.print("fourth broker");
    report.check();
    assert!(leaders.values().all(|l| *l == east::SPARE as i32), "{leaders:?}");
    assert!(acked_after > 0, "records were acknowledged with the new broker leading every partition");
}
