//! KIP-848 consumer groups through the sidecar against Kafka 4.1: Java consumers with `group.protocol=consumer`
//! (three members, a hot reload under them, then one leaves) consume every record exactly once and commit up to
//! the log end, without and with ACLs that allow the group; three members follow their route's failover to west
//! and back (east cut off from the sidecar's network alone) and read every record of both clusters, committing
//! to the log end of each (classic members too, with the sidecar leaving for the members east still lists from
//! before the switch); a group the ACLs deny fails cleanly with GROUP_AUTHORIZATION_FAILED; librdkafka's
//! implementation of the protocol consumes and commits; Kafka 3.9 offers only what it speaks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;
use kproxy_e2e::partition::Partition;
use kproxy_e2e::sidecar::{Sidecar, config, east_west, java};
use kproxy_e2e::{Env, env, run_with_timeout, unique, wait_for};

/// One cluster; ACLs allowing everything on topics and groups of this run, Describe (not Read) on groups
/// `watch-<run>…`, nothing else.
fn acl_config(bootstrap: &str, run: &str) -> String {
    format!(
        r#"clusters:
- name: east
  bootstrapServers: ["{bootstrap}"]
acls:
  defaultAction: Deny
  rules:
  - resource: {{type: Topic, name: "{run}-", patternType: Prefixed}}
    operations: [All]
    effect: Allow
  - resource: {{type: Group, name: "{run}-", patternType: Prefixed}}
    operations: [Read, Describe]
    effect: Allow
  - resource: {{type: Group, name: "watch-{run}", patternType: Prefixed}}
    operations: [Describe]
    effect: Allow
"#
    )
}

fn topic_command(env: &Env, bootstrap: &str, args: &[&str]) {
    let mut cmd = java(env, "org.apache.kafka.tools.TopicCommand");
    cmd.args(["--bootstrap-server", bootstrap]).args(args);
    env.run(&mut cmd, Duration::from_secs(120)).unwrap();
}

/// A Java console consumer in `group` with `group.protocol=<protocol>`; its records go to `out`, its log to
/// `out.err`.
fn member(
    env: &Env,
    bootstrap: &str,
    (topic, group, protocol): (&str, &str, &str),
    client_id: &str,
    out: &Path,
) -> Child {
    let mut cmd = java(env, "org.apache.kafka.tools.consumer.ConsoleConsumer");
    cmd.args(["--bootstrap-server", bootstrap, "--topic", topic, "--group", group, "--from-beginning"]);
    let protocol = format!("group.protocol={protocol}");
    for property in [&protocol, &format!("client.id={client_id}"), "auto.commit.interval.ms=500"] {
        cmd.args(["--consumer-property", property]);
    }
    // Appended to: a member started again after the client's own crash (see [`Running`]) adds to what it printed.
    let append = |path: &Path| std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    cmd.stdout(append(out)).stderr(append(&out.with_extension("err"))).stdin(Stdio::null());
    cmd.spawn().unwrap()
}

/// `kafka-consumer-groups --describe` (ConsumerGroupDescribe, OffsetFetch, ListOffsets) through `bootstrap`.
fn describe(env: &Env, bootstrap: &str, group: &str) -> String {
    let mut cmd = java(env, "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand");
    cmd.args(["--bootstrap-server", bootstrap, "--describe", "--group", group]);
    String::from_utf8_lossy(&env.run(&mut cmd, Duration::from_secs(120)).unwrap().stdout).into_owned()
}

/// The members (client ids `<prefix><digit>`) holding partitions in a description (a classic member's consumer id
/// starts with its client id too, and is longer).
fn members(text: &str, prefix: &str) -> BTreeSet<String> {
    let client_id = |w: &&str| w.strip_prefix(prefix).is_some_and(|rest| rest.len() == 1);
    text.split_whitespace().filter(client_id).map(str::to_string).collect()
}

/// Every line the members printed, duplicates included.
fn consumed(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    for i in 0..3 {
        let text = std::fs::read_to_string(dir.join(format!("member-{i}"))).unwrap_or_default();
        all.extend(text.lines().map(str::to_string));
    }
    all
}

/// What the Java client (4.1) prints when it dies of its own race: `FetchCollector` checks that a partition is
/// assigned, then reads its position, while the consumer's background thread may drop the assignment in between
/// (a member fenced, as every member is once when a route switch moves its group). The process exits with it.
const CLIENT_RACE: &str = "java.lang.IllegalStateException: No current assignment for partition";

