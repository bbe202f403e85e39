//! Federation files: the embedded demo (the seed's Federation Model), laying a federation out
//! for a run, rendering one site's own file, the tree's helpers, and every kind of refusal.
//! Line numbers are those of the fixtures: check them there when changing a fixture.

use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{
    ConfigError, ConflictStrategy, EMBEDDED_DEMO, FederationConfig, FederationRunError, RetryPolicy,
    SiteConfig, SyncMode,
};
use model::{Autonomy, Level, SiteId};

use crate::{fixture, load, site};

fn ids(names: &[&str]) -> Vec<SiteId> {
    names.iter().map(|name| site(name)).collect()
}

/// Parses `text` as if it were the file `federation.yaml` in the current directory.
fn parse_err(text: &str) -> String {
    match FederationConfig::parse(text, "federation.yaml", Path::new("")) {
        Ok(federation) => panic!("accepted:\n{text}\n{federation:?}"),
        Err(err) => err.to_string(),
    }
}

fn load_err(name: &str) -> ConfigError {
    match FederationConfig::load(&fixture(name)) {
        Ok(federation) => panic!("{name} was accepted: {federation:?}"),
        Err(err) => err,
    }
}

const DEMO_ORDER: [&str; 7] = [
    "global-control",
    "region-a-control",
    "edge-zone-a1",
    "edge-zone-a2",
    "region-b-control",
    "edge-zone-b1",
    "edge-zone-c",
];

#[test]
fn the_embedded_demo_is_the_seeds_federation_model() {
    let demo = FederationConfig::embedded_demo();
    assert_eq!(demo.name(), "demo");
    let order: Vec<&SiteId> = demo.sites().iter().map(|s| s.id()).collect();
    assert_eq!(order, ids(&DEMO_ORDER).iter().collect::<Vec<_>>());
    assert_eq!(demo.root().id(), &site("global-control"));

    // site, parent, level, autonomy, scope, trust domain, upstream mode and frequency
    let expected = [
        ("global-control", None, Level::Global, Autonomy::Full, "global", "global", None),
        (
            "region-a-control",
            Some("global-control"),
            Level::Regional,
            Autonomy::Full,
            "region-a",
            "region-a",
            Some((SyncMode::Continuous, 15)),
        ),
        (
            "edge-zone-a1",
            Some("region-a-control"),
            Level::Local,
            Autonomy::Conditional,
            "edge-zone-a1",
            "region-a",
            Some((SyncMode::Continuous, 15)),
        ),
        (
            "edge-zone-a2",
            Some("region-a-control"),
            Level::Local,
            Autonomy::Conditional,
            "edge-zone-a2",
            "region-a",
            Some((SyncMode::Continuous, 15)),
        ),
        (
            "region-b-control",
            Some("global-control"),
            Level::Regional,
            Autonomy::Full,
            "region-b",
            "region-b",
            Some((SyncMode::Continuous, 15)),
        ),
        (
            "edge-zone-b1",
            Some("region-b-control"),
            Level::Local,
            Autonomy::Full,
            "edge-zone-b1",
            "edge-zone-b1",
            Some((SyncMode::Opportunistic, 3)),
        ),
        (
            "edge-zone-c",
            Some("global-control"),
            Level::Autonomous,
            Autonomy::Full,
            "edge-zone-c",
            "edge-zone-c",
            Some((SyncMode::Opportunistic, 3)),
        ),
    ];
    for (id, parent, level, autonomy, scope, trust_domain, upstream) in expected {
        let entry = demo.get(&site(id)).unwrap_or_else(|| panic!("{id} is missing"));
        let config = &entry.config;
        assert_eq!(entry.parent, parent.map(site), "{id}");
        assert_eq!(config.level, level, "{id}");
        assert_eq!(config.autonomy.mode, autonomy, "{id}");
        assert_eq!(config.scope.as_str(), scope, "{id}");
        assert_eq!(config.trust_domain, trust_domain, "{id}");
        assert_eq!(config.isolation_after.as_std(), Duration::from_secs(5), "{id}");
        assert_eq!(config.status_interval.as_std(), Duration::from_secs(2), "{id}");
        assert_eq!(
            (config.nodes.delayed_after.as_std(), config.nodes.offline_after.as_std()),
            (Duration::from_secs(15), Duration::from_secs(60)),
            "{id}"
        );
        assert_eq!(config.source.as_deref(), Some(Path::new("<embedded demo-federation.yaml>")));
        let up = config.upstream.as_ref().map(|up| (up.mode, up.frequency.as_std().as_secs()));
        assert_eq!(up, upstream, "{id}");
        if let Some(up) = &config.upstream {
            assert_eq!(Some(&up.target), entry.parent.as_ref(), "{id}");
            assert_eq!((up.batch_size, up.retry_policy), (100, RetryPolicy::ExponentialBackoff), "{id}");
        }
        assert_eq!(config.downstream.targets, entry.children, "{id}: targets are the children");
        if !entry.children.is_empty() {
            let down = &config.downstream;
            assert_eq!(
                (down.mode, down.frequency.as_std()),
                (SyncMode::Push, Duration::from_secs(2)),
                "{id}"
            );
            assert_eq!(down.batch_size, 100, "{id}");
        }
        assert_eq!(config.conflicts.strategy, ConflictStrategy::LastWriteWins, "{id}");
        assert!(config.conflicts.versioning && config.conflicts.audit_log, "{id}");
    }

    let children = |id: &str| demo.get(&site(id)).map(|s| s.children.clone()).unwrap_or_default();
    assert_eq!(children("global-control"), ids(&["region-a-control", "region-b-control", "edge-zone-c"]));
    assert_eq!(children("region-a-control"), ids(&["edge-zone-a1", "edge-zone-a2"]));
    assert_eq!(children("region-b-control"), ids(&["edge-zone-b1"]));
    for leaf in ["edge-zone-a1", "edge-zone-a2", "edge-zone-b1", "edge-zone-c"] {
        assert!(children(leaf).is_empty(), "{leaf}");
    }
    let a1 = &demo.get(&site("edge-zone-a1")).expect("a1").config;
    assert!(!a1.autonomy.can_deploy_versions, "conditional autonomy does not deploy versions");
}

