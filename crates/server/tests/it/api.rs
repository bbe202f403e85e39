use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Site, policy};

/// Everything a client can observe of the store: objects (with tombstones), the change log and
/// the audit log.
fn snapshot(site: &Site) -> (usize, u64, usize) {
    let filter = store::ListFilter { include_deleted: true, limit: 1000, ..Default::default() };
    let objects = site.store.list(&filter).expect("list").len();
    let seq = site.store.last_seq().expect("seq");
    let audit = site.store.audit(0, 1000).expect("audit").len();
    (objects, seq, audit)
}

async fn assert_problem(response: reqwest::Response, status: StatusCode, detail_contains: &str) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains(detail_contains), "detail `{detail}` lacks `{detail_contains}`");
    body
}

#[tokio::test]
async fn a_policy_put_reads_back_identical_with_its_version_as_etag() {
    let site = Site::start().await;
    let spec = json!({"rules": [{"deny": "telnet"}, {"allow": "ssh", "ports": [22]}], "enforce": true});
    let response = site
        .http
        .put(site.object_url("Policy", "global", "baseline"))
        .header("x-souverix-author", "alice")
        .json(&policy("baseline", spec.clone()))
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), StatusCode::CREATED);
    let etag = response.headers()["etag"].to_str().expect("etag").to_owned();
    let created: Value = response.json().await.expect("json");
    assert_eq!(etag, format!("\"{}\"", created["metadata"]["version"].as_str().expect("version")));

    let got = site.http.get(site.object_url("Policy", "global", "baseline")).send().await.expect("get");
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["etag"].to_str().expect("etag"), etag);
    let got: Value = got.json().await.expect("json");
    assert_eq!(got["spec"], spec);
    assert_eq!(got["metadata"]["labels"], json!({"team": "security"}));
    assert_eq!(got["metadata"]["origin"], "global-control");
    assert_eq!(got["metadata"]["author"], "alice");
    assert_eq!(got["metadata"]["versionVector"], json!({"global-control": 1}));
    site.stop().await;
}

#[tokio::test]
async fn a_stale_if_match_gets_412_and_changes_nothing() {
    let site = Site::start().await;
    let url = site.object_url("Policy", "global", "baseline");
    let first: Value = site
        .http
        .put(&url)
        .json(&policy("baseline", json!({"v": 1})))
        .send()
        .await
        .expect("put")
        .json()
        .await
        .expect("json");
    let v1 = first["metadata"]["version"].as_str().expect("v1").to_owned();
    let second = site
        .http
        .put(&url)
        .header("if-match", format!("\"{v1}\""))
        .json(&policy("baseline", json!({"v": 2})))
        .send()
        .await
        .expect("put");
    assert_eq!(second.status(), StatusCode::OK, "a current If-Match applies");
    let v2 = second.headers()["etag"].to_str().expect("etag").trim_matches('"').to_owned();
    let objects_before = snapshot(&site);

    let stale = site
        .http
        .put(&url)
        .header("if-match", format!("\"{v1}\""))
        .json(&policy("baseline", json!({"v": 3})))
        .send()
        .await
        .expect("put");
    let problem = assert_problem(stale, StatusCode::PRECONDITION_FAILED, &v2).await;
    assert_eq!(problem["currentVersion"], v2.as_str());

    let got: Value = site.http.get(&url).send().await.expect("get").json().await.expect("json");
    assert_eq!(got["spec"], json!({"v": 2}));
    let history: Value =
        site.http.get(format!("{url}/history")).send().await.expect("history").json().await.expect("json");
    assert_eq!(history["items"].as_array().expect("items").len(), 2);
    let (objects, seq, audit) = snapshot(&site);
    assert_eq!((objects, seq), (objects_before.0, objects_before.1), "no object or change was written");
    assert_eq!(audit, objects_before.2 + 1, "the refused write is audited");
    let tail: Value = site
        .http
        .get(format!("{}/v1/audit?tail=1", site.url))
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    assert_eq!(tail["items"][0]["outcome"], "precondition-failed");
    site.stop().await;
}

