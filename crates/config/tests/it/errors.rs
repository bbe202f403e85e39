//! Every refusal names the file, the line (and column) and the field, and says how to fix it.
//! Line numbers are those of the fixtures: check them there when changing a fixture.

use std::path::Path;

use config::{ConfigError, Location, SiteConfig};

use crate::{load_err, parse_err};

/// Asserts that `err` is at `file:line[:column]` about `field`, and its message holds `says`.
fn assert_error(err: &ConfigError, at: &str, field: &str, says: &str) {
    let text = err.to_string();
    assert!(text.contains(&format!("{at}: {field}: ")), "expected `{at}: {field}: ` in:\n{text}");
    assert!(text.contains(says), "expected {says:?} in:\n{text}");
    assert_eq!(err.field(), Some(field), "{text}");
}

#[test]
fn an_unknown_field_is_named_by_its_full_path_with_the_fields_allowed_there() {
    let err = load_err("bad-unknown-field.yaml");
    assert_error(
        &err,
        "bad-unknown-field.yaml:6:5",
        "Authority.autonomy.can_fly",
        "unknown field; expected one of `can_operate_isolated`, `can_modify_policies`, `can_deploy_versions`, `mode`",
    );
    assert_eq!(err.location(), Some(Location { line: 6, column: Some(5) }));
}

#[test]
fn an_unknown_top_level_document_is_refused_with_a_guess() {
    let err = parse_err("Site:\n  id: a\nauthority:\n  level: global\n");
    assert_eq!(
        err,
        "site.yaml:3:1: authority: unknown field; expected one of `Site`, `Authority`, `SyncStrategy`; did you mean `Authority`? (check its spelling and indentation)"
    );
    let err = parse_err("Site:\n  id: a\n  peer:\n    b: http://b\n");
    assert!(
        err.starts_with("site.yaml:3:3: Site.peer: unknown field;") && err.contains("did you mean `peers`?"),
        "{err}"
    );
}

#[test]
fn a_bad_duration_says_how_to_write_one() {
    let err = load_err("bad-duration.yaml");
    assert_error(
        &err,
        "bad-duration.yaml:8:16",
        "SyncStrategy.upstream.frequency",
        "`15x` is not a duration; write a number and a unit (ms, s, m, h, d), such as `15m` or `3.75h`",
    );
    let err = parse_err("Site:\n  id: a\n  max_clock_skew: 5\n");
    assert!(err.starts_with("site.yaml:3:19: Site.max_clock_skew: `5` is not a duration"), "{err}");
}

#[test]
fn a_bad_enum_value_lists_the_values_allowed() {
    let err = load_err("bad-enum.yaml");
    assert_error(
        &err,
        "bad-enum.yaml:9:11",
        "Authority.sync.mode",
        "unknown value `pull`; expected one of `continuous`, `push`, `opportunistic`",
    );
    let err = parse_err("Authority:\n  level: regionl\n  master: a\n");
    assert_eq!(
        err,
        "site.yaml:2:10: Authority.level: unknown value `regionl`; expected one of `global`, `regional`, `local`, `autonomous`; did you mean `regional`?"
    );
    let err = parse_err("Site:\n  id: a\nSyncStrategy:\n  downstream:\n    retry_policy: linear\n");
    assert!(
        err.contains(
            "SyncStrategy.downstream.retry_policy: unknown value `linear`; expected `exponential-backoff`"
        ),
        "{err}"
    );
    let err = parse_err("Site:\n  id: a\nSyncStrategy:\n  conflict_resolution:\n    strategy: lww\n");
    assert!(err.contains("expected one of `last-write-wins`, `authority-wins`, `manual`"), "{err}");
}

#[test]
fn a_site_without_an_id_names_both_places_one_can_go() {
    let err = load_err("bad-no-site-id.yaml");
    // Line 2 is the Authority document (line 1 is a comment); `master` is absent, so no column.
    assert_error(&err, "bad-no-site-id.yaml:2", "Authority.master", "set `Site.id` or `Authority.master`");
    assert_eq!(err.location(), Some(Location { line: 2, column: None }));

    for empty in ["", "# nothing\n", "Site:\n"] {
        let err = parse_err(empty);
        assert!(
            err.starts_with("site.yaml:1: Site.id: the site has no id; set `Site.id` or `Authority.master`"),
            "{err}"
        );
    }
}

