use crate::harness::{cli, config_fixture, ok, stderr, stdout};

#[test]
fn config_check_accepts_the_seed_snippets() {
    for fixture in ["seed-site.yaml", "seed-authority.yaml"] {
        let path = config_fixture(fixture);
        let out = ok(cli(&[], &["config", "check", path.to_str().expect("utf-8")]));
        assert!(out.lines().next().expect("first line").ends_with(": ok"), "{out}");
        assert!(out.contains("region-a-control"), "{out}");
    }
    let both = ok(cli(&[], &["config", "check", config_fixture("seed-site.yaml").to_str().expect("utf-8")]));
    assert!(both.contains("continuous") && both.contains("15m"), "{both}");
    assert!(both.contains("edge-zone-a1, edge-zone-a2") && both.contains("push"), "{both}");
    assert!(both.contains("last-write-wins"), "{both}");
}

/// Each kind of bad file exits non-zero with the file, the line and the field in the message,
/// and nothing on standard output.
#[test]
fn config_check_rejects_bad_files_naming_file_line_and_field() {
    let cases = [
        ("bad-unknown-field.yaml", ":6:5:", "Authority.autonomy.can_fly"),
        ("bad-duration.yaml", ":8:16:", "SyncStrategy.upstream.frequency"),
        ("bad-enum.yaml", ":9:11:", "Authority.sync.mode"),
        ("bad-no-site-id.yaml", ":2:", "Authority.master"),
        ("bad-yaml-syntax.yaml", ":6:17:", "not valid YAML"),
    ];
    for (fixture, line, field) in cases {
        let path = config_fixture(fixture);
        let out = cli(&[], &["config", "check", path.to_str().expect("utf-8")]);
        assert!(!out.status.success(), "{fixture} was accepted");
        let err = stderr(&out);
        assert!(err.contains(&format!("{fixture}{line}")), "{fixture}: no file and line `{line}` in: {err}");
        assert!(err.contains(field), "{fixture}: no field `{field}` in: {err}");
        assert!(stdout(&out).is_empty(), "{fixture}");
    }
}

/// A bad configuration also stops `serve` before it opens any store or port.
#[test]
fn serve_refuses_a_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config_fixture("bad-enum.yaml");
    let out = std::process::Command::new(crate::harness::BIN)
        .args([
            "serve",
            "--config",
            path.to_str().expect("utf-8"),
            "--data-dir",
            "data",
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Authority.sync.mode"), "{}", stderr(&out));
    assert!(!dir.path().join("data").exists(), "nothing was created");
}