#[test]
fn region_a_in_the_demo_is_the_seeds_snippets_with_frequencies_in_seconds() {
    let demo = FederationConfig::embedded_demo();
    let from_demo = demo.get(&site("region-a-control")).expect("region-a").config.clone();
    let mut from_seed = load("seed-site.yaml");
    let up = from_seed.upstream.as_mut().expect("upstream");
    up.frequency = Duration::from_secs(15).into();
    from_seed.downstream.frequency = Duration::from_secs(2).into();
    from_seed.isolation_after = Duration::from_secs(5).into();
    from_seed.status_interval = Duration::from_secs(2).into();
    from_seed.nodes.offline_after = Duration::from_secs(60).into();
    from_seed.source = from_demo.source.clone();
    from_seed.data_dir = from_demo.data_dir.clone();
    assert_eq!(from_demo, from_seed);
    // And in the text, the seed's field names and quoting.
    for line in [
        "        level: \"regional\"\n",
        "          can_deploy_versions: true\n",
        "          mode: \"push\"\n",
    ] {
        assert!(EMBEDDED_DEMO.contains(line), "{line:?}");
    }
}

#[test]
fn the_embedded_demo_is_the_file_beside_the_crate() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo-federation.yaml");
    let from_file = FederationConfig::load(&path).expect("valid");
    let demo = FederationConfig::embedded_demo();
    assert_eq!(from_file.source(), path);
    assert_eq!(from_file.sites().len(), demo.sites().len());
    for (a, b) in from_file.sites().iter().zip(demo.sites()) {
        let mut a = a.clone();
        a.config.source = b.config.source.clone();
        a.config.data_dir = b.config.data_dir.clone();
        assert_eq!(&a, b);
    }
}