#[test]
fn a_yaml_syntax_error_names_the_file_and_line() {
    let err = load_err("bad-yaml-syntax.yaml");
    let text = err.to_string();
    // The quote opened on line 5 swallows the line break; the parser stops on line 6.
    assert!(text.contains("bad-yaml-syntax.yaml:6:17: not valid YAML: "), "{text}");
    assert!(text.contains("at line 5 column 5"), "{text}");
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
    let err = parse_err("Site:\n  id: a\n  id: b\n");
    assert!(
        err.starts_with("site.yaml:2:3: not valid YAML: ") && err.contains("duplicate entry with key \"id\""),
        "{err}"
    );
    let err = parse_err("- a\n- b\n");
    assert!(err.starts_with("site.yaml:1: a site configuration is a YAML mapping"), "{err}");
}

#[test]
fn mismatched_ids_point_at_both_fields() {
    let err = load_err("bad-mismatched-ids.yaml");
    assert_error(
        &err,
        "bad-mismatched-ids.yaml:6:11",
        "Authority.master",
        "`region-b-control` differs from `Site.id` `region-a-control` (line 2)",
    );
    let err = load_err("bad-mismatched-upstream.yaml");
    assert_error(
        &err,
        "bad-mismatched-upstream.yaml:8:13",
        "SyncStrategy.upstream.target",
        "`region-b-control` differs from `Authority.sync.upstream` `region-a-control` (line 5)",
    );
    let err = parse_err(
        "Authority:\n  level: regional\n  region: region-a\n  master: r\nSyncStrategy:\n  region: region-b\n",
    );
    assert!(
        err.starts_with("site.yaml:6:11: SyncStrategy.region: `region-b` differs from `Authority.region` `region-a` (line 3)"),
        "{err}"
    );
}

#[test]
fn the_federation_shape_is_checked() {
    let cases = [
        (
            "Authority:\n  level: global\n  master: g\n  sync:\n    upstream: x\n",
            "site.yaml:5:15: Authority.sync.upstream: a global site has no upstream",
        ),
        (
            "Authority:\n  level: local\n  master: e\nSyncStrategy:\n  upstream:\n    target: e\n",
            "site.yaml:6:13: SyncStrategy.upstream.target: `e` is this site itself; a site cannot be its own upstream",
        ),
        (
            "Site:\n  id: r\nSyncStrategy:\n  downstream:\n    targets: [a, r]\n",
            "site.yaml:5:18: SyncStrategy.downstream.targets[1]: `r` is this site itself",
        ),
        (
            "Site:\n  id: r\nSyncStrategy:\n  upstream:\n    target: g\n  downstream:\n    targets:\n      - a\n      - g\n",
            "site.yaml:9:9: SyncStrategy.downstream.targets[1]: `g` is this site's upstream",
        ),
        (
            "Site:\n  id: r\nSyncStrategy:\n  downstream:\n    targets: [a, b, a]\n",
            "site.yaml:5:21: SyncStrategy.downstream.targets[2]: `a` is listed twice",
        ),
        (
            "Site:\n  id: r\n  peers:\n    r: http://127.0.0.1:7400\n",
            "site.yaml:4:5: Site.peers.r: this is the site itself; a site is not its own peer",
        ),
        (
            "Site:\n  id: r\n  peers:\n    x: http://127.0.0.1:7400\n",
            "site.yaml:4:5: Site.peers.x: `x` is neither this site's upstream nor one of its downstream targets",
        ),
        (
            "Site:\n  id: r\n  peers:\n    a: 127.0.0.1:7401\nSyncStrategy:\n  downstream:\n    targets: [a]\n",
            "site.yaml:4:8: Site.peers.a: `127.0.0.1:7401` is not an http(s) URL; write the peer's base URL, such as `http://127.0.0.1:7401`",
        ),
        (
            "Site:\n  id: r\nSyncStrategy:\n  upstream:\n    frequency: 5m\n",
            "site.yaml:4: SyncStrategy.upstream.target: the upstream section names no target",
        ),
        (
            "Site:\n  id: r\n  scope: global\nAuthority:\n  level: regional\n",
            "site.yaml:3:10: Site.scope: only the global site has scope `global`",
        ),
    ];
    for (text, expected) in cases {
        let err = parse_err(text);
        assert!(err.starts_with(expected), "expected {expected:?}\n     got {err:?}");
    }
}

