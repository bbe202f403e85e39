//! Federation sync, in one process: the demo's seven sites, each with its own HTTP listener on
//! 127.0.0.1 and its own SQLite file, syncing over real HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use model::{Clock, ContentHash, Hlc, Level, ObjectKey, Scope, SiteId, Version, VersionVector};
use replication::codec::{Batch, Hello};
use replication::{Direction, LinkState, Signal};
use serde_json::{Value, json};
use server::SystemClock;
use store::RemoteVersion;

use crate::fed_harness::{DEMO_SITES, Federation, eventually};
use crate::harness::{cli, ok};

/// Long enough for a push every 2 s to cross two levels of the tree, with room for a slow CI.
const PROPAGATION: Duration = Duration::from_secs(45);

const OUTSIDE_REGION_A: [&str; 3] = ["region-b-control", "edge-zone-b1", "edge-zone-c"];

/// A global policy is readable at all six other sites; a region-a policy reaches a1, a2 and
/// global, and never region-b, b1 or c, even after every link has run a full round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_reach_exactly_the_sites_that_hold_their_scope() {
    let fed = Federation::start().await;
    let api = &fed.api;

    api.put_policy(&fed.url("global-control"), "global", "baseline", json!({"telnet": "denied"})).await;
    api.put_policy(&fed.url("region-a-control"), "region-a", "regional-limits", json!({"max_nodes": 40}))
        .await;

    for id in &DEMO_SITES[1..] {
        let url = fed.url(id);
        eventually(PROPAGATION, format!("the global policy at {id}"), || async {
            match api.get_policy(&url, "global", "baseline").await {
                Some(doc) if doc["spec"]["telnet"] == "denied" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    let regional = api.get_policy(&fed.url("region-a-control"), "region-a", "regional-limits").await;
    let regional_version = regional.expect("written")["metadata"]["version"].clone();
    for id in ["edge-zone-a1", "edge-zone-a2", "global-control"] {
        let url = fed.url(id);
        eventually(PROPAGATION, format!("the region-a policy at {id}"), || async {
            match api.get_policy(&url, "region-a", "regional-limits").await {
                Some(doc) if doc["metadata"]["version"] == regional_version => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    // Every link runs a full round (log and digest exchange) now; still nothing of region-a
    // outside its subtree and global.
    for id in DEMO_SITES {
        api.sync_now(&fed.url(id)).await;
    }
    for id in OUTSIDE_REGION_A {
        let url = fed.url(id);
        assert_eq!(
            api.get_policy(&url, "region-a", "regional-limits").await,
            None,
            "{id} holds a region-a policy"
        );
        assert!(api.policies(&url, "region-a").await.is_empty(), "{id} holds region-a objects");
        assert!(api.get_policy(&url, "global", "baseline").await.is_some(), "{id} lost the global policy");
    }
    fed.stop().await;
}

fn debt(link: &replication::LinkStatus) -> f64 {
    link.debt_seconds.unwrap_or_else(|| panic!("no debt on the link with {}: {link:?}", link.peer))
}

/// a1 cut from region-a: 1,000 writes wait at a1 with a growing debt, a1 isolates itself,
/// region-a reports the link disconnected with an ageing last sync; once restored, all 1,000
/// reach global through region-a and the debt clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_edge_zone_queues_a_thousand_changes_and_drains_them_to_global() {
    const N: usize = 1000;
    let fed = Federation::start().await;
    let api = &fed.api;
    let (a1, region_a, global) =
        (fed.url("edge-zone-a1"), fed.url("region-a-control"), fed.url("global-control"));
    fed.wait_connected(PROPAGATION).await;

    let cut = api.signal(&a1, "region-a-control", "down").await;
    assert_eq!((cut.signal, cut.state), (Signal::Down, LinkState::Disconnected));
    api.put_many(&a1, "edge-zone-a1", "queued", N).await;

    // At a1: every change is pending on its upstream link, and the debt's age grows.
    let up = api.link(&a1, "region-a-control").await;
    assert_eq!(up.direction, Direction::Upstream);
    assert_eq!(up.pending, N as u64, "{up:?}");
    assert!(up.pending_bytes > 0, "{up:?}");
    let first = debt(&up);
    eventually(PROPAGATION, "a1's debt to grow", || async {
        let now = debt(&api.link(&a1, "region-a-control").await);
        if now > first { Ok(()) } else { Err(format!("{now}s, first {first}s")) }
    })
    .await;
    // Cut for longer than `isolation_after` (5 s): a1 runs autonomously.
    eventually(PROPAGATION, "a1 to report itself isolated", || async {
        let isolated = api.sync_status(&a1).await.isolated;
        let state = api.link(&a1, "region-a-control").await.state;
        if isolated && state == LinkState::Isolated { Ok(()) } else { Err(format!("{state}")) }
    })
    .await;

    // At region-a: the link with a1 is disconnected, and its last sync ages.
    eventually(PROPAGATION, "region-a to report its link with a1 disconnected", || async {
        let link = api.link(&region_a, "edge-zone-a1").await;
        if link.state == LinkState::Disconnected && link.last_error.is_some() {
            Ok(())
        } else {
            Err(format!("{link:?}"))
        }
    })
    .await;
    let link = api.link(&region_a, "edge-zone-a1").await;
    assert_eq!(link.direction, Direction::Downstream);
    assert!(link.last_sync.is_some(), "{link:?}");
    let age = link.last_sync_age_seconds.expect("an age of the last sync");
    eventually(PROPAGATION, "the age of region-a's last sync with a1 to grow", || async {
        let link = api.link(&region_a, "edge-zone-a1").await;
        match link.last_sync_age_seconds {
            Some(now) if now > age && link.state == LinkState::Disconnected => Ok(()),
            other => Err(format!("{other:?} ({})", link.state)),
        }
    })
    .await;
    assert_eq!(api.count(&global, "edge-zone-a1").await, 0, "nothing crossed the cut link");

    // Restored: all of it reaches global, through region-a, with the versions a1 wrote.
    api.signal(&a1, "region-a-control", "up").await;
    eventually(PROPAGATION, format!("{N} policies at global"), || async {
        let n = api.count(&global, "edge-zone-a1").await;
        if n == N { Ok(()) } else { Err(format!("{n} of {N}")) }
    })
    .await;
    let written = api.policies(&a1, "edge-zone-a1").await;
    assert_eq!(written.len(), N);
    assert_eq!(api.policies(&global, "edge-zone-a1").await, written, "global holds a1's versions");
    assert_eq!(api.policies(&region_a, "edge-zone-a1").await, written, "region-a holds a1's versions");
    eventually(PROPAGATION, "a1's debt to clear", || async {
        let up = api.link(&a1, "region-a-control").await;
        if up.pending == 0 && up.debt_seconds.is_none() && up.state == LinkState::Connected {
            Ok(())
        } else {
            Err(format!("{up:?}"))
        }
    })
    .await;
    eventually(PROPAGATION, "region-a's link with a1 to be connected again", || async {
        let link = api.link(&region_a, "edge-zone-a1").await;
        if link.state == LinkState::Connected { Ok(()) } else { Err(format!("{link:?}")) }
    })
    .await;
    fed.stop().await;
}

fn id(s: &str) -> SiteId {
    SiteId::new(s).expect("site id")
}

/// A version of `Policy/region-a/<name>` as region-a-control would write it.
fn region_a_version(name: &str, wall_ms: u64, i: u32) -> RemoteVersion {
    let key = ObjectKey::parse("Policy", "region-a", name).expect("key");
    let labels = BTreeMap::from([("source".to_owned(), "replay".to_owned())]);
    let spec = json!({"n": i, "rules": ["a", "b"]});
    let origin = id("region-a-control");
    let mut vv = VersionVector::new();
    vv.increment(&origin);
    RemoteVersion {
        version: Version {
            hlc: Hlc::new(wall_ms, i),
            origin,
            vv,
            author: "tester".into(),
            content_hash: ContentHash::of(&key, &labels, &spec, false),
            deleted: false,
        },
        key,
        labels,
        spec: model::SpecText::of(&spec),
    }
}

/// The same encoded batch posted twice to a1: the second acknowledgement counts only
/// duplicates, and a1's change log, histories and audit log do not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_delivered_twice_changes_nothing_the_second_time() {
    const N: usize = 5;
    let fed = Federation::start().await;
    let api = &fed.api;
    let a1 = fed.url("edge-zone-a1");
    fed.wait_connected(PROPAGATION).await;

    let now = SystemClock.now_ms();
    let names: Vec<String> = (0..N).map(|i| format!("replayed-{i}")).collect();
    let batch = Batch {
        from: id("region-a-control"),
        to: id("edge-zone-a1"),
        hello: Hello {
            site: id("region-a-control"),
            scope: Scope::new("region-a").expect("scope"),
            level: Level::Regional,
            scopes: BTreeSet::from([
                Scope::new("global").expect("scope"),
                Scope::new("region-a").expect("scope"),
            ]),
            // No directory: the receiver keeps what it learned from region-a's real hellos.
            sites: Vec::new(),
        },
        up_to: 1,
        repair: false,
        versions: names
            .iter()
            .enumerate()
            .map(|(i, name)| region_a_version(name, now, u32::try_from(i).expect("small")))
            .collect(),
    };
    let body = replication::codec::encode(&batch);
    let deliver = || async {
        let response = reqwest::Client::new()
            .post(format!("{a1}/v1/sync/batch"))
            .header("content-type", replication::BATCH_CONTENT_TYPE)
            .body(body.clone())
            .send()
            .await
            .expect("POST /v1/sync/batch");
        let status = response.status();
        let ack: Value = response.json().await.expect("an acknowledgement");
        assert!(status.is_success(), "{status}: {ack}");
        ack
    };

    let first = deliver().await;
    assert_eq!(
        (first["applied"].as_u64(), first["duplicates"].as_u64()),
        (Some(N as u64), Some(0)),
        "{first}"
    );
    assert_eq!(first["hello"]["site"], "edge-zone-a1", "{first}");
    let seq = api.last_seq(&a1).await;
    let mut histories = Vec::new();
    for name in &names {
        let doc = api.get_policy(&a1, "region-a", name).await.expect("the replayed policy is readable at a1");
        assert_eq!(doc["metadata"]["origin"], "region-a-control");
        histories.push(api.get_json(&a1, &format!("/v1/objects/Policy/region-a/{name}/history")).await);
    }
    let audit = api.get_json(&a1, "/v1/audit?tail=1000").await;

    let second = deliver().await;
    assert_eq!(
        (second["applied"].as_u64(), second["duplicates"].as_u64()),
        (Some(0), Some(N as u64)),
        "{second}"
    );
    assert_eq!(second["ack"], first["ack"]);
    assert_eq!(api.last_seq(&a1).await, seq, "the second delivery added nothing to a1's change log");
    for (name, before) in names.iter().zip(&histories) {
        let after = api.get_json(&a1, &format!("/v1/objects/Policy/region-a/{name}/history")).await;
        assert_eq!(&after, before, "the history of {name} is unchanged");
        assert_eq!(after["items"].as_array().expect("items").len(), 1);
    }
    assert_eq!(api.get_json(&a1, "/v1/audit?tail=1000").await, audit, "the audit log is unchanged");
    fed.stop().await;
}

/// Copies a site's store files (the database, and its WAL and shared memory if present).
fn copy_store(site: &str, from: &std::path::Path, to: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("{site}.sqlite3{suffix}");
        let _ = std::fs::remove_file(to.join(&name));
        if from.join(&name).exists() {
            std::fs::copy(from.join(&name), to.join(&name)).expect("copy a store file");
        }
    }
}

/// a2 restored from a copy of its store taken before later writes: with no new write, the
/// digest exchange brings back every object it lost, at the versions region-a holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_restored_from_an_old_copy_converges_through_the_digest_exchange() {
    let mut fed = Federation::start().await;
    let api = fed.api.clone();
    let (global, region_a, a2) =
        (fed.url("global-control"), fed.url("region-a-control"), fed.url("edge-zone-a2"));
    fed.wait_connected(PROPAGATION).await;

    for i in 0..5 {
        api.put_policy(&global, "global", &format!("early-{i}"), json!({"v": 1})).await;
    }
    eventually(PROPAGATION, "the early policies at a2", || async {
        let n = api.count(&a2, "global").await;
        if n == 5 { Ok(()) } else { Err(format!("{n} of 5")) }
    })
    .await;

    // The backup: a copy of a2's store while it is stopped.
    let backup = tempfile::tempdir().expect("a backup directory");
    fed.stop_site("edge-zone-a2").await;
    copy_store("edge-zone-a2", fed.data_dir(), backup.path());
    fed.start_site("edge-zone-a2").await;

    // After the backup: new objects and rewrites from global and region-a, and one a2 wrote.
    for i in 0..5 {
        api.put_policy(&global, "global", &format!("late-{i}"), json!({"v": 1})).await;
    }
    for i in 0..3 {
        api.put_policy(&global, "global", &format!("early-{i}"), json!({"v": 2})).await;
    }
    for i in 0..5 {
        api.put_policy(&region_a, "region-a", &format!("regional-{i}"), json!({"v": 1})).await;
    }
    api.put_policy(&a2, "edge-zone-a2", "local", json!({"v": 1})).await;
    let held = |scopes: &'static [&'static str], url: String| {
        let api = api.clone();
        async move {
            let mut all = BTreeMap::new();
            for scope in scopes {
                for (name, version) in api.policies(&url, scope).await {
                    all.insert(format!("{scope}/{name}"), version);
                }
            }
            all
        }
    };
    const SCOPES: &[&str] = &["global", "region-a", "edge-zone-a2"];
    eventually(PROPAGATION, "a2 and region-a to agree before the restore", || async {
        let (at_a2, at_region) = (held(SCOPES, a2.clone()).await, held(SCOPES, region_a.clone()).await);
        if at_a2 == at_region && at_a2.len() == 16 {
            Ok(())
        } else {
            Err(format!("{at_a2:?} vs {at_region:?}"))
        }
    })
    .await;
    let converged = held(SCOPES, region_a.clone()).await;
    let repaired_before = api.link(&region_a, "edge-zone-a2").await.repaired_versions;

    // Restore the old copy: a2 has lost every version it accepted after the backup, while its
    // neighbours' cursors say it has them. Only the digest exchange can find out. Region-a
    // holds its link with a2 cut meanwhile, so the test sees a2 as restored before it heals.
    api.signal(&region_a, "edge-zone-a2", "down").await;
    fed.stop_site("edge-zone-a2").await;
    copy_store("edge-zone-a2", backup.path(), fed.data_dir());
    fed.start_site("edge-zone-a2").await;
    let restored = held(SCOPES, a2.clone()).await;
    assert_eq!(restored.len(), 5, "the restored copy holds only the early policies: {restored:?}");
    api.signal(&region_a, "edge-zone-a2", "up").await;

    eventually(PROPAGATION, "a2 to converge with region-a again", || async {
        let at_a2 = held(SCOPES, a2.clone()).await;
        if at_a2 == converged {
            Ok(())
        } else {
            let missing: Vec<&String> =
                converged.iter().filter(|(k, v)| at_a2.get(*k) != Some(v)).map(|(k, _)| k).collect();
            Err(format!("a2 differs on {missing:?}"))
        }
    })
    .await;
    let repaired = api.link(&region_a, "edge-zone-a2").await.repaired_versions;
    assert!(repaired > repaired_before, "region-a repaired a2 through the digest exchange ({repaired})");
    let early = api.get_policy(&a2, "global", "early-0").await.expect("early-0");
    assert_eq!(early["spec"]["v"], 2, "the rewrite after the backup is current again");
    fed.stop().await;
}

/// The cells of a table line: columns are separated by at least two spaces.
fn cells(line: &str) -> Vec<String> {
    line.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect()
}

/// The rows of a `sync status` table after its header, by peer, as cells.
fn rows(table: &str) -> BTreeMap<String, Vec<String>> {
    table.lines().skip(1).map(cells).filter_map(|c| Some((c.first()?.clone(), c))).collect()
}

async fn souverix(server: &str, args: &'static [&'static str]) -> String {
    let server = server.to_owned();
    tokio::task::spawn_blocking(move || ok(cli(&["--server", &server], args))).await.expect("the CLI ran")
}

/// `souverix sync status` at each demo site: a table with a row per link (direction, mode,
/// state, pending, debt, last sync); a link cut with `souverix link` shows its signal and debt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_status_prints_each_sites_links_with_state_debt_and_last_sync() {
    let fed = Federation::start().await;
    fed.wait_connected(PROPAGATION).await;
    let expected: [(&str, &[(&str, &str)]); 7] = [
        (
            "global-control",
            &[
                ("edge-zone-c", "downstream"),
                ("region-a-control", "downstream"),
                ("region-b-control", "downstream"),
            ],
        ),
        (
            "region-a-control",
            &[("global-control", "upstream"), ("edge-zone-a1", "downstream"), ("edge-zone-a2", "downstream")],
        ),
        ("edge-zone-a1", &[("region-a-control", "upstream")]),
        ("edge-zone-a2", &[("region-a-control", "upstream")]),
        ("region-b-control", &[("global-control", "upstream"), ("edge-zone-b1", "downstream")]),
        ("edge-zone-b1", &[("region-b-control", "upstream")]),
        ("edge-zone-c", &[("global-control", "upstream")]),
    ];
    for (site, links) in expected {
        let out = souverix(&fed.url(site), &["sync", "status"]).await;
        let header = cells(out.lines().next().unwrap_or_default());
        assert_eq!(
            header,
            ["PEER", "DIRECTION", "MODE", "STATE", "PENDING", "DEBT", "LAST SYNC", "ERROR"],
            "{site}:\n{out}"
        );
        let rows = rows(&out);
        assert_eq!(rows.len(), links.len(), "{site}: one row per link:\n{out}");
        for (peer, direction) in links {
            let row = rows.get(*peer).unwrap_or_else(|| panic!("{site}: no row for {peer}:\n{out}"));
            assert_eq!(row[1], *direction, "{site}: {row:?}");
            assert_eq!(row[3], "connected", "{site}: {row:?}");
            assert_eq!(row[4], "0 (0 B)", "{site}: nothing pending: {row:?}");
            assert_eq!(row[5], "-", "{site}: no debt: {row:?}");
            assert!(row[6].ends_with("s ago"), "{site}: a last sync: {row:?}");
        }
        if site == "region-a-control" {
            assert_eq!(rows["global-control"][2], "continuous every 15s", "{out}");
            assert_eq!(rows["edge-zone-a1"][2], "push every 2s", "{out}");
        }
    }

    // Cut with the CLI: a1's row shows the signal, the pending change and its debt.
    let a1 = fed.url("edge-zone-a1");
    let said = souverix(&a1, &["link", "region-a-control", "down"]).await;
    assert!(said.contains("link with region-a-control is disconnected (signal down)"), "{said}");
    fed.api.put_policy(&a1, "edge-zone-a1", "pending-one", json!({})).await;
    let out = souverix(&a1, &["sync", "status"]).await;
    let row = rows(&out).remove("region-a-control").unwrap_or_else(|| panic!("no upstream row:\n{out}"));
    assert!(row[3].ends_with("(signal down)"), "{row:?}");
    assert!(row[4].starts_with("1 (") && row[4] != "1 (0 B)", "one change pending: {row:?}");
    let debt = row[5].strip_suffix('s').and_then(|s| s.parse::<u64>().ok());
    assert!(debt.is_some(), "a debt in seconds: {row:?}");
    fed.stop().await;
}