#[test]
fn a_run_gives_each_site_a_port_in_file_order_and_its_neighbours_as_peers() {
    let demo = FederationConfig::embedded_demo();
    let data = Path::new("/srv/demo");
    let configs = demo.site_configs_for_run(7400, data).expect("ports");
    for (i, (config, id)) in configs.iter().zip(DEMO_ORDER).enumerate() {
        assert_eq!(config.site_id(), &site(id));
        assert_eq!(config.listen.to_string(), format!("127.0.0.1:{}", 7400 + i));
        assert_eq!(config.data_dir, data);
    }
    let peers = |i: usize| -> Vec<(String, String)> {
        configs[i].peers.iter().map(|(id, url)| (id.to_string(), url.clone())).collect()
    };
    let pairs = |list: &[(&str, u16)]| -> Vec<(String, String)> {
        list.iter().map(|(id, port)| ((*id).to_owned(), format!("http://127.0.0.1:{port}"))).collect()
    };
    assert_eq!(
        peers(0),
        pairs(&[("edge-zone-c", 7406), ("region-a-control", 7401), ("region-b-control", 7404)])
    );
    assert_eq!(peers(1), pairs(&[("edge-zone-a1", 7402), ("edge-zone-a2", 7403), ("global-control", 7400)]));
    assert_eq!(peers(2), pairs(&[("region-a-control", 7401)]));
    assert_eq!(peers(5), pairs(&[("region-b-control", 7404)]));
    assert_eq!(peers(6), pairs(&[("global-control", 7400)]));
    assert!(
        configs[1].describe().contains(&"peer edge-zone-a2 at http://127.0.0.1:7403".to_owned()),
        "{:#?}",
        configs[1].describe()
    );

    assert!(demo.site_configs_for_run(65_529, data).is_ok(), "the last site gets 65535");
    let err = demo.site_configs_for_run(65_530, data).unwrap_err();
    assert_eq!(err, FederationRunError::PortsOutOfRange { base_port: 65_530, sites: 7 });
    assert_eq!(
        err.to_string(),
        "base port 65530 gives the 7 sites the ports 65530 to 65536, but ports run from 1 to 65535; choose a base port from 1 to 65529"
    );
    assert!(demo.site_configs_for_run(0, data).is_err(), "port 0 is no address to reach a site at");
}

#[test]
fn every_rendered_site_file_loads_back_to_the_same_configuration() {
    let demo = FederationConfig::embedded_demo();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let configs = demo.site_configs_for_run(7500, &data).expect("ports");
    for expected in configs {
        let id = expected.site_id().clone();
        let text = demo.render_site_file(&id, 7500, &data).expect("known site");
        let file = dir.path().join(format!("{id}.yaml"));
        std::fs::write(&file, &text).expect("write");
        let loaded = SiteConfig::load(&file).unwrap_or_else(|e| panic!("{id}: {e}\n{text}"));
        assert_eq!(loaded.source.as_deref(), Some(file.as_path()));
        assert_eq!(SiteConfig { source: expected.source.clone(), ..loaded }, expected, "{id}:\n{text}");
        assert!(text.starts_with(&format!("# Site `{id}` of federation `demo`")), "{text}");
    }

    let err = demo.render_site_file(&site("edge-zone-d"), 7500, &data).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "`edge-zone-d` is not a site of federation `demo`; its sites are `global-control`, `region-a-control`,"
        ),
        "{err}"
    );
}

#[test]
fn any_site_configuration_renders_to_a_file_that_reads_back_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["full-site.yaml", "seed-site.yaml", "seed-authority.yaml"] {
        let config = load(name);
        let file = dir.path().join(name);
        std::fs::write(&file, config.to_yaml()).expect("write");
        let loaded = SiteConfig::load(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(SiteConfig { source: config.source.clone(), ..loaded }, config, "{name}");
    }
}

