use std::time::Duration;

use serde_json::Value;

use crate::harness::{Server, cli, config_fixture, ok, stderr, stdout, wait_until};

const BASELINE: &str = "\
apiVersion: souverix/v1
kind: Policy
metadata:
  name: baseline-security
  scope: global
  labels:
    team: security
    tier: baseline
spec:
  ssh:
    password_auth: false
    ports: [22, 2222]
  telnet: denied
  max_sessions: 10
";

#[test]
fn a_policy_applied_with_the_cli_reads_back_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--data-dir", "data"]);
    let file = dir.path().join("baseline.yaml");
    std::fs::write(&file, BASELINE).expect("write file");

    let applied = ok(server.cli(&["apply", "-f", file.to_str().expect("utf-8")]));
    assert!(applied.starts_with("Policy/global/baseline-security created (version "), "{applied}");

    let got: Value =
        serde_json::from_str(&ok(server.cli(&["get", "policy", "baseline-security", "-o", "json"])))
            .expect("get -o json prints JSON");
    let original: Value = serde_yaml_ng::from_str(BASELINE).expect("fixture is YAML");
    assert_eq!(got["spec"], original["spec"]);
    assert_eq!(got["metadata"]["labels"], original["metadata"]["labels"]);
    assert_eq!(got["metadata"]["author"], "tester");

    // YAML output applies again unchanged: the server's fields are ignored on input.
    let yaml = ok(server.cli(&["get", "policy", "baseline-security", "-o", "yaml"]));
    std::fs::write(&file, &yaml).expect("write");
    let reapplied = ok(server.cli(&["apply", "-f", file.to_str().expect("utf-8")]));
    assert!(reapplied.contains("updated"), "{reapplied}");
    let again: Value =
        serde_json::from_str(&ok(server.cli(&["get", "policy", "baseline-security", "-o", "json"])))
            .expect("json");
    assert_eq!(again["spec"], original["spec"]);
    assert_eq!(again["metadata"]["contentHash"], got["metadata"]["contentHash"], "same content, same hash");
    assert_ne!(again["metadata"]["version"], got["metadata"]["version"]);

    let table = ok(server.cli(&["get", "policy"]));
    let mut lines = table.lines();
    assert!(lines.next().expect("header").starts_with("KIND"), "{table}");
    assert!(lines.next().expect("row").contains("baseline-security"), "{table}");

    let history = ok(server.cli(&["history", "policy", "baseline-security"]));
    assert_eq!(history.lines().count(), 3, "a header and two versions:\n{history}");
    ok(server.cli(&["delete", "policy", "baseline-security"]));
    let gone = server.cli(&["get", "policy", "baseline-security"]);
    assert!(!gone.status.success());
    assert!(stderr(&gone).contains("was deleted by tester"), "{}", stderr(&gone));
    let audit = ok(server.cli(&["audit"]));
    assert_eq!(audit.lines().filter(|l| l.contains("Policy/global/baseline-security")).count(), 3, "{audit}");
}

#[test]
fn several_documents_in_one_file_and_bad_ones_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--data-dir", "data"]);
    let file = dir.path().join("many.yaml");
    std::fs::write(
        &file,
        "apiVersion: souverix/v1\nkind: Policy\nmetadata: {name: one, scope: global}\nspec: {a: 1}\n---\n\
         apiVersion: souverix/v1\nkind: Release\nmetadata: {name: v1.2.0, scope: region-a}\nspec: {image: agent:1.2.0}\n",
    )
    .expect("write");
    let out = ok(server.cli(&["apply", "-f", file.to_str().expect("utf-8")]));
    assert_eq!(out.lines().count(), 2, "{out}");
    let releases = ok(server.cli(&["get", "release", "-o", "json"]));
    let releases: Value = serde_json::from_str(&releases).expect("json");
    assert_eq!(releases[0]["metadata"]["name"], "v1.2.0");

    // The second document is bad: nothing from the file is applied.
    std::fs::write(
        &file,
        "apiVersion: souverix/v1\nkind: Policy\nmetadata: {name: two, scope: global}\n---\n\
         apiVersion: souverix/v1\nkind: Gadget\nmetadata: {name: x, scope: global}\n",
    )
    .expect("write");
    let refused = server.cli(&["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("document 2") && stderr(&refused).contains("unknown kind `Gadget`"),
        "{}",
        stderr(&refused)
    );
    let policies = ok(server.cli(&["get", "policy", "-o", "json"]));
    assert!(!policies.contains("\"two\""), "{policies}");
}

