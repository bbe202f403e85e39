//! Federation sync between real `souverix serve --config <site file>` processes: each site of
//! the demo topology on its own port, with its own SQLite file, killed with SIGKILL and
//! restarted from the same file.

use std::time::{Duration, Instant};

use replication::LinkState;
use serde_json::json;

use crate::fed_harness::{Api, ProcessFederation, eventually};

const DEADLINE: Duration = Duration::from_secs(45);

const GLOBAL: &str = "global-control";
const REGION_A: &str = "region-a-control";
const A1: &str = "edge-zone-a1";

/// Starts global, region-a and a1 and waits until a1 and region-a have synced with their
/// parents, so each knows the scopes of its neighbours.
async fn start_global_region_a_a1() -> ProcessFederation {
    let mut fed = ProcessFederation::new();
    for id in [GLOBAL, REGION_A, A1] {
        fed.start(id);
    }
    let api = fed.api.clone();
    let (region_a, a1) = (fed.url(REGION_A), fed.url(A1));
    eventually(DEADLINE, "region-a to learn a1's scope", || async {
        let link = api.link(&region_a, A1).await;
        if link.peer_scopes.iter().any(|s| s == A1) { Ok(()) } else { Err(format!("{link:?}")) }
    })
    .await;
    for (url, peer) in [(&a1, REGION_A), (&region_a, GLOBAL)] {
        eventually(DEADLINE, format!("the link with {peer} to be connected"), || async {
            let link = api.link(url, peer).await;
            if link.state == LinkState::Connected { Ok(()) } else { Err(format!("{link:?}")) }
        })
        .await;
    }
    fed
}

async fn wait_for_count(api: &Api, url: &str, scope: &str, n: usize, what: &str) {
    eventually(DEADLINE, what, || async {
        let found = api.count(url, scope).await;
        if found == n { Ok(()) } else { Err(format!("{found} of {n}")) }
    })
    .await;
}

/// 1,000 changes queued at a cut a1; the link is restored and region-a is killed with -9 as soon
/// as global holds part of them, then restarted from the same file: all 1,000 reach global.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_reaches_global_although_region_a_is_killed_mid_drain() {
    const N: usize = 1000;
    let mut fed = start_global_region_a_a1().await;
    let api = fed.api.clone();
    let (global, a1) = (fed.url(GLOBAL), fed.url(A1));

    api.signal(&a1, REGION_A, "down").await;
    api.put_many(&a1, A1, "backlog", N).await;
    assert_eq!(api.link(&a1, REGION_A).await.pending, N as u64);
    let before = api.last_seq(&global).await;

    // Restore the link and kill region-a as soon as global has received part of the backlog.
    api.signal(&a1, REGION_A, "up").await;
    let start = Instant::now();
    loop {
        let seq = api.try_last_seq(&global).await.expect("global answers");
        if seq > before {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "global received nothing of the backlog");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fed.kill_9(REGION_A);
    let at_kill = api.count(&global, A1).await;
    assert!(at_kill < N, "region-a was killed before global held everything ({at_kill} of {N})");

    fed.start(REGION_A);
    wait_for_count(&api, &global, A1, N, "the whole backlog at global").await;
    assert_eq!(api.policies(&global, A1).await, api.policies(&a1, A1).await, "global holds a1's versions");
    eventually(DEADLINE, "a1's debt to clear", || async {
        let up = api.link(&a1, REGION_A).await;
        if up.pending == 0 && up.debt_seconds.is_none() { Ok(()) } else { Err(format!("{up:?}")) }
    })
    .await;
    eprintln!(
        "killed region-a with {at_kill} of {N} at global; all there {:?} after the restore",
        start.elapsed()
    );
}

/// Store-and-forward: written at a1 while global is down, held by region-a, delivered to global
/// when it comes back, with a1 killed by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_global_through_region_a_while_its_origin_is_down() {
    let mut fed = start_global_region_a_a1().await;
    let api = fed.api.clone();
    let (global, region_a, a1) = (fed.url(GLOBAL), fed.url(REGION_A), fed.url(A1));

    fed.kill_9(GLOBAL);
    let mut written = Vec::new();
    for i in 0..3 {
        let doc = api.put_policy(&a1, A1, &format!("while-global-down-{i}"), json!({"i": i})).await;
        written.push(doc["metadata"]["version"].as_str().expect("a version").to_owned());
    }
    wait_for_count(&api, &region_a, A1, 3, "region-a to hold a1's changes").await;
    let waiting = api.link(&region_a, GLOBAL).await;
    assert_eq!(waiting.pending, 3, "region-a holds them for global: {waiting:?}");
    assert_ne!(waiting.state, LinkState::Connected, "{waiting:?}");

    fed.kill_9(A1);
    fed.start(GLOBAL);
    wait_for_count(&api, &global, A1, 3, "a1's changes at global").await;
    let at_global: Vec<String> = api.policies(&global, A1).await.into_values().collect();
    assert_eq!(at_global, written, "global holds the versions a1 wrote");
    assert!(!fed.is_running(A1), "a1 stayed down");
    assert!(api.try_last_seq(&a1).await.is_none(), "a1 does not answer");
    eventually(DEADLINE, "region-a's debt to global to clear", || async {
        let up = api.link(&region_a, GLOBAL).await;
        if up.pending == 0 && up.state == LinkState::Connected { Ok(()) } else { Err(format!("{up:?}")) }
    })
    .await;
}

/// A site that restarts with changes queued in its log sends them at once, not after its
/// link's next period (10 s for a continuous link, `frequency` for a push link).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_site_forwards_its_backlog_at_once() {
    let mut fed = start_global_region_a_a1().await;
    let api = fed.api.clone();
    let (global, region_a) = (fed.url(GLOBAL), fed.url(REGION_A));
    fed.kill_9(GLOBAL);
    for i in 0..10 {
        api.put_policy(&region_a, "region-a", &format!("queued-{i}"), json!({"i": i})).await;
    }
    assert_eq!(api.link(&region_a, GLOBAL).await.pending, 10);
    fed.kill_9(REGION_A);
    fed.start(GLOBAL);
    fed.start(REGION_A);
    let restarted = Instant::now();
    eventually(Duration::from_secs(5), "region-a's backlog at global within 5 s of its restart", || async {
        let found = api.count(&global, "region-a").await;
        if found == 10 { Ok(()) } else { Err(format!("{found} of 10")) }
    })
    .await;
    eprintln!("region-a's backlog reached global {:?} after its restart", restarted.elapsed());
}
