//! Whole files: every field, defaults, paths, the embedded default.

use std::path::{Path, PathBuf};

use config::{ConflictStrategy, SiteConfig, SyncMode};
use model::{Autonomy, Level};

use crate::{load, parse, parse_err, site};

#[test]
fn a_file_with_every_field_is_read_as_written() {
    let config = load("full-site.yaml");
    assert_eq!(config.listen, "127.0.0.1:7401".parse().expect("addr"));
    assert_eq!(config.max_clock_skew.to_string(), "2m30s");
    assert_eq!(config.isolation_after.to_string(), "45s");
    assert_eq!(config.status_interval.to_string(), "10s");
    assert_eq!(config.nodes.delayed_after.to_string(), "20s");
    assert_eq!(config.nodes.offline_after.to_string(), "2m");
    assert_eq!(config.trust_domain, "region-a-pki");
    assert_eq!(config.autonomy.mode, Autonomy::Conditional);
    assert!(!config.autonomy.can_deploy_versions);
    let up = config.upstream.as_ref().expect("upstream");
    assert_eq!(up.frequency.to_string(), "3h45m", "3.75h from Authority.sync.frequency");
    assert_eq!(up.batch_size, 250);
    assert_eq!(config.downstream.mode, SyncMode::Opportunistic);
    assert_eq!(config.downstream.frequency.to_string(), "1h30m");
    assert_eq!(config.downstream.batch_size, 50);
    assert_eq!(config.conflict_strategy(), ConflictStrategy::AuthorityWins);
    assert!(!config.conflicts.versioning && !config.conflicts.audit_log);
    assert_eq!(config.peer_url(&site("global-control")), Some("http://127.0.0.1:7400"));
    assert_eq!(
        config.peer_url(&site("edge-zone-a1")),
        Some("http://127.0.0.1:7403"),
        "the trailing slash is dropped so that paths can be appended"
    );
    assert_eq!(config.peer_url(&site("edge-zone-a2")), None);
}

#[test]
fn relative_data_dirs_are_resolved_against_the_config_file_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).expect("mkdir");
    let file = conf.join("site.yaml");
    std::fs::write(&file, "Site:\n  id: a\n  data_dir: ./data/a\n").expect("write");
    assert_eq!(SiteConfig::load(&file).expect("valid").data_dir, conf.join("data/a"));

    std::fs::write(&file, "Site:\n  id: a\n").expect("write");
    assert_eq!(SiteConfig::load(&file).expect("valid").data_dir, conf.join("souverix-data"));

    std::fs::write(&file, "Site:\n  id: a\n  data_dir: /var/lib/souverix\n").expect("write");
    assert_eq!(SiteConfig::load(&file).expect("valid").data_dir, PathBuf::from("/var/lib/souverix"));

    let parsed = SiteConfig::parse("Site:\n  id: a\n  data_dir: data\n", "x.yaml", Path::new("/srv/sx"));
    assert_eq!(parsed.expect("valid").data_dir, PathBuf::from("/srv/sx/data"));
}

#[test]
fn the_embedded_default_is_a_lone_global_site() {
    let config = SiteConfig::embedded_default();
    assert_eq!(config.site_id(), &site("global-control"));
    assert_eq!(config.level, Level::Global);
    assert_eq!(config.scope.as_str(), "global");
    assert_eq!(config.autonomy.mode, Autonomy::Full);
    assert_eq!(config.listen.to_string(), "127.0.0.1:7400");
    assert_eq!(config.data_dir, PathBuf::from("./souverix-data"));
    assert!(config.peers.is_empty());
    assert!(config.upstream.is_none());
    assert!(config.downstream.targets.is_empty());
    assert_eq!(config.isolation_after, config::DEFAULT_ISOLATION_AFTER);
    assert_eq!(config.status_interval.to_string(), "30s");
    assert_eq!(config.nodes.delayed_after.to_string(), "15s");
    assert_eq!(config.nodes.offline_after.to_string(), "5m");
    assert!(config.describe().contains(&"status summary every 30s".to_owned()));
    assert!(
        config
            .describe()
            .contains(&"nodes delayed after 15s without a heartbeat, offline after 5m".to_owned())
    );
    assert_eq!(config.trust_domain, "global", "the trust domain defaults to the scope");
    assert_eq!(config.source, None);
    assert_eq!(config.describe()[0], "embedded default configuration");
    assert!(config.describe().contains(&"upstream: none".to_owned()));
}