#[test]
fn a_file_of_many_documents_is_applied_in_batches_with_a_line_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--data-dir", "data"]);
    let file = dir.path().join("fleet.yaml");
    let documents: Vec<String> = (0..1200)
        .map(|i| format!("apiVersion: souverix/v1\nkind: Policy\nmetadata: {{name: p{i:04}, scope: global}}\nspec: {{n: {i}}}\n"))
        .collect();
    std::fs::write(&file, documents.join("---\n")).expect("write");
    let out = ok(server.cli(&["apply", "-f", file.to_str().expect("utf-8")]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1200, "one line per document");
    assert!(lines[0].starts_with("Policy/global/p0000 created (version "), "{}", lines[0]);
    assert!(lines[1199].starts_with("Policy/global/p1199 created (version "), "{}", lines[1199]);
    let listed: Value = serde_json::from_str(&ok(server.cli(&["get", "policy", "-o", "json"])))
        .expect("get -o json prints JSON");
    assert_eq!(listed.as_array().map_or(0, Vec::len), 1200);
}

/// The README's run command is `cargo run --release -- demo` at the workspace root: it works
/// only while the workspace's default members hold exactly one binary, `souverix`.
#[test]
fn the_readme_run_command_finds_one_binary_to_run() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let defaults: Vec<&str> = metadata["workspace_default_members"]
        .as_array()
        .expect("default members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let binaries: Vec<&str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| defaults.contains(&id)))
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(binaries, ["souverix"], "`cargo run` at the root must find exactly one binary");
}

#[test]
fn an_unreachable_server_gets_a_clear_message() {
    let out = cli(&["--server", "http://127.0.0.1:9"], &["get", "policy"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.starts_with("error: cannot reach the site at http://127.0.0.1:9"), "{err}");
    assert!(err.contains("SOUVERIX_SERVER"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn serve_without_a_config_runs_the_embedded_global_site() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let site: Value = serde_json::from_str(&ok(server.cli(&["get", "policy", "-o", "json"]))).expect("json");
    assert_eq!(site, serde_json::json!([]));
    assert!(
        dir.path().join("souverix-data/global-control.sqlite3").exists(),
        "data lands in ./souverix-data"
    );
    let body = reqwest_get(&format!("{}/v1/site", server.url));
    assert!(body.contains("\"id\":\"global-control\"") && body.contains("\"level\":\"global\""), "{body}");
}

#[test]
fn serve_with_the_seed_config_is_region_a() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_fixture("seed-site.yaml");
    let server =
        Server::start(dir.path(), &["--config", config.to_str().expect("utf-8"), "--data-dir", "data"]);
    let body = reqwest_get(&format!("{}/v1/site", server.url));
    assert!(
        body.contains("\"id\":\"region-a-control\"") && body.contains("\"scope\":\"region-a\""),
        "{body}"
    );
    assert!(dir.path().join("data/region-a-control.sqlite3").exists());
}

#[test]
fn sigterm_shuts_the_site_down_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), &["--data-dir", "data"]);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let mut exit = None;
    wait_until(Duration::from_secs(20), "the site to exit", || {
        exit = server.child.try_wait().expect("try_wait");
        exit.is_some()
    });
    assert!(exit.expect("exited").success(), "a clean shutdown exits 0");
}

#[test]
fn completion_scripts_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let out = ok(cli(&[], &["completion", shell]));
        assert!(out.contains("souverix") && out.contains("apply"), "{shell}: {out}");
    }
}

/// A plain GET with the CLI's HTTP stack avoided: the test reads the raw body.
fn reqwest_get(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async { reqwest::get(url).await.expect("get").text().await.expect("body") })
}
