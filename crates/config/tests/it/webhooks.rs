//! `Site.webhooks`: defaults, what `describe` shows, and every refusal with its place.

use config::{EventKind, WebhookConfig};

use crate::{load, parse, parse_err};

#[test]
fn webhooks_are_read_in_file_order_with_their_events_in_kind_order() {
    let config = load("full-site.yaml");
    assert_eq!(
        config.webhooks,
        vec![
            WebhookConfig {
                name: "ops-pager".into(),
                url: "https://hooks.example.com/souverix?team=ops".into(),
                events: vec![EventKind::Conflict, EventKind::Refusal, EventKind::Link],
            },
            WebhookConfig {
                name: "audit-sink".into(),
                url: "http://127.0.0.1:9100/events".into(),
                events: vec![EventKind::Conflict, EventKind::Refusal],
            },
        ],
        "a webhook without `events` hears conflicts and refusals"
    );
    let lines = config.describe();
    assert!(
        lines.contains(
            &"webhook ops-pager to https://hooks.example.com/souverix?team=ops (conflict, refusal, link)"
                .to_owned()
        ),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"webhook audit-sink to http://127.0.0.1:9100/events (conflict, refusal)".to_owned()),
        "{lines:#?}"
    );
}

#[test]
fn a_site_without_webhooks_says_so() {
    let config = parse("Site:\n  id: a\n").expect("valid");
    assert!(config.webhooks.is_empty());
    assert!(config.describe().contains(&"webhooks: none".to_owned()));
    let every = parse(
        "Site:\n  id: a\n  webhooks:\n    - {name: all, url: 'http://h/x', events: [write, delete, conflict, refusal, link]}\n",
    )
    .expect("valid");
    assert_eq!(every.webhooks[0].events, EventKind::ALL.to_vec());
    assert!(every.webhooks[0].wants("delete") && !every.webhooks[0].wants("nothing"));
}

#[test]
fn a_bad_name_is_refused_at_its_value() {
    let err = parse_err("Site:\n  id: a\n  webhooks:\n    - name: Ops_Pager\n      url: http://h/x\n");
    assert_eq!(
        err,
        "site.yaml:4:13: Site.webhooks[0].name: `Ops_Pager` is not a webhook name: it contains `O`; use lowercase letters, digits and `-`, starting and ending with a letter or digit, such as `ops-pager`"
    );
}

#[test]
fn a_name_used_twice_points_at_the_first() {
    let err = parse_err(
        "Site:\n  id: a\n  webhooks:\n    - name: pager\n      url: http://h/x\n    - name: pager\n      url: http://h/y\n",
    );
    assert_eq!(
        err,
        "site.yaml:6:13: Site.webhooks[1].name: `pager` is also the name of the webhook on line 4; each webhook needs its own name"
    );
}

#[test]
fn a_url_that_is_not_http_is_refused_with_an_example() {
    let err = parse_err("Site:\n  id: a\n  webhooks:\n    - name: pager\n      url: hooks.example.com/x\n");
    assert!(
        err.starts_with(
            "site.yaml:5:12: Site.webhooks[0].url: `hooks.example.com/x` is not an http(s) URL; write where to POST events, such as `https://"
        ),
        "{err}"
    );
}

#[test]
fn unknown_and_repeated_events_are_refused() {
    let err = parse_err(
        "Site:\n  id: a\n  webhooks:\n    - name: pager\n      url: http://h/x\n      events: [conflict, conflcts]\n",
    );
    assert!(
        err.starts_with("site.yaml:6:") && err.contains("Site.webhooks[0].events[1]: unknown value `conflcts`; expected one of `write`, `delete`, `conflict`, `refusal`, `link`"),
        "{err}"
    );
    let err = parse_err(
        "Site:\n  id: a\n  webhooks:\n    - name: pager\n      url: http://h/x\n      events: [link, link]\n",
    );
    assert_eq!(err, "site.yaml:6:22: Site.webhooks[0].events[1]: `link` is listed twice; remove one");
    let err = parse_err(
        "Site:\n  id: a\n  webhooks:\n    - name: pager\n      url: http://h/x\n      events: []\n",
    );
    assert!(
        err.starts_with("site.yaml:6:15: Site.webhooks[0].events: lists no events, so the webhook would never be called; list some of `write`,"),
        "{err}"
    );
}

#[test]
fn missing_and_unknown_fields_are_named_by_their_full_path() {
    let err = parse_err("Site:\n  id: a\n  webhooks:\n    - name: pager\n");
    assert!(
        err.starts_with("site.yaml:4:7: Site.webhooks[0].url: this field is required; add `url:`"),
        "{err}"
    );
    let err = parse_err(
        "Site:\n  id: a\n  webhooks:\n    - name: pager\n      url: http://h/x\n      event: [link]\n",
    );
    assert!(
        err.starts_with("site.yaml:6:7: Site.webhooks[0].event: unknown field; expected one of `name`, `url`, `events`; did you mean `events`?"),
        "{err}"
    );
}
