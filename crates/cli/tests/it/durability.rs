use serde_json::Value;

use crate::harness::{Server, ok};

/// Every write the CLI saw acknowledged survives `kill -9` of the server right after it, with
/// its history and its audit entry.
#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--data-dir", "data"]);
    let file = dir.path().join("p.yaml");
    for i in 0..5 {
        std::fs::write(
            &file,
            format!("apiVersion: souverix/v1\nkind: Policy\nmetadata: {{name: fleet-limits, scope: global}}\nspec: {{max_nodes: {i}}}\n"),
        )
        .expect("write");
        ok(server.cli(&["apply", "-f", file.to_str().expect("utf-8")]));
    }
    // Acknowledged: the CLI has exited successfully. Kill the server at once.
    server.kill_9();

    let server = Server::start(dir.path(), &["--data-dir", "data"]);
    let got: Value = serde_json::from_str(&ok(server.cli(&["get", "policy", "fleet-limits", "-o", "json"])))
        .expect("json");
    assert_eq!(got["spec"]["max_nodes"], 4, "the last acknowledged write is current");
    let history: Value =
        serde_json::from_str(&ok(server.cli(&["history", "policy", "fleet-limits", "-o", "json"])))
            .expect("json");
    let items = history["items"].as_array().expect("items");
    assert_eq!(items.len(), 5, "every acknowledged version is in history");
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["spec"]["max_nodes"], i);
    }
    let audit: Value = serde_json::from_str(&ok(server.cli(&["audit", "-o", "json"]))).expect("json");
    let entries: Vec<&Value> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["object"] == "Policy/global/fleet-limits" && e["outcome"] == "applied")
        .collect();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[4]["actor"], "tester");
    assert_eq!(entries[4]["version"], got["metadata"]["version"]);

    // The clock resumed past the last version: a new write is ordered after it.
    let before = got["metadata"]["version"].as_str().expect("version").to_owned();
    std::fs::write(
        &file,
        "apiVersion: souverix/v1\nkind: Policy\nmetadata: {name: fleet-limits, scope: global}\nspec: {max_nodes: 99}\n",
    )
    .expect("write");
    ok(server.cli(&["apply", "-f", file.to_str().expect("utf-8")]));
    let after: Value =
        serde_json::from_str(&ok(server.cli(&["get", "policy", "fleet-limits", "-o", "json"])))
            .expect("json");
    let ts = |v: &str| -> (u64, u64) {
        let hlc = v.split('@').next().expect("hlc");
        let (w, l) = hlc.split_once('.').expect("dot");
        (w.parse().expect("wall"), l.parse().expect("logical"))
    };
    assert!(ts(after["metadata"]["version"].as_str().expect("v")) > ts(&before));
}