#[tokio::test]
async fn bad_requests_get_problem_documents_and_change_nothing() {
    let site = Site::start().await;
    let url = site.object_url("Policy", "global", "baseline");
    let before = snapshot(&site);

    let malformed = site
        .http
        .put(&url)
        .header("content-type", "application/json")
        .body("{\"apiVersion\": \"souverix/v1\", \"kind\": ")
        .send()
        .await
        .expect("send");
    assert_problem(malformed, StatusCode::BAD_REQUEST, "not a valid object document").await;

    let unknown_kind = site
        .http
        .put(site.object_url("Gadget", "global", "baseline"))
        .json(&policy("baseline", json!({})))
        .send()
        .await
        .expect("send");
    assert_problem(unknown_kind, StatusCode::BAD_REQUEST, "unknown kind `Gadget`").await;

    let mut gadget = policy("baseline", json!({}));
    gadget["kind"] = json!("Gadget");
    let unknown_kind_in_body = site.http.put(&url).json(&gadget).send().await.expect("send");
    assert_problem(unknown_kind_in_body, StatusCode::BAD_REQUEST, "unknown kind `Gadget`").await;

    let slash_in_path = site
        .http
        .put(site.object_url("Policy", "global", "a%2Fb"))
        .json(&policy("a/b", json!({})))
        .send()
        .await
        .expect("send");
    assert_problem(slash_in_path, StatusCode::BAD_REQUEST, "contains `/`").await;

    let slash_in_body = site.http.put(&url).json(&policy("a/b", json!({}))).send().await.expect("send");
    assert_problem(slash_in_body, StatusCode::BAD_REQUEST, "contains `/`").await;

    let extra_segment = site
        .http
        .put(format!("{url}/extra"))
        .json(&policy("baseline", json!({})))
        .send()
        .await
        .expect("send");
    assert!(extra_segment.status().is_client_error());
    assert_eq!(extra_segment.headers()["content-type"], "application/problem+json");

    let huge = format!(
        "{{\"apiVersion\":\"souverix/v1\",\"kind\":\"Policy\",\"metadata\":{{\"name\":\"baseline\",\"scope\":\"global\"}},\"spec\":{{\"blob\":\"{}\"}}}}",
        "x".repeat(10 * 1024 * 1024)
    );
    let too_large =
        site.http.put(&url).header("content-type", "application/json").body(huge).send().await.expect("send");
    assert_problem(too_large, StatusCode::PAYLOAD_TOO_LARGE, "larger than the limit").await;

    let mismatch = site.http.put(&url).json(&policy("other", json!({}))).send().await.expect("send");
    assert_problem(mismatch, StatusCode::BAD_REQUEST, "make them agree").await;

    let bad_if_match = site
        .http
        .put(&url)
        .header("if-match", "\"yesterday\"")
        .json(&policy("baseline", json!({})))
        .send()
        .await
        .expect("send");
    assert_problem(bad_if_match, StatusCode::BAD_REQUEST, "If-Match").await;

    assert_eq!(snapshot(&site), before, "no object, change or audit entry was written");
    let missing = site.http.get(&url).send().await.expect("get");
    assert_problem(missing, StatusCode::NOT_FOUND, "does not exist").await;
    site.stop().await;
}

#[tokio::test]
async fn delete_writes_a_tombstone_that_history_keeps() {
    let site = Site::start().await;
    let url = site.object_url("Policy", "global", "baseline");
    site.http.put(&url).json(&policy("baseline", json!({"v": 1}))).send().await.expect("put");
    let deleted = site.http.delete(&url).header("x-souverix-author", "bob").send().await.expect("delete");
    assert_eq!(deleted.status(), StatusCode::OK);
    let tombstone: Value = deleted.json().await.expect("json");
    assert_eq!(tombstone["metadata"]["deleted"], true);

    let gone = site.http.get(&url).send().await.expect("get");
    assert_problem(gone, StatusCode::NOT_FOUND, "was deleted by bob").await;
    let again = site.http.delete(&url).send().await.expect("delete");
    assert_problem(again, StatusCode::NOT_FOUND, "does not exist").await;

    let history: Value =
        site.http.get(format!("{url}/history")).send().await.expect("history").json().await.expect("json");
    let items = history["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["spec"], json!({"v": 1}));
    assert_eq!(items[1]["deleted"], true);

    let list: Value = site
        .http
        .get(format!("{}/v1/objects", site.url))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["items"].as_array().expect("items").len(), 0, "a deleted object is not listed");
    let with_deleted: Value = site
        .http
        .get(format!("{}/v1/objects?include_deleted=true", site.url))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(with_deleted["items"].as_array().expect("items").len(), 1);
    site.stop().await;
}