#[test]
fn levels_set_the_scope_and_autonomy_defaults() {
    let edge = parse("Authority:\n  level: local\n  region: region-a\n  master: edge-zone-a1\n  sync:\n    upstream: region-a-control\n")
        .expect("valid");
    assert_eq!(edge.scope.as_str(), "edge-zone-a1", "a local site is master of its own zone");
    assert_eq!(edge.autonomy.mode, Autonomy::Conditional);
    assert!(edge.autonomy.can_operate_isolated && edge.autonomy.can_modify_policies);
    assert!(!edge.autonomy.can_deploy_versions);

    let autonomous = parse(
        "Authority:\n  level: autonomous\n  master: edge-zone-c\n  sync:\n    upstream: global-control\n",
    )
    .expect("valid");
    assert_eq!(autonomous.upstream.expect("upstream").mode, SyncMode::Opportunistic);

    let overridden =
        parse("Authority:\n  level: local\n  master: e\n  autonomy:\n    mode: none\n    can_operate_isolated: true\n")
            .expect("valid");
    assert_eq!(overridden.autonomy.mode, Autonomy::None);
    assert!(overridden.autonomy.can_operate_isolated, "an explicit flag beats the mode's default");
    assert!(!overridden.autonomy.can_modify_policies);

    let global = parse("Authority:\n  level: global\n  master: global-control\n").expect("valid");
    assert_eq!(global.scope.as_str(), "global");
    let regional_without_region =
        parse("Authority:\n  level: regional\n  master: region-x\n").expect("valid");
    assert_eq!(regional_without_region.scope.as_str(), "region-x");
    let explicit = parse("Site:\n  scope: zone-9\nAuthority:\n  level: local\n  master: e\n").expect("valid");
    assert_eq!(explicit.scope.as_str(), "zone-9");
}

#[test]
fn the_seed_quotes_are_optional_and_last_sync_may_be_any_value() {
    let config = parse(
        "Authority:\n  level: regional\n  master: r\n  sync:\n    upstream: g\n    frequency: 15m\n    mode: continuous\n    last_sync: 2026-02-27T03:45:00Z\n",
    )
    .expect("valid");
    assert_eq!(config.upstream.expect("upstream").frequency.to_string(), "15m");
    parse("Authority:\n  level: global\n  master: g\n  sync:\n    last_sync: ~\n")
        .expect("state alone is accepted on the global site");
}

#[test]
fn the_same_setting_may_be_given_in_both_documents_when_it_agrees() {
    let config = parse(
        "Authority:\n  level: local\n  region: r\n  master: e\n  sync:\n    upstream: p\n    frequency: 1h\n    mode: push\nSyncStrategy:\n  region: r\n  upstream:\n    target: p\n    frequency: 60m\n    mode: push\n",
    )
    .expect("valid");
    let up = config.upstream.expect("upstream");
    assert_eq!((up.frequency.to_string(), up.mode), ("1h".to_owned(), SyncMode::Push));

    let err = parse_err(
        "Authority:\n  level: local\n  master: e\n  sync:\n    upstream: p\n    mode: push\nSyncStrategy:\n  upstream:\n    mode: continuous\n",
    );
    assert!(
        err.starts_with("site.yaml:9:11: SyncStrategy.upstream.mode: `continuous` differs from `Authority.sync.mode` `push` (line 6)"),
        "{err}"
    );
}
