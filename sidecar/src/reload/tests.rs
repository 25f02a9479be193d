//! Reloads against config directories and files laid out as kubelet does.

use super::*;
use crate::broker_map::BrokerMap;
use crate::buffer::Pool;
use crate::settings::Limits;

fn publish(dir: &Path, n: u32, text: &str) {
    let stamp = format!("..2026_{n}");
    std::fs::create_dir_all(dir.join(&stamp)).unwrap();
    std::fs::write(dir.join(&stamp).join("config.yaml"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&stamp, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(DATA_LINK)).unwrap();
    let link = dir.join("config.yaml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/config.yaml", &link).unwrap();
    }
}

const ONE: &str = "clusters:\n- name: east\n  bootstrapServers: [\"127.0.0.1:1\"]\n";
const TWO: &str = "clusters:\n- name: east\n  bootstrapServers: [\"127.0.0.1:1\"]\nquotas: {requestRate: 5}\n";
const MOVED: &str = "clusters:\n- name: east\n  bootstrapServers: [\"127.0.0.1:2\"]\n";
const BAD: &str = "clusters:\n- name: east\n  bootstrapServers: [\"nohost\"]\n";

/// A reloader for the config at `path`, its first config applied.
fn reloader(path: &Path, limits: Limits) -> Arc<Reloader> {
    let (config, text) = SidecarConfig::load(path).unwrap();
    let metrics = Arc::new(Metrics::new().unwrap());
    let snapshot = Snapshot::new(config, &text, 1);
    let store = Arc::new(Store::new(Snapshot::new(snapshot.config.clone(), &text, 1), &metrics.registry).unwrap());
    let (brokers, _listeners) = BrokerMap::new("127.0.0.1".into(), 0);
    let clusters = Clusters::new(
        limits,
        metrics.clone(),
        Pool::new(1 << 20),
        path.to_path_buf(),
        Arc::new(brokers),
        CancellationToken::new(),
    );
    apply(&store, &clusters, &metrics, snapshot);
    Arc::new(Reloader::new(path.to_path_buf(), store, clusters, metrics).unwrap())
}

fn app(dir: &Path) -> Arc<Reloader> {
    publish(dir, 0, ONE);
    reloader(dir, Limits::default())
}

#[tokio::test]
async fn invalid_configs_are_rejected_and_valid_ones_swapped_keeping_unchanged_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let east = app.clusters.get("east").unwrap();
    publish(dir.path(), 1, BAD);
    let Outcome::Rejected(why) = app.reload() else { panic!("expected rejection") };
    assert!(why.contains("clusters[0].bootstrapServers[0]"), "{why}");
    assert_eq!(app.store.snapshot().generation, 1);
    assert_eq!(app.reload(), Outcome::Rejected(why));
    publish(dir.path(), 2, TWO);
    assert!(matches!(app.reload(), Outcome::Applied { generation: 2, .. }));
    assert!(Arc::ptr_eq(&east, &app.clusters.get("east").unwrap()), "same connection settings keep the pool");
    assert_eq!(app.reload(), Outcome::Unchanged);
    publish(dir.path(), 3, MOVED);
    assert!(matches!(app.reload(), Outcome::Applied { generation: 3, .. }));
    assert!(!Arc::ptr_eq(&east, &app.clusters.get("east").unwrap()), "a moved cluster gets a new pool");
    let text = app.metrics.render();
    assert!(text.contains("kproxy_config_reloads_total{result=\"rejected\"} 2"), "{text}");
    assert!(text.contains("kproxy_config_generation 3"), "{text}");
    assert!(text.contains(&format!("hash=\"{}\"", config_hash(MOVED))), "{text}");
}

#[tokio::test]
async fn a_removed_cluster_serves_its_listeners_until_the_grace_period_ends() {
    let dir = tempfile::tempdir().unwrap();
    let two = format!("{ONE}- name: west\n  bootstrapServers: [\"127.0.0.1:3\"]\n");
    publish(dir.path(), 0, &two);
    let limits = Limits { removed_cluster_grace: Duration::from_millis(200), ..Limits::default() };
    let app = reloader(dir.path(), limits);
    let west = app.clusters.get("west").unwrap();
    publish(dir.path(), 1, ONE);
    assert!(matches!(app.reload(), Outcome::Applied { .. }));
    assert!(Arc::ptr_eq(&west, &app.clusters.get("west").unwrap()), "still served right after removal");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(app.clusters.get("west").is_none());
    assert!(west.is_retired());
}

#[tokio::test]
async fn a_plain_config_file_is_watched_without_reacting_to_its_own_reads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kproxy.yaml");
    std::fs::write(&file, ONE).unwrap();
    let app = reloader(&file, Limits::default());
    spawn(app.clone(), CancellationToken::new()).unwrap();
    std::fs::write(dir.path().join(".tmp"), TWO).unwrap();
    std::fs::rename(dir.path().join(".tmp"), &file).unwrap();
    for _ in 0..200 {
        if app.store.snapshot().generation == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.store.snapshot().generation, 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let unchanged = app.metrics.config_reloads.with_label_values(&["unchanged"]).get();
    assert!(unchanged <= 1, "reading the config must not trigger reloads ({unchanged})");
}

