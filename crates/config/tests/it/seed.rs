//! The seed's `Authority:` and `SyncStrategy:` snippets are accepted verbatim.

use std::time::Duration;

use config::{ConflictStrategy, RetryPolicy, SiteConfig, SyncMode};
use model::{Autonomy, Level, Scope};

use crate::{fixture, load, site};

#[test]
fn the_fixtures_are_the_seed_snippets_character_for_character() {
    let seed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/seeds/000_835600079fb3577a.txt"),
    );
    // The seed lives beside the workspace in this checkout; skip the cross-check elsewhere.
    let Ok(seed) = seed else { return };
    for name in ["seed-authority.yaml", "seed-sync-strategy.yaml"] {
        let snippet = std::fs::read_to_string(fixture(name)).expect("fixture");
        assert!(seed.contains(&snippet), "{name} is not a verbatim copy of the seed's snippet");
    }
    let both = std::fs::read_to_string(fixture("seed-site.yaml")).expect("fixture");
    assert!(both.contains("    last_sync: \"2026-02-27T03:45:00Z\"\n"), "{both}");
}

#[test]
fn the_seed_snippets_together_are_a_complete_regional_site() {
    let config = load("seed-site.yaml");
    assert_eq!(config.site_id(), &site("region-a-control"));
    assert_eq!(config.level, Level::Regional);
    assert_eq!(config.region, Some(Scope::new("region-a").expect("scope")));
    assert_eq!(config.scope, Scope::new("region-a").expect("scope"));
    assert_eq!(config.autonomy.mode, Autonomy::Full);
    assert!(config.autonomy.can_operate_isolated);
    assert!(config.autonomy.can_modify_policies);
    assert!(config.autonomy.can_deploy_versions);

    let up = config.upstream.as_ref().expect("an upstream");
    assert_eq!(up.target, site("global-control"));
    assert_eq!(up.mode, SyncMode::Continuous);
    assert_eq!(up.frequency.as_std(), Duration::from_secs(15 * 60));
    assert_eq!(up.batch_size, 100);
    assert_eq!(up.retry_policy, RetryPolicy::ExponentialBackoff);

    assert_eq!(config.downstream_targets(), [site("edge-zone-a1"), site("edge-zone-a2")]);
    assert_eq!(config.downstream.mode, SyncMode::Push);
    assert_eq!(config.downstream.frequency.as_std(), Duration::from_secs(5 * 60));
    assert_eq!(config.downstream.retry_policy, RetryPolicy::ExponentialBackoff);

    assert_eq!(config.conflict_strategy(), ConflictStrategy::LastWriteWins);
    assert!(config.conflicts.versioning);
    assert!(config.conflicts.audit_log);

    // Everything the snippets do not say takes its default.
    assert_eq!(config.listen, config::DEFAULT_LISTEN);
    assert_eq!(config.max_clock_skew, config::DEFAULT_MAX_CLOCK_SKEW);
    assert!(config.peers.is_empty());
    assert_eq!(config.data_dir, fixture("souverix-data"));
}

#[test]
fn the_authority_snippet_alone_is_a_site_with_an_upstream_and_no_children() {
    let config = load("seed-authority.yaml");
    assert_eq!(config.site_id(), &site("region-a-control"));
    assert_eq!(config.level, Level::Regional);
    assert_eq!(config.scope.as_str(), "region-a");
    let up = config.upstream.expect("an upstream");
    assert_eq!(
        (up.target, up.mode, up.frequency.to_string()),
        (site("global-control"), SyncMode::Continuous, "15m".into())
    );
    assert!(config.downstream.targets.is_empty());
}

#[test]
fn the_sync_strategy_snippet_needs_a_site_id_and_then_stands_alone() {
    let snippet = std::fs::read_to_string(fixture("seed-sync-strategy.yaml")).expect("fixture");
    let err = SiteConfig::parse(&snippet, "strategy.yaml", std::path::Path::new("")).unwrap_err().to_string();
    assert!(err.starts_with("strategy.yaml:1: Site.id: the site has no id"), "{err}");

    let text = format!("Site:\n  id: region-a-control\n{snippet}");
    let config = SiteConfig::parse(&text, "site.yaml", std::path::Path::new("")).expect("valid");
    // No Authority document, but an upstream: the least privileged level with a parent.
    assert_eq!(config.level, Level::Local);
    assert_eq!(config.autonomy.mode, Autonomy::Conditional);
    assert_eq!(config.region.as_ref().map(Scope::as_str), Some("region-a"));
    assert_eq!(config.scope.as_str(), "region-a-control");
    assert_eq!(config.upstream.expect("upstream").batch_size, 100);
}

#[test]
fn describe_summarises_the_seed_site() {
    let lines = load("seed-site.yaml").describe();
    let expected = [
        "site region-a-control (regional, scope region-a, autonomy full)",
        "listen 127.0.0.1:7400",
        "trust domain region-a",
        "max clock skew 5m",
        "upstream global-control: continuous, every 15m, batches of 100, exponential-backoff",
        "isolated after the upstream link is cut for 5m",
        "downstream edge-zone-a1, edge-zone-a2: push, every 5m, batches of 100, exponential-backoff",
        "peer global-control: no address (add it under Site.peers)",
        "conflicts: last-write-wins, versioning on, audit log on",
    ];
    for line in expected {
        assert!(lines.iter().any(|l| l == line), "missing {line:?} in {lines:#?}");
    }
    assert!(lines.iter().any(|l| l.starts_with("data dir ") && l.ends_with("souverix-data")), "{lines:#?}");
}