#[test]
fn bad_values_of_site_fields_say_what_is_expected() {
    let cases = [
        ("Site:\n  id: Region_A\n", "site.yaml:2:7: Site.id: site id `Region_A` contains `R`"),
        (
            "Site:\n  id: a\n  listen: localhost:7400\n",
            "site.yaml:3:11: Site.listen: `localhost:7400` is not a listen address; write an IP address and a port",
        ),
        (
            "Site:\n  id: a\n  max_clock_skew: 0s\n",
            "site.yaml:3:19: Site.max_clock_skew: must be more than zero",
        ),
        ("Site:\n  id: a\n  data_dir: \"\"\n", "site.yaml:3:13: Site.data_dir: must not be empty"),
        (
            "Site:\n  id: a\n  isolation_after: 0s\n",
            "site.yaml:3:20: Site.isolation_after: must be more than zero: every link drops now and then; the default is `5m`",
        ),
        (
            "Site:\n  id: a\n  status_interval: 0s\n",
            "site.yaml:3:20: Site.status_interval: must be more than zero, such as `30s` (the default)",
        ),
        (
            "Site:\n  id: a\n  nodes:\n    delayed_after: 0s\n",
            "site.yaml:4:20: Site.nodes.delayed_after: must be more than zero",
        ),
        (
            "Site:\n  id: a\n  nodes:\n    delayed_after: 1m\n    offline_after: 30s\n",
            "site.yaml:5:20: Site.nodes.offline_after: `offline_after` (30s) must be longer than `delayed_after` (1m)",
        ),
        (
            "Site:\n  id: a\n  nodes:\n    delayed_after: 10m\n",
            "site.yaml:4:20: Site.nodes.delayed_after: `offline_after` (5m) must be longer than `delayed_after` (10m)",
        ),
        (
            "Site:\n  id: a\n  nodes:\n    late_after: 1m\n",
            "site.yaml:4:5: Site.nodes.late_after: unknown field",
        ),
        (
            "Site:\n  id: a\n  isolation_after: soon\n",
            "site.yaml:3:20: Site.isolation_after: `soon` is not a duration",
        ),
        (
            "Site:\n  id: a\n  trust_domain: Region_A\n",
            "site.yaml:3:17: Site.trust_domain: `Region_A` is not a trust domain name: it contains `R`; use lowercase letters, digits and `-`",
        ),
        (
            "Site:\n  id: a\n  trust_domain: -a\n",
            "site.yaml:3:17: Site.trust_domain: `-a` is not a trust domain name: it must start and end with a letter or digit",
        ),
        (
            "Site:\n  id: a\n  trust_domain: \"\"\n",
            "site.yaml:3:17: Site.trust_domain: `` is not a trust domain name: it is empty",
        ),
        (
            "Site:\n  id: a\nSyncStrategy:\n  upstream:\n    target: g\n    batch_size: 0\n",
            "site.yaml:6:17: SyncStrategy.upstream.batch_size: `0` is out of range; write a number from 1 to 10000",
        ),
        (
            "Site:\n  id: a\nSyncStrategy:\n  downstream:\n    frequency: 0s\n",
            "site.yaml:5:16: SyncStrategy.downstream.frequency: must be more than zero",
        ),
        ("Authority:\n  master: a\n", "site.yaml:1:1: Authority.level: this field is required; add `level:`"),
        (
            "Authority: regional\n",
            "site.yaml:1:12: Authority: invalid type: string \"regional\", expected a mapping of fields",
        ),
        (
            "Authority:\n  level: local\n  master: e\n  autonomy:\n    can_operate_isolated: yes\n",
            "site.yaml:5:27: Authority.autonomy.can_operate_isolated: invalid type: string \"yes\", expected a boolean",
        ),
    ];
    for (text, expected) in cases {
        let err = parse_err(text);
        assert!(err.starts_with(expected), "expected {expected:?}\n     got {err:?}");
    }
}

#[test]
fn an_unreadable_file_names_the_path_and_the_os_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nowhere.yaml");
    let err = SiteConfig::load(&missing).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}: cannot read the configuration file: ", missing.display())),
        "{text}"
    );
    assert!(text.contains("No such file or directory"), "{text}");
    assert_eq!(err.location(), None);
    assert_eq!(err.file(), missing.as_path());

    let not_utf8 = dir.path().join("latin1.yaml");
    std::fs::write(&not_utf8, b"Site:\n  id: caf\xe9\n").expect("write");
    let text = SiteConfig::load(&not_utf8).unwrap_err().to_string();
    assert!(text.contains("latin1.yaml: cannot read the configuration file: "), "{text}");
}

#[test]
fn the_file_is_named_as_the_caller_gave_it() {
    let err =
        SiteConfig::parse("Site:\n  id: a\n  bogus: 1\n", Path::new("conf/region-a.yaml"), Path::new("conf"))
            .unwrap_err()
            .to_string();
    assert!(err.starts_with("conf/region-a.yaml:3:3: Site.bogus: unknown field"), "{err}");
}

#[test]
fn an_oversized_file_is_refused_before_it_is_parsed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.yaml");
    let text = format!("Site:\n  id: a\n{}", "# padding\n".repeat(config::MAX_FILE_SIZE / 10 + 1));
    std::fs::write(&big, text).expect("write");
    let err = SiteConfig::load(&big).unwrap_err().to_string();
    assert!(err.contains("big.yaml: the file is larger than 1048576 bytes"), "{err}");
}
