//! The fleet end to end: `souverix agent simulate` and `souverix agent run` processes
//! heartbeating to the demo federation's zone sites (in this process), and `souverix view`,
//! `nodes` and `drift` reading what the sites make of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::fed_harness::{Federation, eventually};
use crate::harness::{BIN, cli, ok};

const DEADLINE: Duration = Duration::from_secs(60);

/// The demo federation with thresholds short enough for a test: nodes are delayed after 3 s
/// without a heartbeat.
async fn federation() -> Federation {
    Federation::start_with(|config| {
        config.nodes.delayed_after = config::Duration::from_secs(3);
        config.nodes.offline_after = config::Duration::from_secs(60);
        config.status_interval = config::Duration::from_secs(1);
    })
    .await
}

/// A `souverix agent ...` process, killed when dropped; its output goes to files.
struct AgentProcess {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    fn start(server: &str, args: &[&str]) -> AgentProcess {
        let dir = tempfile::tempdir().expect("a directory for the output");
        let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let child = Command::new(BIN)
            .args(["--server", server, "agent"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(std::fs::File::create(&stdout).expect("stdout file")))
            .stderr(Stdio::from(std::fs::File::create(&stderr).expect("stderr file")))
            .spawn()
            .expect("spawn souverix agent");
        AgentProcess { child, stdout, stderr, _dir: dir }
    }

    /// `souverix agent simulate` with a 1 s interval and no apply delay.
    fn simulate(server: &str, prefix: &str, nodes: usize, delayed: usize, failure_rate: f64) -> AgentProcess {
        let (nodes, delayed, failure_rate) =
            (nodes.to_string(), delayed.to_string(), failure_rate.to_string());
        AgentProcess::start(
            server,
            &[
                "simulate",
                "--nodes",
                &nodes,
                "--prefix",
                prefix,
                "--interval",
                "1s",
                "--apply-delay",
                "0ms",
                "--delayed",
                &delayed,
                "--delayed-period",
                "20s",
                "--failure-rate",
                &failure_rate,
            ],
        )
    }