#[tokio::test]
async fn a_data_swap_is_noticed_by_the_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    spawn(app.clone(), CancellationToken::new()).unwrap();
    publish(dir.path(), 1, TWO);
    for _ in 0..200 {
        if app.store.snapshot().generation == 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the swap was not noticed");
}

/// A config as the operator renders it: generation `generation` of one policy object, rendered at `at` ms.
fn rendered(generation: i64, at: u64, body: &str) -> String {
    format!("policy: shop/p\ngeneration: {generation}\npolicyUid: u1\nrenderedAtMs: {at}\n{body}")
}

#[tokio::test]
async fn the_newest_rendering_wins_whichever_path_brings_it_first() {
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), 0, &rendered(3, 100, ONE));
    let app = reloader(dir.path(), Limits::default());
    assert!(matches!(app.offer(Source::Api, rendered(4, 200, TWO)), Outcome::Applied { generation: 2, .. }));
    assert_eq!(app.reload(), Outcome::Stale, "the volume still holds generation 3: 4 keeps serving");
    assert_eq!(app.store.snapshot().config.generation, 4);
    publish(dir.path(), 1, &rendered(4, 200, TWO));
    assert_eq!(app.reload(), Outcome::Unchanged, "the volume caught up");
    let Outcome::Rejected(why) = app.offer(Source::Api, rendered(5, 300, BAD)) else { panic!("expected rejection") };
    assert!(why.contains("bootstrapServers[0]"), "{why}");
    assert_eq!(app.store.snapshot().config.generation, 4, "the last good config keeps serving");
    assert_eq!(app.offer(Source::Api, rendered(3, 400, MOVED)), Outcome::Stale, "never an older generation");
    publish(dir.path(), 2, &rendered(5, 500, MOVED));
    assert!(matches!(app.reload(), Outcome::Applied { generation: 3, .. }), "the volume alone still delivers");
    let text = app.metrics.render();
    for line in [
        "kproxy_config_source{source=\"volume\"} 1",
        "kproxy_config_source{source=\"api\"} 0",
        "kproxy_config_propagation_seconds_count{source=\"api\"} 1",
        "kproxy_config_propagation_seconds_count{source=\"volume\"} 1",
        "kproxy_config_reloads_total{result=\"stale\"} 2",
        "kproxy_config_reloads_total{result=\"rejected\"} 1",
    ] {
        assert!(text.contains(line), "missing {line} in {text}");
    }
    let age = text.lines().find_map(|l| l.strip_prefix("kproxy_config_age_seconds ")).unwrap();
    assert!(age.parse::<f64>().unwrap() > 1e6, "rendered at 500 ms after the epoch: {age}");
}

#[tokio::test]
async fn a_config_naming_secret_files_the_pod_lacks_is_refused_on_either_path_until_they_are_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let sasl = format!(
        "{ONE}  sasl: {{mechanism: PLAIN, usernameFile: new-secret/username, passwordFile: new-secret/password}}\n"
    );
    publish(dir.path(), 1, &sasl);
    let Outcome::Rejected(why) = app.reload() else { panic!("expected a refusal") };
    assert!(why.contains("new-secret/password") && why.contains("restart the pod"), "{why}");
    assert!(matches!(app.offer(Source::Api, sasl.clone()), Outcome::Rejected(_)), "the API path refuses it too");
    assert_eq!(app.store.snapshot().generation, 1, "the last good config keeps serving");
    std::fs::create_dir_all(dir.path().join("new-secret")).unwrap();
    for key in ["username", "password"] {
        std::fs::write(dir.path().join("new-secret").join(key), "x").unwrap();
    }
    assert!(matches!(app.reload(), Outcome::Applied { generation: 2, .. }));
    let text = app.metrics.render();
    assert!(text.contains("kproxy_config_missing_credentials_total 2"), "{text}");
}

#[tokio::test]
async fn a_newer_major_schema_is_refused_and_a_newer_minors_fields_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    publish(dir.path(), 1, &format!("schemaVersion: \"2.0\"\n{TWO}"));
    let Outcome::Rejected(why) = app.reload() else { panic!("a newer major must be refused") };
    assert!(why.contains("schemaVersion 2.0 is newer than this sidecar reads (1.0)"), "{why}");
    assert_eq!(app.store.snapshot().hash, config_hash(ONE), "the last good config keeps serving");
    let newer_minor = format!("schemaVersion: \"1.4\"\nshadowTopics: [audit]\n{TWO}");
    publish(dir.path(), 2, &newer_minor);
    assert!(matches!(app.reload(), Outcome::Applied { generation: 2, .. }));
    assert_eq!(app.store.snapshot().config.quotas.request_rate, Some(5), "what it knows is enforced");
    assert!(app.metrics.render().contains("kproxy_config_unknown_fields 1"));
    publish(dir.path(), 3, MOVED);
    assert!(matches!(app.reload(), Outcome::Applied { generation: 3, .. }));
    assert!(app.metrics.render().contains("kproxy_config_unknown_fields 0"));
}