#[test]
fn ancestors_run_up_to_the_global_site_and_subtrees_down_from_a_site() {
    let demo = FederationConfig::embedded_demo();
    assert_eq!(demo.ancestors(&site("edge-zone-a2")), ids(&["region-a-control", "global-control"]));
    assert_eq!(demo.ancestors(&site("edge-zone-c")), ids(&["global-control"]));
    assert!(demo.ancestors(&site("global-control")).is_empty());
    assert!(demo.ancestors(&site("nowhere")).is_empty());

    assert_eq!(demo.subtree(&site("global-control")), ids(&DEMO_ORDER), "depth first, in file order");
    assert_eq!(
        demo.subtree(&site("region-a-control")),
        ids(&["region-a-control", "edge-zone-a1", "edge-zone-a2"])
    );
    assert_eq!(demo.subtree(&site("edge-zone-b1")), ids(&["edge-zone-b1"]));
    assert!(demo.subtree(&site("nowhere")).is_empty());
}

#[test]
fn keys_name_the_sites_and_parents_may_be_named_in_either_document() {
    let text = "\
Federation:
  name: small
  sites:
    edge-zone-a1:
      SyncStrategy:
        upstream: {target: region-a-control, mode: push}
    global-control:
      Authority: {level: global}
    region-a-control:
      Site: {id: region-a-control, trust_domain: region-a, isolation_after: 90s}
      Authority: {level: regional, region: region-a, sync: {upstream: global-control}}
      SyncStrategy:
        downstream: {targets: [edge-zone-a1]}
";
    let federation = FederationConfig::parse(text, "small.yaml", Path::new("/etc/sx")).expect("valid");
    let a1 = federation.get(&site("edge-zone-a1")).expect("a1");
    assert_eq!(a1.parent, Some(site("region-a-control")));
    assert_eq!(a1.config.level, Level::Local, "no Authority document, but an upstream");
    assert_eq!(a1.config.trust_domain, "edge-zone-a1", "the trust domain defaults to the scope");
    assert_eq!(a1.config.isolation_after, config::DEFAULT_ISOLATION_AFTER);
    assert_eq!(a1.config.data_dir, PathBuf::from("/etc/sx/souverix-data"));
    let region = federation.get(&site("region-a-control")).expect("region");
    assert_eq!(region.config.isolation_after.to_string(), "1m30s");
    assert_eq!(region.children, ids(&["edge-zone-a1"]));
    assert_eq!(federation.root().id(), &site("global-control"), "the root need not come first");
    assert_eq!(
        federation.subtree(&site("global-control")),
        ids(&["global-control", "region-a-control", "edge-zone-a1"])
    );
}

/// Asserts that `err` is at `file:line[:column]` about `field`, and its message holds `says`.
fn assert_error(err: &ConfigError, at: &str, field: &str, says: &str) {
    let text = err.to_string();
    assert!(text.contains(&format!("{at}: {field}: ")), "expected `{at}: {field}: ` in:\n{text}");
    assert!(text.contains(says), "expected {says:?} in:\n{text}");
    assert_eq!(err.field(), Some(field), "{text}");
}

#[test]
fn a_parent_that_is_not_in_the_federation_is_refused() {
    assert_error(
        &load_err("federation-bad-unknown-parent.yaml"),
        "federation-bad-unknown-parent.yaml:12:21",
        "Federation.sites.region-a-control.Authority.sync.upstream",
        "`global-contrl` is not a site of this federation; name one of its sites (`global-control`, `region-a-control`)",
    );
}

#[test]
fn a_cycle_of_upstreams_is_refused_and_spelled_out() {
    assert_error(
        &load_err("federation-bad-cycle.yaml"),
        "federation-bad-cycle.yaml:11:26",
        "Federation.sites.region-a-control.Authority.sync.upstream",
        "the upstreams form a cycle, `region-a-control` → `edge-zone-a1` → `region-a-control`",
    );
}

#[test]
fn a_federation_has_exactly_one_global_site() {
    let err = load_err("federation-bad-no-global.yaml");
    assert_error(
        &err,
        "federation-bad-no-global.yaml:4:3",
        "Federation.sites",
        "no site is global; a federation is a tree with exactly one global site at its root",
    );
    assert_error(
        &load_err("federation-bad-two-globals.yaml"),
        "federation-bad-two-globals.yaml:12:16",
        "Federation.sites.global-backup.Authority.level",
        "`global-backup` is global, and so is `global-control` (line 5)",
    );
}