    fn output(&self) -> (String, String) {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        (read(&self.stdout), read(&self.stderr))
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a CLI command against `url` on a blocking thread.
async fn souverix(url: &str, args: &[&str]) -> Result<String, String> {
    let url = url.to_owned();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = cli(&["--server", &url], &args);
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    })
    .await
    .expect("the CLI thread")
}

/// Items of a printed view: item name → its lines (without the tree drawing), checking that
/// every line is drawn as the seed draws it.
fn items(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut lines = text.lines();
    lines.next().expect("a title");
    let mut items: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in lines {
        if let Some(name) = line.strip_prefix("├── ").or_else(|| line.strip_prefix("└── ")) {
            current = name.to_owned();
            items.insert(current.clone(), Vec::new());
        } else {
            let rest = ["│   ├── ", "│   └── ", "    ├── ", "    └── "]
                .iter()
                .find_map(|p| line.strip_prefix(p))
                .unwrap_or_else(|| panic!("`{line}` is not drawn like the seed's views:\n{text}"));
            items.get_mut(&current).expect("a line under an item").push(rest.to_owned());
        }
    }
    items
}

fn lines(of: &[&str]) -> Vec<String> {
    of.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_fleet_shows_in_the_seeds_global_and_region_views() {
    let fed = federation().await;
    fed.wait_connected(DEADLINE).await;
    let _fleet = [
        AgentProcess::simulate(&fed.url("edge-zone-a1"), "a1-node", 25, 0, 0.0),
        AgentProcess::simulate(&fed.url("edge-zone-a2"), "a2-node", 25, 2, 0.0),
        AgentProcess::simulate(&fed.url("edge-zone-b1"), "b1-node", 40, 0, 0.0),
        AgentProcess::simulate(&fed.url("edge-zone-c"), "c-node", 15, 0, 0.0),
    ];
    let global = fed.url("global-control");

    eventually(DEADLINE, "the global view to count the seed's fleet", || async {
        let text = souverix(&global, &["view"]).await?;
        if !text.starts_with("Global Fleet View\n") {
            return Err(text);
        }
        let found = items(&text);
        let expected = BTreeMap::from([
            (
                "Region A".to_owned(),
                lines(&["Nodes: 50", "Status: Healthy", "Drift: 0 objects", "Authority: Regional"]),
            ),
            (
                "Region B".to_owned(),
                lines(&["Nodes: 40", "Status: Healthy", "Drift: 0 objects", "Authority: Regional"]),
            ),
            ("Edge Zone C".to_owned(), lines(&["Nodes: 15", "Status: Live", "Authority: Autonomous"])),
        ]);
        if found == expected { Ok(()) } else { Err(text) }
    })
    .await;

    eventually(DEADLINE, "the region view to show a2's two delayed nodes", || async {
        let text = souverix(&global, &["view", "--site", "region-a-control"]).await?;
        let expected = "\
Region A View
├── Edge Zone A1
│   ├── Nodes: 25
│   ├── Status: Live
│   └── Authority: Local
└── Edge Zone A2
    ├── Nodes: 25
    ├── Status: Live (23/25), Delayed (2/25)
    └── Authority: Local
";
        if text == expected { Ok(()) } else { Err(text) }
    })
    .await;

    // The same view as JSON, and the nodes behind it.
    let json: Value =
        serde_json::from_str(&souverix(&global, &["view", "-o", "json"]).await.expect("view -o json"))
            .expect("JSON");
    assert_eq!(json["title"], "Global Fleet View");
    let delayed = souverix(&fed.url("edge-zone-a2"), &["nodes", "--status", "Delayed", "-o", "json"])
        .await
        .expect("nodes --status Delayed");
    let delayed: Value = serde_json::from_str(&delayed).expect("JSON");
    let ids: Vec<&str> =
        delayed.as_array().expect("a list").iter().map(|n| n["node"].as_str().expect("an id")).collect();
    assert_eq!(ids, ["a2-node-24", "a2-node-25"]);
    let some = souverix(&fed.url("edge-zone-a2"), &["nodes", "--limit", "3"]).await.expect("nodes --limit");
    assert_eq!(some.lines().count(), 4, "a header and three nodes:\n{some}");
    fed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_fail_to_apply_a_policy_show_as_drift_until_they_catch_up() {
    let fed = federation().await;
    fed.wait_connected(DEADLINE).await;
    let a1 = fed.url("edge-zone-a1");
    let written =
        fed.api.put_policy(&fed.url("global-control"), "global", "drift-check", json!({"v": 1})).await;
    let version = written["metadata"]["version"].as_str().expect("a version").to_owned();
    let failing = AgentProcess::simulate(&a1, "a1-node", 3, 0, 1.0);

    eventually(DEADLINE, "drift at the zone, its region and global", || async {
        let report: Value = serde_json::from_str(&souverix(&a1, &["drift", "-o", "json"]).await?)
            .map_err(|e| e.to_string())?;
        let objects = report["objects"].as_array().cloned().unwrap_or_default();
        let ours = objects.iter().find(|o| o["object"] == "Policy/global/drift-check");
        let drifting = ours
            .map(|o| o["desired"] == version.as_str() && o["nodes"].as_array().is_some_and(|n| n.len() == 3));
        if drifting != Some(true) {
            return Err(format!("zone drift: {report}"));
        }
        let region = souverix(&fed.url("global-control"), &["view", "--site", "region-a-control"]).await?;
        if !region.contains("├── Drift: 1 objects") {
            return Err(region);
        }
        let global = souverix(&fed.url("global-control"), &["view"]).await?;
        if items(&global).get("Region A").is_none_or(|l| !l.contains(&"Drift: 1 objects".to_owned())) {
            return Err(global);
        }
        Ok(())
    })
    .await;
    // `--site` names a neighbour of the site asked: region A answers for its zone a1.
    let table =
        souverix(&fed.url("region-a-control"), &["drift", "--site", "edge-zone-a1"]).await.expect("drift");
    assert!(table.contains("Policy/global/drift-check"), "{table}");
    assert!(table.ends_with("edge-zone-a1: 1 objects drifting\n"), "{table}");

    // The same nodes, now applying: the drift goes away everywhere.
    drop(failing);
    let _healthy = AgentProcess::simulate(&a1, "a1-node", 3, 0, 0.0);
    eventually(DEADLINE, "the drift to disappear at global", || async {
        let global = souverix(&fed.url("global-control"), &["view"]).await?;
        let zone = souverix(&a1, &["drift"]).await?;
        let caught_up =
            items(&global).get("Region A").is_some_and(|l| l.contains(&"Drift: 0 objects".to_owned()))
                && zone.ends_with("edge-zone-a1: 0 objects drifting\n");
        if caught_up { Ok(()) } else { Err(format!("{global}\n{zone}")) }
    })
    .await;
    fed.stop().await;
}

fn applied_version(dir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("Policy/global").join(format!("{name}.json"))).ok()?;
    let document: Value = serde_json::from_str(&text).ok()?;
    document["metadata"]["version"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agent_writes_files_follows_updates_and_keeps_them_while_its_site_is_down() {
    let mut fed = federation().await;
    fed.wait_connected(DEADLINE).await;
    let (global, a1) = (fed.url("global-control"), fed.url("edge-zone-a1"));
    let apply = tempfile::tempdir().expect("an apply directory");
    let dir = apply.path().to_str().expect("utf-8").to_owned();
    let run = ["run", "--node-id", "a1-node-99", "--apply-dir", dir.as_str(), "--interval", "1s"];
    let agent = AgentProcess::start(&a1, &run);

    let first = fed.api.put_policy(&global, "global", "agent-file", json!({"v": 1})).await;
    let v1 = first["metadata"]["version"].as_str().expect("a version").to_owned();
    eventually(DEADLINE, "the policy written as a file", || async {
        let found = applied_version(apply.path(), "agent-file");
        if found.as_deref() == Some(v1.as_str()) {
            Ok(())
        } else {
            Err(format!("{found:?}; {:?}", agent.output()))
        }
    })
    .await;
    let second = fed.api.put_policy(&global, "global", "agent-file", json!({"v": 2})).await;
    let v2 = second["metadata"]["version"].as_str().expect("a version").to_owned();
    eventually(DEADLINE, "the update written", || async {
        let found = applied_version(apply.path(), "agent-file");
        if found.as_deref() == Some(v2.as_str()) { Ok(()) } else { Err(format!("{found:?}")) }
    })
    .await;

    // The site stops, and the agent restarts while it is down: it reads back what it applied,
    // fails its rounds, and keeps its files.
    fed.stop_site("edge-zone-a1").await;
    drop(agent);
    let agent = AgentProcess::start(&a1, &run);
    eventually(DEADLINE, "the restarted agent to find the site down", || async {
        let (stdout, stderr) = agent.output();
        if stdout.contains("(1 objects applied before)") && stderr.contains("keeping what is applied") {
            Ok(())
        } else {
            Err(format!("{stdout}{stderr}"))
        }
    })
    .await;
    assert_eq!(applied_version(apply.path(), "agent-file").as_deref(), Some(v2.as_str()), "the file stays");

    // Back up: its next heartbeat reports the version it applied before the restart.
    fed.start_site("edge-zone-a1").await;
    eventually(DEADLINE, "the site to hear the last applied version", || async {
        let nodes: Value = serde_json::from_str(&souverix(&a1, &["nodes", "-o", "json"]).await?)
            .map_err(|e| e.to_string())?;
        let node = nodes.as_array().and_then(|n| n.iter().find(|n| n["node"] == "a1-node-99")).cloned();
        match node {
            Some(n) if n["applied"]["Policy/global/agent-file"] == v2.as_str() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    drop(agent);
    ok(cli(&["--server", &a1], &["nodes"]));
    fed.stop().await;
}

/// Parses a printed age such as `42s`, `12.5m` or `3.75h` into seconds.
fn age_seconds(text: &str) -> Option<f64> {
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: f64 = number.parse().ok()?;
    Some(match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    })
}

/// Three of a2's nodes go quiet: after the threshold the region view shows `Delayed (5/25)`.
/// Edge zone C is cut off: the global view shows it `Autonomous` with a growing sync debt, in the
/// seed's exact layout and order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_nodes_and_a_cut_zone_show_in_the_seeds_views() {
    let fed = federation().await;
    fed.wait_connected(DEADLINE).await;
    let (a2, c, global) = (fed.url("edge-zone-a2"), fed.url("edge-zone-c"), fed.url("global-control"));
    let _a1 = AgentProcess::simulate(&fed.url("edge-zone-a1"), "a1-node", 25, 0, 0.0);
    let _a2 = AgentProcess::simulate(&a2, "a2-node", 22, 2, 0.0);
    let quiet = AgentProcess::simulate(&a2, "a2-quiet", 3, 0, 0.0);
    let _b1 = AgentProcess::simulate(&fed.url("edge-zone-b1"), "b1-node", 40, 0, 0.0);
    let _c = AgentProcess::simulate(&c, "c-node", 15, 0, 0.0);

    let region_view = |delayed: usize| {
        format!(
            "Region A View\n├── Edge Zone A1\n│   ├── Nodes: 25\n│   ├── Status: Live\n│   └── Authority: Local\n\
             └── Edge Zone A2\n    ├── Nodes: 25\n    ├── Status: Live ({}/25), Delayed ({delayed}/25)\n    └── Authority: Local\n",
            25 - delayed
        )
    };
    eventually(DEADLINE, "a2 with its two delayed nodes", || async {
        let text = souverix(&global, &["view", "--site", "region-a-control"]).await?;
        if text == region_view(2) { Ok(()) } else { Err(text) }
    })
    .await;
    drop(quiet);
    eventually(DEADLINE, "a2 with five delayed nodes once three went quiet", || async {
        let text = souverix(&global, &["view", "--site", "region-a-control"]).await?;
        if text == region_view(5) { Ok(()) } else { Err(text) }
    })
    .await;

    // Cut edge-zone-c from global at c; global keeps c's last figures, with their age.
    fed.api.signal(&c, "global-control", "down").await;
    let zone_c = |text: &str| -> Option<f64> {
        let tail = text.split("└── Edge Zone C\n").nth(1)?;
        let expected_head = "    ├── Nodes: 15\n    ├── Status: Autonomous\n    ├── Sync Debt: ";
        let rest = tail.strip_prefix(expected_head)?;
        let (age, after) = rest.split_once('\n')?;
        (after == "    └── Authority: Autonomous\n").then_some(())?;
        age_seconds(age)
    };
    eventually(DEADLINE, "global to show edge-zone-c autonomous with a sync debt", || async {
        let text = souverix(&global, &["view"]).await?;
        let head_ok =
            text.starts_with("Global Fleet View\n├── Region A\n") && text.contains("\n├── Region B\n");
        if head_ok && zone_c(&text).is_some() { Ok(()) } else { Err(text) }
    })
    .await;
    let first_debt = zone_c(&souverix(&global, &["view"]).await.expect("view")).expect("zone C's debt");
    eventually(DEADLINE, "edge-zone-c's sync debt to grow", || async {
        let text = souverix(&global, &["view"]).await?;
        match zone_c(&text) {
            Some(debt) if debt > first_debt => Ok(()),
            _ => Err(format!("first {first_debt}s:\n{text}")),
        }
    })
    .await;
    fed.stop().await;
}