#[tokio::test]
async fn lists_filter_by_kind_and_scope_and_page() {
    let site = Site::start().await;
    for (kind, scope, name) in [
        ("Policy", "global", "a"),
        ("Policy", "global", "b"),
        ("Policy", "region-a", "c"),
        ("Release", "global", "r1"),
    ] {
        let doc = json!({"apiVersion": "souverix/v1", "kind": kind, "metadata": {"name": name, "scope": scope}, "spec": {}});
        let r = site.http.put(site.object_url(kind, scope, name)).json(&doc).send().await.expect("put");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|d| d["metadata"]["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let get = |q: &str| site.http.get(format!("{}/v1/objects?{q}", site.url)).send();
    let policies: Value = get("kind=Policy").await.expect("list").json().await.expect("json");
    assert_eq!(names(&policies), ["a", "b", "c"]);
    let global_policies: Value =
        get("kind=policy&scope=global").await.expect("list").json().await.expect("json");
    assert_eq!(names(&global_policies), ["a", "b"]);
    let page1: Value = get("kind=Policy&limit=2").await.expect("list").json().await.expect("json");
    assert_eq!(names(&page1), ["a", "b"]);
    let next = page1["next"].as_str().expect("next");
    let page2: Value =
        get(&format!("kind=Policy&limit=2&after={next}")).await.expect("list").json().await.expect("json");
    assert_eq!(names(&page2), ["c"]);
    assert!(page2.get("next").is_none());
    assert_problem(get("kind=Gadget").await.expect("list"), StatusCode::BAD_REQUEST, "unknown kind").await;
    assert_problem(get("limit=0").await.expect("list"), StatusCode::BAD_REQUEST, "between 1 and 1000").await;
    assert_problem(get("colour=red").await.expect("list"), StatusCode::BAD_REQUEST, "colour").await;
    site.stop().await;
}

#[tokio::test]
async fn audit_log_records_who_did_what_and_pages() {
    let site = Site::start().await;
    for i in 0..5 {
        let name = format!("p{i}");
        site.http
            .put(site.object_url("Policy", "global", &name))
            .header("x-souverix-author", "carol")
            .json(&policy(&name, json!({"i": i})))
            .send()
            .await
            .expect("put");
    }
    let first: Value = site
        .http
        .get(format!("{}/v1/audit?limit=3", site.url))
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let items = first["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["actor"], "carol");
    assert_eq!(items[0]["action"], "put");
    assert_eq!(items[0]["object"], "Policy/global/p0");
    assert_eq!(items[0]["outcome"], "applied");
    let next = first["next"].as_u64().expect("next");
    let rest: Value = site
        .http
        .get(format!("{}/v1/audit?after={next}&limit=3", site.url))
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let rest_items = rest["items"].as_array().expect("items");
    assert_eq!(rest_items.len(), 2);
    assert_eq!(rest_items[1]["object"], "Policy/global/p4");
    site.stop().await;
}

#[tokio::test]
async fn health_metrics_and_openapi_are_served() {
    let site = Site::start().await;
    site.http
        .put(site.object_url("Policy", "global", "a"))
        .json(&policy("a", json!({})))
        .send()
        .await
        .expect("put");
    let health: Value = site
        .http
        .get(format!("{}/healthz", site.url))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["site"], "global-control");

    let metrics = site
        .http
        .get(format!("{}/metrics", site.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("souverix_writes_total{kind=\"Policy\",outcome=\"applied\"} 1"), "{metrics}");
    assert!(metrics.contains("souverix_store_latency_seconds_count{operation=\"write\"} 1"), "{metrics}");
    assert!(metrics.contains("souverix_local_write_transactions 1\n"), "{metrics}");
    assert!(metrics.contains("souverix_local_writes_committed 1\n"), "{metrics}");
    site.http.get(format!("{}/nowhere", site.url)).send().await.expect("404");
    let metrics = site
        .http
        .get(format!("{}/metrics", site.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("souverix_http_errors_total{status=\"404\"} 1"), "{metrics}");

    let openapi: Value = site
        .http
        .get(format!("{}/v1/openapi.json", site.url))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    assert!(openapi["openapi"].as_str().expect("version").starts_with("3."));
    let paths = openapi["paths"].as_object().expect("paths");
    for path in [
        "/v1/objects",
        "/v1/objects/{kind}/{scope}/{name}",
        "/v1/objects/{kind}/{scope}/{name}/history",
        "/v1/audit",
    ] {
        assert!(paths.contains_key(path), "{path} missing from the OpenAPI document");
    }
    assert!(openapi["components"]["schemas"].get("ObjectDocument").is_some());
    site.stop().await;
}

#[tokio::test]
async fn wrong_method_gets_a_problem_document() {
    let site = Site::start().await;
    let response = site.http.post(site.object_url("Policy", "global", "a")).send().await.expect("post");
    assert_problem(response, StatusCode::METHOD_NOT_ALLOWED, "POST is not supported").await;
    site.stop().await;
}