#[test]
fn an_entry_key_that_differs_from_the_site_id_is_refused() {
    assert_error(
        &load_err("federation-bad-key-mismatch.yaml"),
        "federation-bad-key-mismatch.yaml:11:17",
        "Federation.sites.region-a-control.Authority.master",
        "`region-b-control` differs from this entry's key `region-a-control` (line 7)",
    );
    let err = parse_err(
        "Federation:\n  name: f\n  sites:\n    global-control:\n      Site: {id: global}\n      Authority: {level: global}\n",
    );
    assert!(
        err.starts_with("federation.yaml:5:18: Federation.sites.global-control.Site.id: `global` differs from this entry's key `global-control` (line 4)"),
        "{err}"
    );
}

#[test]
fn two_sites_with_one_scope_are_refused() {
    assert_error(
        &load_err("federation-bad-duplicate-scope.yaml"),
        "federation-bad-duplicate-scope.yaml:12:17",
        "Federation.sites.region-a-backup.Authority.region",
        "`region-a` is already the scope of `region-a-control` (line 7)",
    );
}

#[test]
fn a_site_other_than_the_global_one_needs_an_upstream() {
    let err = load_err("federation-bad-no-upstream.yaml");
    assert_error(
        &err,
        "federation-bad-no-upstream.yaml:8",
        "Federation.sites.edge-zone-a1.Authority.sync.upstream",
        "this local site has no upstream; every site but the global one syncs with a parent",
    );
    // The field is absent: the line is that of the nearest field written, with no column.
    assert_eq!(err.location(), Some(config::Location { line: 8, column: None }));
}

#[test]
fn written_downstream_targets_must_be_the_children() {
    assert_error(
        &load_err("federation-bad-targets.yaml"),
        "federation-bad-targets.yaml:11:20",
        "Federation.sites.region-a-control.SyncStrategy.downstream.targets",
        "`edge-zone-a2` is missing, yet this site is its upstream (line 16); a site's downstream targets are its children (`edge-zone-a1`, `edge-zone-a2`)",
    );
    let err = parse_err(
        "Federation:\n  name: f\n  sites:\n    global-control:\n      Authority: {level: global}\n      SyncStrategy:\n        downstream: {targets: [region-a-control, edge-zone-a1]}\n    region-a-control:\n      Authority: {level: regional, sync: {upstream: global-control}}\n    edge-zone-a1:\n      Authority: {level: local, sync: {upstream: region-a-control}}\n",
    );
    assert!(
        err.starts_with("federation.yaml:7:50: Federation.sites.global-control.SyncStrategy.downstream.targets[1]: `edge-zone-a1` is not a child of this site: its upstream is `region-a-control`; a site's downstream targets are its children (`region-a-control`)"),
        "{err}"
    );
}

#[test]
fn a_bad_field_inside_a_site_is_named_by_its_full_path() {
    assert_error(
        &load_err("federation-bad-mode.yaml"),
        "federation-bad-mode.yaml:13:17",
        "Federation.sites.region-a-control.Authority.sync.mode",
        "unknown value `pull`; expected one of `continuous`, `push`, `opportunistic`",
    );
    let cases = [
        (
            "Federation:\n  name: f\n  sites:\n    global-control:\n      Site: {trust_domain: Global}\n",
            "federation.yaml:5:28: Federation.sites.global-control.Site.trust_domain: `Global` is not a trust domain name: it contains `G`",
        ),
        (
            "Federation:\n  name: f\n  sites:\n    global-control:\n      Site:\n        isolation_after: 5\n",
            "federation.yaml:6:26: Federation.sites.global-control.Site.isolation_after: `5` is not a duration",
        ),
        (
            "Federation:\n  name: f\n  sites:\n    global-control:\n      Authority: {levl: global}\n",
            "federation.yaml:5:19: Federation.sites.global-control.Authority.levl: unknown field;",
        ),
        (
            "Federation:\n  name: f\n  sites:\n    global-control:\n      Authority: {master: global-control}\n",
            "federation.yaml:5:7: Federation.sites.global-control.Authority.level: this field is required; add `level:`",
        ),
        (
            "Federation:\n  name: f\n  sites:\n    global-control:\n      Site: {listen: 127.0.0.1:7400}\n",
            "federation.yaml:5:14: Federation.sites.global-control.Site.listen: the listen address is assigned when the federation runs",
        ),
        (
            "Federation:\n  name: f\n  sites:\n    global-control:\n      Site:\n        data_dir: /var/sx\n",
            "federation.yaml:6:9: Federation.sites.global-control.Site.data_dir: the data directory is chosen when the federation runs",
        ),
        (
            "Federation:\n  name: f\n  sites:\n    global-control:\n      Site:\n        peers: {}\n",
            "federation.yaml:6:9: Federation.sites.global-control.Site.peers: peers' addresses are assigned when the federation runs",
        ),
    ];
    for (text, expected) in cases {
        let err = parse_err(text);
        assert!(err.starts_with(expected), "expected {expected:?}\n     got {err:?}");
    }
}