/// Member processes, killed when dropped (a failing test leaves none running). A watcher starts a member again
/// when it died of [`CLIENT_RACE`], as a pod's restart policy would; a member that exits for any other reason
/// stays down, and the test waiting for it fails with its log.
struct Running {
    /// Each member with where it prints and how often it was started again.
    members: Arc<Mutex<Vec<(Child, PathBuf, usize)>>>,
    restarts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// How many members were started again after the client's race.
    fn restarts(&self) -> usize {
        self.restarts.load(Ordering::SeqCst)
    }

    /// Ends the first member with SIGTERM: its consumer commits what it consumed and leaves the group.
    fn terminate_first(&self) {
        let (mut leaving, _, _) = self.members.lock().unwrap().remove(0);
        let _ = std::process::Command::new("kill").args(["-TERM", &leaving.id().to_string()]).status();
        let _ = leaving.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
        for (m, _, _) in self.members.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

/// Three members of `group` on `topic` through `bootstrap` with the KIP-848 protocol, client ids `<client>0..2`,
/// printing into `dir`.
fn start_members(
    env: &'static Env,
    bootstrap: &str,
    (topic, group, client): (&str, &str, &str),
    dir: &Path,
) -> Running {
    start_members_with(env, bootstrap, (topic, group, "consumer"), client, dir)
}

/// [`start_members`] with `group.protocol=<protocol>`.
fn start_members_with(
    env: &'static Env,
    bootstrap: &str,
    (topic, group, protocol): (&str, &str, &str),
    client: &str,
    dir: &Path,
) -> Running {
    std::fs::create_dir_all(dir).unwrap();
    let (bootstrap, topic, group, protocol) = (bootstrap.to_string(), topic.to_string(), group.to_string(), protocol);
    let protocol = protocol.to_string();
    let start = move |client_id: &str, out: &Path| member(env, &bootstrap, (&topic, &group, &protocol), client_id, out);
    let members: Vec<(Child, PathBuf, usize)> = (0..3)
        .map(|i| {
            let out = dir.join(format!("member-{i}"));
            (start(&format!("{client}{i}"), &out), out, 0)
        })
        .collect();
    let members = Arc::new(Mutex::new(members));
    let (restarts, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let (watched, restarted, stopping, client) = (members.clone(), restarts.clone(), stop.clone(), client.to_string());
    let watcher = std::thread::spawn(move || {
        while !stopping.load(Ordering::SeqCst) {
            for (i, (child, out, times)) in watched.lock().unwrap().iter_mut().enumerate() {
                let died = matches!(child.try_wait(), Ok(Some(_)));
                let log = || std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
                if died && log().matches(CLIENT_RACE).count() > *times {
                    eprintln!("member {i} died of the Java client's race ({CLIENT_RACE}); starting it again");
                    *times += 1;
                    restarted.fetch_add(1, Ordering::SeqCst);
                    *child = start(&format!("{client}{i}"), out);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    Running { members, restarts, stop, watcher: Some(watcher) }
}

/// Waits until the members printing into `dir` consumed `count` distinct records starting with `prefix`.
fn wait_consumed(dir: &Path, prefix: &str, count: usize, timeout: Duration) {
    let distinct = || consumed(dir).iter().filter(|r| r.starts_with(prefix)).collect::<BTreeSet<_>>().len();
    let waited = wait_for(&format!("the group to consume {count} records {prefix}*"), timeout, || {
        Ok((distinct() >= count).then_some(()))
    });
    waited.unwrap_or_else(|e| {
        let logs: Vec<String> =
            (0..3).map(|i| std::fs::read_to_string(dir.join(format!("member-{i}.err"))).unwrap_or_default()).collect();
        panic!("{e}; member logs: {logs:?}")
    });
}

/// Waits until `count` members (client ids starting with `client`) hold partitions of `group`.
fn wait_members(env: &Env, bootstrap: &str, group: &str, client: &str, count: usize, timeout: Duration) {
    let last = std::cell::RefCell::new(String::new());
    let waited = wait_for(&format!("{count} members in the group"), timeout, || {
        let text = describe(env, bootstrap, group);
        let found = members(&text, client).len() == count;
        *last.borrow_mut() = text;
        Ok(found.then_some(()))
    });
    waited.unwrap_or_else(|e| panic!("{e}; the group as {bootstrap} last described it:\n{}", last.borrow()));
}

/// Waits until the group's committed offsets are at the log end of all `partitions` of `topic` (no lag), as
/// `bootstrap` describes them; returns that description.
fn committed_at_end(env: &Env, bootstrap: &str, group: &str, topic: &str, partitions: usize) -> String {
    wait_for("committed offsets at the log end", Duration::from_secs(60), || {
        let text = describe(env, bootstrap, group);
        let rows: Vec<&str> = text.lines().filter(|l| l.contains(topic)).collect();
        let at_end = rows.len() == partitions && rows.iter().all(|l| l.split_whitespace().nth(5) == Some("0"));
        Ok(at_end.then_some(text))
    })
    .unwrap()
}

/// Three members share a 6-partition topic; one leaves; records produced afterwards go to the other two. Every
/// record is consumed exactly once and the committed offsets reach the log end. With `reload`, that config is
/// published while the three members run, and the group must go on through the hot reload as it is.
fn three_members_one_leaves(env: &'static Env, sidecar: &Sidecar, run: &str, reload: Option<&str>) {
    let (topic, group, client) = (format!("{run}-t"), format!("{run}-g"), format!("{run}-member-"));
    topic_command(
        env,
        &sidecar.listen,
        &["--create", "--topic", &topic, "--partitions", "6", "--replication-factor", "1"],
    );
    let first: Vec<String> = (0..600).map(|i| format!("a-{i}")).collect();
    env.kcat_produce(&sidecar.listen, &topic, &first, &[]).unwrap();
    let dir = std::env::temp_dir().join(unique("kip848"));
    let running = start_members(env, &sidecar.listen, (&topic, &group, &client), &dir);
    wait_consumed(&dir, "a-", 600, Duration::from_secs(120));
    wait_members(env, &sidecar.listen, &group, &client, 3, Duration::from_secs(60));
    if let Some(text) = reload {
        let applied = || sidecar.metric("kproxy_config_reloads_total", &["result=\"applied\""]).unwrap_or(0.0);
        let before = applied();
        sidecar.publish(text).unwrap();
        wait_for("the hot reload", Duration::from_secs(60), || Ok((applied() > before).then_some(()))).unwrap();
        // Records produced after the reload reach the same three members.
        let between: Vec<String> = (0..300).map(|i| format!("r-{i}")).collect();
        env.kcat_produce(&sidecar.listen, &topic, &between, &[]).unwrap();
        wait_consumed(&dir, "r-", 300, Duration::from_secs(90));
        assert_eq!(members(&describe(env, &sidecar.listen, &group), &client).len(), 3, "no member lost to the reload");
    }
    // One member leaves: SIGTERM closes its consumer, which commits what it consumed and leaves the group.
    running.terminate_first();
    wait_members(env, &sidecar.listen, &group, &client, 2, Duration::from_secs(60));
    let second: Vec<String> = (0..600).map(|i| format!("b-{i}")).collect();
    env.kcat_produce(&sidecar.listen, &topic, &second, &[]).unwrap();
    wait_consumed(&dir, "b-", 600, Duration::from_secs(90));
    let text = committed_at_end(env, &sidecar.listen, &group, &topic, 6);
    drop(running);
    let mut got = consumed(&dir);
    got.sort();
    let reloaded: Vec<String> = if reload.is_some() { (0..300).map(|i| format!("r-{i}")).collect() } else { vec![] };
    let mut expected: Vec<String> = first.into_iter().chain(reloaded).chain(second).collect();
    expected.sort();
    assert_eq!(got.len(), expected.len(), "every record exactly once (no duplicates, none lost)");
    assert_eq!(got, expected);
    eprintln!("KIP-848 group through the sidecar:\n{text}");
    // The new protocol went through the sidecar, not the classic one.
    let forwarded = |api: &str| sidecar.metric("kproxy_requests_total", &[&format!("api=\"{api}\"")]).unwrap();
    assert!(forwarded("ConsumerGroupHeartbeat") > 0.0 && forwarded("ConsumerGroupDescribe") > 0.0);
    assert_eq!(forwarded("JoinGroup"), 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kip_848_java_consumers_share_a_topic_across_a_hot_reload_and_rebalance_when_one_leaves() {
    let Some(env) = env() else { return };
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &[]).unwrap();
    // A hot reload in the middle: the same cluster with an ACL section that allows everything.
    let reloaded = format!("{}acls:\n  defaultAction: Allow\n", config("east", env.kafka_east()));
    three_members_one_leaves(env, &sidecar, &unique("kip848"), Some(&reloaded));
}

/// This run's topics and groups in east, failing over to west; anything else in west.
fn failover_config(env: &Env, run: &str) -> String {
    let route = |what: &str| format!(r#"{{match: {{{what}: "{run}-"}}, cluster: east, failover: [west]}}"#);
    east_west(env, "west", &[route("topicPrefix"), route("groupPrefix")])
}

fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// Every record of `topic` in one cluster, read directly, sorted.
fn stored(env: &Env, bootstrap: &str, topic: &str, count: usize) -> Vec<String> {
    let mut records = env.kcat_consume(bootstrap, topic, count, &[]).unwrap();
    records.sort();
    records
}

#[test]
fn kip_848_members_follow_a_route_failover_to_west_and_back() {
    let Some(env) = env() else { return };
    members_follow_a_route_failover_to_west_and_back(env, "consumer");
}

/// Members of the classic protocol come back to east under new member ids: the sidecar leaves for the ones east
/// still lists from before the switch, so their group does not wait there for those members to time out.
#[test]
fn classic_members_follow_a_route_failover_to_west_and_back() {
    let Some(env) = env() else { return };
    members_follow_a_route_failover_to_west_and_back(env, "classic");
}

/// Three members with `group.protocol=<protocol>` consume through a route that fails over from east to west (east
/// cut off from the sidecar's network alone) and back.
fn members_follow_a_route_failover_to_west_and_back(env: &'static Env, protocol: &str) {
    let run = unique(if protocol == "classic" { "classicfo" } else { "kip848fo" });
    let (topic, group, client) = (format!("{run}-t"), format!("{run}-g"), format!("{run}-member-"));
    // The fallback already holds the topic (kproxy routes, it does not replicate). The group's offsets are not
    // mirrored: on west it starts at the beginning of west's log.
    for bootstrap in [env.kafka_east(), env.kafka_west()] {
        topic_command(
            env,
            bootstrap,
            &["--create", "--topic", &topic, "--partitions", "3", "--replication-factor", "1"],
        );
    }
    // East drops off this sidecar's network only; the brokers go on serving the other tests.
    let mut partition = Partition::new();
    let sidecar = Sidecar::start_under(env, &failover_config(env, &run), &[], &partition.prefix()).unwrap();
    let steered_as = |api: &str, reason: &str| {
        let labels = [format!("api=\"{api}\""), format!("reason=\"{reason}\"")];
        sidecar.metric("kproxy_route_group_steered_total", &[&labels[0], &labels[1]]).unwrap_or(0.0) as u64
    };
    let steered = |reason: &str| steered_as("ConsumerGroupHeartbeat", reason);
    let dir = std::env::temp_dir().join(unique("kip848fo"));
    let (a, b, c) = (numbered("a", 300), numbered("b", 300), numbered("c", 300));
    env.kcat_produce(&sidecar.listen, &topic, &a, &[]).unwrap();
    let running = start_members_with(env, &sidecar.listen, (&topic, &group, protocol), &client, &dir);
    wait_consumed(&dir, "a-", a.len(), Duration::from_secs(90));
    wait_members(env, env.kafka_east(), &group, &client, 3, Duration::from_secs(60));
    committed_at_end(env, env.kafka_east(), &group, &topic, 3);

    let cut = Instant::now();
    partition.cut(&env.brokers("east")).unwrap();
    sidecar.wait_switches("fallback", 1, Duration::from_secs(30)).unwrap();
    let switched = cut.elapsed();
    env.kcat_produce(&sidecar.listen, &topic, &b, &[]).unwrap();
    wait_consumed(&dir, "b-", b.len(), Duration::from_secs(90));
    let consumed_on_west = cut.elapsed();
    // The members joined west's coordinator through ConsumerGroupHeartbeat and commit there.
    wait_members(env, env.kafka_west(), &group, &client, 3, Duration::from_secs(60));
    committed_at_end(env, env.kafka_west(), &group, &topic, 3);
    let fenced_on_west = steered("fenced_member_epoch");

    let healed = Instant::now();
    partition.heal().unwrap();
    sidecar.wait_switches("primary", 1, Duration::from_secs(30)).unwrap();
    let returned = healed.elapsed();
    env.kcat_produce(&sidecar.listen, &topic, &c, &[]).unwrap();
    wait_consumed(&dir, "c-", c.len(), Duration::from_secs(90));
    let consumed_on_east = healed.elapsed();
    let text = committed_at_end(env, env.kafka_east(), &group, &topic, 3);
    let restarts = running.restarts();
    drop(running);

    // Each cluster holds what was produced while the route used it...
    let mut on_east: Vec<String> = a.iter().chain(&c).cloned().collect();
    on_east.sort();
    assert_eq!(stored(env, env.kafka_east(), &topic, on_east.len()), on_east);
    let mut on_west = b.clone();
    on_west.sort();
    assert_eq!(stored(env, env.kafka_west(), &topic, on_west.len()), on_west);
    // ...and the group read every record of both, none lost. A switch may make a member read again what it read
    // before rejoining (README, failover guarantees): each record at most once more.
    let mut copies: BTreeMap<String, u32> = BTreeMap::new();
    for record in consumed(&dir) {
        *copies.entry(record).or_default() += 1;
    }
    let expected: BTreeSet<&String> = a.iter().chain(&b).chain(&c).collect();
    assert_eq!(copies.keys().collect::<BTreeSet<_>>(), expected, "every record read, nothing else");
    let again = |prefix: &str| copies.iter().filter(|(r, _)| r.starts_with(prefix)).map(|(_, n)| n - 1).sum::<u32>();
    let most = copies.values().max().copied().unwrap_or(0);
    let (fenced, misdirected) = (steered("fenced_member_epoch"), steered("not_coordinator"));
    let left = steered_as("LeaveGroup", "stale_member");
    eprintln!(
        "failover, group.protocol={protocol}: route switched {:.1} s after east was cut off, 300 records produced \
         to west consumed {:.1} s after it; route returned {:.1} s after east was back, 300 records produced to \
         east consumed {:.1} s after it; {} records read, {} distinct; read again: {} of a, {} of b, {} of c; \
         heartbeats fenced for an epoch of the other cluster: {fenced_on_west} on west, {} on east; heartbeats \
         sent to find their coordinator: {misdirected}; classic members left by the sidecar: {left}; members \
         started again after the Java client's race: {restarts}\n{text}",
        switched.as_secs_f64(),
        consumed_on_west.as_secs_f64(),
        returned.as_secs_f64(),
        consumed_on_east.as_secs_f64(),
        copies.values().sum::<u32>(),
        copies.len(),
        again("a-"),
        again("b-"),
        again("c-"),
        fenced - fenced_on_west,
    );
    // A member the client's race killed reads again from the group's last commit too.
    assert!(most as usize <= 2 + restarts, "a record was read {most} times ({restarts} members started again)");
    let forwarded = |api: &str| sidecar.metric("kproxy_requests_total", &[&format!("api=\"{api}\"")]).unwrap_or(0.0);
    if protocol == "classic" {
        // Back at east, the sidecar left for the three members east still listed from before the switch.
        assert!(left >= 3, "classic members left at east: {left}");
        assert!(forwarded("JoinGroup") > 0.0 && forwarded("ConsumerGroupHeartbeat") == 0.0);
    } else {
        // Each switch fenced the epochs the other cluster granted; the members rejoined with new ones.
        assert!(fenced_on_west >= 1 && fenced > fenced_on_west, "fenced: {fenced_on_west} on west, {fenced} in all");
        assert_eq!(forwarded("JoinGroup"), 0.0, "the classic protocol was never used");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kip_848_with_acls_allowing_the_group_works_and_a_denied_group_gets_group_authorization_failed() {
    let Some(env) = env() else { return };
    let run = unique("kip848acl");
    let sidecar = Sidecar::start(env, &acl_config(env.kafka_east(), &run), &[]).unwrap();
    three_members_one_leaves(env, &sidecar, &run, None);
    // A group the pod may Describe (so its coordinator is found) but not Read: the heartbeat is refused, and the
    // consumer fails with the broker's own error and ends.
    let group = format!("watch-{run}-g");
    let mut denied = java(env, "org.apache.kafka.tools.consumer.ConsoleConsumer");
    denied.args(["--bootstrap-server", &sidecar.listen, "--topic", &format!("{run}-t"), "--group", &group]);
    denied.args(["--consumer-property", "group.protocol=consumer", "--timeout-ms", "30000"]);
    let result = run_with_timeout(&mut denied, None, Duration::from_secs(90)).unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains(&format!("GroupAuthorizationException: Not authorized to access group: {group}")),
        "GROUP_AUTHORIZATION_FAILED reaches the application:\n{stderr}"
    );
    assert!(stderr.contains("terminating consumer process") && stderr.contains("a total of 0 messages"), "{stderr}");
    let denials = sidecar.metric("kproxy_acl_denied_total", &["api=\"ConsumerGroupHeartbeat\""]).unwrap();
    assert!(denials >= 1.0, "the heartbeat was the request denied");
}

/// librdkafka's KIP-848 consumer: consumes, commits synchronously, reads its commits back.
const RDKAFKA_CONSUMER: &str = r#"
import sys
from confluent_kafka import Consumer, TopicPartition
bootstrap, topic, group, want = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": "consumer",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic])
got = 0
while got < want:
    m = c.poll(30)
    if m is None:
        sys.exit("timed out after %d records" % got)
    if m.error():
        sys.exit("error: %s" % m.error())
    print("record", m.value().decode(), flush=True)
    got += 1
c.commit(asynchronous=False)
committed = c.committed([TopicPartition(topic, p) for p in range(2)], timeout=30)
print("committed", sum(max(tp.offset, 0) for tp in committed), flush=True)
c.close()
"#;

#[test]
fn librdkafka_consumes_and_commits_with_the_kip_848_protocol() {
    let Some(env) = env() else { return };
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &[]).unwrap();
    let run = unique("rdkafka848");
    let topic = format!("{run}-t");
    topic_command(
        env,
        &sidecar.listen,
        &["--create", "--topic", &topic, "--partitions", "2", "--replication-factor", "1"],
    );
    let records: Vec<String> = (0..300).map(|i| format!("r-{i}")).collect();
    env.kcat_produce(&sidecar.listen, &topic, &records, &[]).unwrap();
    let mut cmd = env.command(env.var("KPROXY_PYTHON"));
    cmd.args(["-c", RDKAFKA_CONSUMER, &sidecar.listen, &topic, &format!("{run}-g"), "300"]);
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(120)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let mut got: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("record ")).collect();
    got.sort();
    let mut expected: Vec<&str> = records.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(got, expected, "every record once");
    assert!(stdout.lines().any(|l| l == "committed 300"), "offsets committed to the log end: {stdout}");
    assert!(sidecar.metric("kproxy_requests_total", &["api=\"ConsumerGroupHeartbeat\""]).unwrap() > 0.0);
}

/// (min, max) of `api` in an ApiVersions answer at `addr`.
fn offered(addr: &str, api: ApiKey) -> Option<(i16, i16)> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("e2e"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    let r: ApiVersionsResponse = kproxy_e2e::wire::call(&mut s, ApiKey::ApiVersions, 3, 1, "e2e", &request).unwrap();
    r.api_keys.iter().find(|k| k.api_key == api as i16).map(|k| (k.min_version, k.max_version))
}

#[test]
fn the_new_group_apis_are_offered_as_far_as_each_kafka_release_speaks_them() {
    let Some(env) = env() else { return };
    for (name, bootstrap) in [("east", env.kafka_east()), ("legacy", env.kafka_legacy())] {
        let sidecar = Sidecar::start(env, &config(name, bootstrap), &[]).unwrap();
        for api in [ApiKey::ConsumerGroupHeartbeat, ApiKey::ConsumerGroupDescribe, ApiKey::DescribeTopicPartitions] {
            let (broker, through) = (offered(bootstrap, api), offered(&sidecar.listen, api));
            eprintln!("{name} {api:?}: broker {broker:?}, through the sidecar {through:?}");
            let within = match (broker, through) {
                (Some(b), Some(t)) => b.0 <= t.0 && t.1 <= b.1 && t.0 <= t.1,
                (None, None) => true,
                _ => false,
            };
            assert!(within, "{name} {api:?}: broker {broker:?}, sidecar {through:?}");
            assert_eq!(through, broker, "{name} {api:?}: everything the broker speaks is offered");
        }
        // Share groups are not inspected yet: never offered.
        assert_eq!(offered(&sidecar.listen, ApiKey::ShareGroupHeartbeat), None);
    }
}
