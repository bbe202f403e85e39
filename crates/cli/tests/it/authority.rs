//! Authority and conflicts across the demo federation: who may write what (at write time and
//! at apply time), and conflicting writes that every site resolves alike, losing nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use config::ConflictStrategy;
use model::{Clock, ContentHash, Hlc, Level, ObjectKey, Scope, SiteId, Version, VersionVector};
use replication::LinkState;
use replication::codec::{Batch, Hello};
use serde_json::{Value, json};
use server::SystemClock;
use store::RemoteVersion;

use crate::fed_harness::{Federation, eventually, policy};

const PROPAGATION: Duration = Duration::from_secs(60);
/// The sites that hold `region-a` objects.
const HOLDERS: [&str; 4] = ["global-control", "region-a-control", "edge-zone-a1", "edge-zone-a2"];

async fn put(url: &str, scope: &str, name: &str, spec: Value, author: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .put(format!("{url}/v1/objects/Policy/{scope}/{name}"))
        .header("x-souverix-author", author)
        .json(&policy(scope, name, spec))
        .send()
        .await
        .expect("PUT");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

async fn wait_isolated(fed: &Federation, site: &str) {
    let url = fed.url(site);
    eventually(PROPAGATION, format!("{site} to be isolated"), || async {
        let status = fed.api.sync_status(&url).await;
        if status.isolated {
            Ok(())
        } else {
            Err(format!("{:?}", status.links.iter().map(|l| l.state).collect::<Vec<_>>()))
        }
    })
    .await;
}

/// a1 is cut off long enough to be isolated, overrides a region-a policy; region-a changes the
/// same policy first; the link comes back. Returns (region-a's version, a1's version).
pub(crate) async fn conflicting_writes(fed: &Federation) -> (String, String) {
    let api = &fed.api;
    let (region_a, a1) = (fed.url("region-a-control"), fed.url("edge-zone-a1"));
    fed.wait_connected(PROPAGATION).await;
    api.put_policy(&region_a, "region-a", "limits", json!({"max_pods": 10})).await;
    eventually(PROPAGATION, "a1 to hold the policy", || async {
        api.get_policy(&a1, "region-a", "limits").await.map(|_| ()).ok_or_else(|| "not yet".to_owned())
    })
    .await;

    api.signal(&a1, "region-a-control", "down").await;
    wait_isolated(fed, "edge-zone-a1").await;
    let (status, regional) =
        put(&region_a, "region-a", "limits", json!({"max_pods": 20}), "regional-admin").await;
    assert_eq!(status, 200, "{regional}");
    let (status, local) =
        put(&a1, "region-a", "limits", json!({"max_pods": 5, "reason": "isolated"}), "edge-admin").await;
    assert_eq!(status, 200, "an isolated a1 may override its region's policy: {local}");
    let v_regional = regional["metadata"]["version"].as_str().expect("version").to_owned();
    let v_local = local["metadata"]["version"].as_str().expect("version").to_owned();
    api.signal(&a1, "region-a-control", "up").await;
    (v_regional, v_local)
}

/// Every holder ends with the same current version and both versions in history, and has a
/// conflict record and an audit entry with the same outcome.
async fn assert_converged(fed: &Federation, expected_winner: &str, both: [&str; 2], expected_status: &str) {
    let api = &fed.api;
    for site in HOLDERS {
        let url = fed.url(site);
        eventually(PROPAGATION, format!("{site} to converge on {expected_winner}"), || async {
            let doc =
                api.get_policy(&url, "region-a", "limits").await.ok_or_else(|| "no policy".to_owned())?;
            let current = doc["metadata"]["version"].as_str().unwrap_or_default().to_owned();
            let conflicts = api.get_json(&url, "/v1/conflicts?status=all").await;
            let records = conflicts["items"].as_array().cloned().unwrap_or_default();
            if current == expected_winner && !records.is_empty() {
                Ok(())
            } else {
                Err(format!("current {current}, {} conflict records", records.len()))
            }
        })
        .await;
        let history = api.get_json(&url, "/v1/objects/Policy/region-a/limits/history").await;
        let versions: BTreeSet<&str> = history["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|i| i["version"].as_str())
            .collect();
        for v in both {
            assert!(versions.contains(v), "{site} lost {v}: history holds {versions:?}");
        }
        let conflicts = api.get_json(&url, "/v1/conflicts?status=all").await;
        let record = &conflicts["items"][0];
        assert_eq!(record["winner"], expected_winner, "{site}: {record}");
        assert_eq!(record["status"], expected_status, "{site}: {record}");
        let audit = api.get_json(&url, "/v1/audit?tail=1000").await;
        let audited = audit["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|e| e["action"] == "conflict" && e["object"] == "Policy/region-a/limits");
        assert!(audited, "{site} has no audit entry for the conflict");
    }
}

async fn scenario(strategy: ConflictStrategy) -> (String, String, Federation) {
    let fed = Federation::start_with(move |config| {
        if config.site_id().as_str() == "region-a-control" {
            config.conflicts.strategy = strategy;
        }
    })
    .await;
    let (regional, local) = conflicting_writes(&fed).await;
    (regional, local, fed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_write_wins_picks_the_later_override_everywhere_and_loses_nothing() {
    let (regional, local, fed) = scenario(ConflictStrategy::LastWriteWins).await;
    // a1 wrote after region-a: the later write wins.
    assert_converged(&fed, &local, [&regional, &local], "resolved").await;
    fed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_wins_picks_the_regional_write_everywhere() {
    let (regional, local, fed) = scenario(ConflictStrategy::AuthorityWins).await;
    assert_converged(&fed, &regional, [&regional, &local], "resolved").await;
    fed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_keeps_a_provisional_winner_and_an_open_conflict_until_an_operator_picks() {
    let (regional, local, fed) = scenario(ConflictStrategy::Manual).await;
    assert_converged(&fed, &local, [&regional, &local], "open").await;
    // An operator at global picks the regional version; the pick replicates and closes the
    // conflict everywhere.
    let api = &fed.api;
    let global = fed.url("global-control");
    let conflicts = api.get_json(&global, "/v1/conflicts").await;
    let id = conflicts["items"][0]["id"].as_str().expect("an open conflict").to_owned();
    let resolved =
        api.post_json(&global, &format!("/v1/conflicts/{id}/resolve"), &json!({"pick": regional})).await;
    assert_eq!(resolved["conflict"]["status"], "resolved", "{resolved}");
    assert_eq!(resolved["object"]["spec"], json!({"max_pods": 20}), "{resolved}");
    for site in HOLDERS {
        let url = fed.url(site);
        eventually(PROPAGATION, format!("{site} to apply the pick"), || async {
            let doc =
                api.get_policy(&url, "region-a", "limits").await.ok_or_else(|| "no policy".to_owned())?;
            let record = api.get_json(&url, &format!("/v1/conflicts/{id}")).await;
            let status = record["conflict"]["status"].as_str().unwrap_or_default().to_owned();
            if doc["spec"] == json!({"max_pods": 20}) && status == "resolved" {
                Ok(())
            } else {
                Err(format!("spec {}, conflict {status}", doc["spec"]))
            }
        })
        .await;
    }
    fed.stop().await;
}

/// Write-time authority: a1 may override its region only while isolated; b1 (full autonomy)
/// always; edge-zone-c never writes region A's scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beyond_a_sites_authority_are_refused_with_403_and_audited() {
    let fed = Federation::start().await;
    let api = &fed.api;
    fed.wait_connected(PROPAGATION).await;
    let (a1, b1, c) = (fed.url("edge-zone-a1"), fed.url("edge-zone-b1"), fed.url("edge-zone-c"));

    let (status, problem) = put(&a1, "region-a", "limits", json!({"max_pods": 1}), "edge-admin").await;
    assert_eq!(status, 403, "{problem}");
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.contains("only while isolated") && detail.contains("conditional-autonomy-not-isolated"),
        "{detail}"
    );
    assert!(
        detail.contains("local authority, conditional autonomy"),
        "the refusal names the site's authority: {detail}"
    );
    let audit = api.get_json(&a1, "/v1/audit?tail=10").await;
    let last = audit["items"].as_array().expect("items").last().cloned().expect("an entry");
    assert_eq!(
        (last["outcome"].as_str(), last["actor"].as_str()),
        (Some("refused"), Some("edge-admin")),
        "{last}"
    );
    assert!(api.get_policy(&a1, "region-a", "limits").await.is_none(), "a refused write changes nothing");

    let (status, body) = put(&b1, "region-b", "limits", json!({"max_pods": 3}), "edge-admin").await;
    assert_eq!(status, 201, "b1 has full autonomy: {body}");
    api.signal(&b1, "region-b-control", "down").await;
    let (status, body) = put(&b1, "region-b", "limits", json!({"max_pods": 4}), "edge-admin").await;
    assert_eq!(status, 200, "b1 overrides while cut off too: {body}");

    let (status, problem) = put(&c, "region-a", "limits", json!({"max_pods": 1}), "edge-admin").await;
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["detail"].as_str().expect("detail").contains("does not hold scope `region-a`"),
        "{problem}"
    );
    fed.stop().await;
}

/// Apply-time authority: a version forged to look as if a1 wrote a global policy is refused by
/// the site it is sent to, and audited there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_version_beyond_its_origins_authority_is_refused_on_apply() {
    let fed = Federation::start().await;
    let api = &fed.api;
    fed.wait_connected(PROPAGATION).await;
    let region_a = fed.url("region-a-control");
    let a1 = SiteId::new("edge-zone-a1").expect("id");
    let key = ObjectKey::parse("Policy", "global", "baseline").expect("key");
    let labels = BTreeMap::new();
    let spec = json!({"telnet": "allowed"});
    let mut vv = VersionVector::new();
    vv.increment(&a1);
    let forged = RemoteVersion {
        version: Version {
            hlc: Hlc::new(SystemClock.now_ms(), 0),
            origin: a1.clone(),
            vv,
            author: "mallory".into(),
            content_hash: ContentHash::of(&key, &labels, &spec, false),
            deleted: false,
        },
        key,
        labels,
        spec: model::SpecText::of(&spec),
    };
    let batch = Batch {
        from: a1.clone(),
        to: SiteId::new("region-a-control").expect("id"),
        hello: Hello {
            site: a1.clone(),
            scope: Scope::new("edge-zone-a1").expect("scope"),
            level: Level::Local,
            scopes: BTreeSet::from([Scope::new("edge-zone-a1").expect("scope")]),
            sites: Vec::new(),
        },
        up_to: 0,
        repair: true,
        versions: vec![forged],
    };
    let response = reqwest::Client::new()
        .post(format!("{region_a}/v1/sync/batch"))
        .header("content-type", replication::BATCH_CONTENT_TYPE)
        .body(replication::codec::encode(&batch))
        .send()
        .await
        .expect("POST batch");
    let ack: Value = response.json().await.expect("ack");
    assert_eq!((ack["applied"].as_u64(), ack["refused"].as_u64()), (Some(0), Some(1)), "{ack}");
    assert!(api.get_policy(&region_a, "global", "baseline").await.is_none());
    let audit = api.get_json(&region_a, "/v1/audit?tail=10").await;
    let refused = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["outcome"] == "refused" && e["object"] == "Policy/global/baseline")
        .cloned()
        .expect("an audit entry for the refused version");
    assert_eq!(refused["actor"], "edge-zone-a1");
    assert!(
        refused["detail"].as_str().unwrap_or_default().contains("conditional-autonomy-beyond-parent"),
        "{refused}"
    );
    fed.stop().await;
}

/// An event-stream client at global sees the conflict when the link comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_announces_the_conflict_when_the_link_comes_back() {
    let fed = Federation::start().await;
    let global = fed.url("global-control");
    let mut stream = reqwest::Client::new()
        .get(format!("{global}/v1/events?kinds=conflict"))
        .send()
        .await
        .expect("GET /v1/events");
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let (_, _) = conflicting_writes(&fed).await;
    let restored = Instant::now();
    let mut seen = String::new();
    let deadline = Instant::now() + PROPAGATION;
    while !seen.contains("event: conflict") {
        assert!(Instant::now() < deadline, "no conflict event; stream so far: {seen}");
        match tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => panic!("the stream ended: {seen}"),
            Ok(Err(e)) => panic!("the stream failed: {e}"),
            Err(_) => {}
        }
    }
    println!("conflict event seen at global {} ms after the link came back", restored.elapsed().as_millis());
    assert!(seen.contains("Policy/region-a/limits"), "{seen}");
    let state = fed.api.link(&fed.url("edge-zone-a1"), "region-a-control").await.state;
    assert_ne!(state, LinkState::Isolated);
    fed.stop().await;
}