#[test]
fn the_federation_document_itself_is_checked() {
    let cases = [
        ("", "federation.yaml:1: Federation: this field is required; add `Federation:`"),
        ("- a\n", "federation.yaml:1: a federation file is a YAML mapping with one document, `Federation:`"),
        (
            "Site:\n  id: a\n",
            "federation.yaml:1:1: Site: unknown field; expected `Federation` (check its spelling and indentation)",
        ),
        (
            "Federation:\n  name: f\n  site: {}\n",
            "federation.yaml:3:3: Federation.site: unknown field; expected one of `name`, `sites`; did you mean `sites`?",
        ),
        (
            "Federation:\n  sites: {}\n",
            "federation.yaml:1:1: Federation.name: this field is required; add `name:`",
        ),
        (
            "Federation:\n  name: Seed Demo\n  sites: {}\n",
            "federation.yaml:2:9: Federation.name: `Seed Demo` is not a federation name: it contains `S`",
        ),
        ("Federation:\n  name: f\n  sites: {}\n", "federation.yaml:3:10: Federation.sites: lists no sites"),
        (
            "Federation:\n  name: f\n  sites:\n    Global_Control: {}\n",
            "federation.yaml:4:5: Federation.sites.Global_Control: the key names a site, but site id `Global_Control` contains `G`",
        ),
        (
            "Federation:\n  name: f\n  sites:\n    7: {}\n",
            "federation.yaml:3:3: Federation.sites: the key `7` is not a site id",
        ),
        (
            "Federation:\n  name: f\n  sites:\n    global-control: global\n",
            "federation.yaml:4:21: Federation.sites.global-control: a site is a mapping with the documents",
        ),
        ("Federation:\n  name: f\n  sites:\n    g: {}\n    g: {}\n", "federation.yaml:4:5: not valid YAML: "),
    ];
    for (text, expected) in cases {
        let err = parse_err(text);
        assert!(err.starts_with(expected), "expected {expected:?}\n     got {err:?}");
    }
    let missing = Path::new("/nonexistent/federation.yaml");
    let err = FederationConfig::load(missing).unwrap_err().to_string();
    assert!(err.starts_with("/nonexistent/federation.yaml: cannot read the configuration file: "), "{err}");
}

/// The demo, cut at every byte and with characters that matter to YAML put at every few
/// bytes: every broken federation is an error, never a panic.
#[test]
fn mangled_federation_files_are_errors_not_panics() {
    let parse = |text: &str| FederationConfig::parse(text, "f.yaml", Path::new("")).is_err();
    let bytes = EMBEDDED_DEMO.as_bytes();
    let mut errors = 0;
    for i in 0..bytes.len() {
        errors += usize::from(parse(&String::from_utf8_lossy(&bytes[..i])));
        if i % 7 == 0 {
            for replacement in [b':', b' ', b'{', b'"', b'-', b'\n', b'x'] {
                let mut mangled = bytes.to_vec();
                mangled[i] = replacement;
                errors += usize::from(parse(&String::from_utf8_lossy(&mangled)));
            }
        }
    }
    assert!(errors > 1000, "most mangled files are refused ({errors})");
}
