//! `/v1/conflicts`: list, show both sides, acknowledge, resolve by picking a side.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Manual, Site, assert_problem, concurrent_versions, conflict, now_ms, remote_version};

async fn get_json(site: &Site, path: &str) -> Value {
    let response = site.http.get(format!("{}{path}", site.url)).send().await.expect("get");
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.expect("json")
}

async fn post(site: &Site, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = site.http.post(format!("{}{path}", site.url)).header("x-souverix-author", "carol");
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("post")
}

#[tokio::test]
async fn a_manual_conflict_is_listed_shown_acknowledged_and_resolved_by_a_pick() {
    let site = Site::start().await;
    let spec_a = json!({"ssh": {"password_auth": true}, "owner": "zone a1"});
    let spec_b = json!({"ssh": {"password_auth": false}, "owner": "region a"});
    let (a, b) = conflict(&site, "firewall", spec_a.clone(), spec_b.clone(), Manual).await;
    let (a, b) = (a.to_string(), b.to_string());

    // Listed by default (open needs attention), with both sides in version order.
    let list = get_json(&site, "/v1/conflicts").await;
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list}");
    let item = &items[0];
    let id = item["id"].as_str().expect("id").to_owned();
    assert_eq!(item["object"], "Policy/global/firewall");
    assert_eq!(item["status"], "open");
    assert_eq!(item["strategy"], "manual");
    assert_eq!(item["winner"], b, "the last-write-wins candidate is the provisional winner");
    assert_eq!(item["sides"][0]["version"], a);
    assert_eq!(item["sides"][0]["origin"], "edge-zone-a1");
    assert_eq!(item["sides"][1]["version"], b);
    assert_eq!(list["more"], false);
    assert_eq!(get_json(&site, "/v1/conflicts?status=resolved").await["items"], json!([]));
    assert_eq!(get_json(&site, "/v1/conflicts?status=all&limit=1").await["items"][0]["id"], id);
    assert_eq!(get_json(&site, "/v1/conflicts?object=Policy/global/firewall").await["items"][0]["id"], id);
    assert_eq!(get_json(&site, "/v1/conflicts?object=Policy/global/other").await["items"], json!([]));

    // Shown with both versions' full content side by side, and the current version.
    let detail = get_json(&site, &format!("/v1/conflicts/{id}")).await;
    assert_eq!(detail["conflict"]["id"], id);
    assert_eq!(detail["versions"][0]["version"], a);
    assert_eq!(detail["versions"][0]["spec"], spec_a);
    assert_eq!(detail["versions"][0]["labels"], json!({"origin": "edge-zone-a1"}));
    assert_eq!(detail["versions"][0]["author"], "peer-operator");
    assert_eq!(detail["versions"][1]["version"], b);
    assert_eq!(detail["versions"][1]["spec"], spec_b);
    assert_eq!(detail["current"]["metadata"]["version"], b);

    // Acknowledged: no longer open, still needs no further action, listed by default.
    let acked = post(&site, &format!("/v1/conflicts/{id}/ack"), None).await;
    assert_eq!(acked.status(), StatusCode::OK);
    let acked: Value = acked.json().await.expect("json");
    assert_eq!(acked["status"], "acknowledged");
    assert_eq!(acked["acknowledgedBy"], "carol");
    assert_eq!(get_json(&site, "/v1/conflicts?status=open").await["items"], json!([]));
    assert_eq!(get_json(&site, "/v1/conflicts").await["items"][0]["status"], "acknowledged");
    let again = post(&site, &format!("/v1/conflicts/{id}/ack"), None).await;
    assert_eq!(again.status(), StatusCode::OK, "acknowledging twice changes nothing");

    // A pick that is not a side is refused, naming both.
    let response =
        post(&site, &format!("/v1/conflicts/{id}/resolve"), Some(json!({"pick": "1.0@elsewhere"}))).await;
    let problem = assert_problem(response, StatusCode::BAD_REQUEST, &format!("pick `{a}` or `{b}`")).await;
    assert_eq!(problem["type"], "urn:souverix:problem:bad-pick");

    // Resolved with the older side: a new local version with its content, dominating both.
    let response = post(&site, &format!("/v1/conflicts/{id}/resolve"), Some(json!({"pick": a}))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let resolution: Value = response.json().await.expect("json");
    let new_version = resolution["object"]["metadata"]["version"].as_str().expect("version").to_owned();
    assert!(new_version.ends_with("@global-control"), "{new_version}");
    assert_eq!(resolution["object"]["spec"], spec_a);
    assert_eq!(resolution["object"]["metadata"]["author"], "carol");
    assert_eq!(resolution["conflict"]["status"], "resolved");
    assert_eq!(resolution["conflict"]["resolvedBy"], new_version);
    let vv = &resolution["object"]["metadata"]["versionVector"];
    assert_eq!(vv, &json!({"edge-zone-a1": 1, "region-a-control": 1, "global-control": 1}));

    let current = get_json(&site, "/v1/objects/Policy/global/firewall").await;
    assert_eq!(current["spec"], spec_a);
    assert_eq!(current["metadata"]["labels"], json!({"origin": "edge-zone-a1"}));
    let history = get_json(&site, "/v1/objects/Policy/global/firewall/history").await;
    let versions: Vec<&str> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["version"].as_str().expect("v"))
        .collect();
    assert_eq!(versions, vec![a.as_str(), b.as_str(), new_version.as_str()], "both sides stay in history");

    // Settled: no longer listed by default; acknowledging or resolving again is a 409.
    assert_eq!(get_json(&site, "/v1/conflicts").await["items"], json!([]));
    assert_eq!(get_json(&site, "/v1/conflicts?status=resolved").await["items"][0]["id"], id);
    let response = post(&site, &format!("/v1/conflicts/{id}/ack"), None).await;
    assert_problem(response, StatusCode::CONFLICT, "already resolved").await;
    let response = post(&site, &format!("/v1/conflicts/{id}/resolve"), Some(json!({"pick": b}))).await;
    assert_problem(response, StatusCode::CONFLICT, &format!("already resolved by version {new_version}"))
        .await;
    site.stop().await;
}

#[tokio::test]
async fn a_last_write_wins_conflict_is_resolved_already_but_an_operator_may_still_pick_the_loser() {
    let site = Site::start().await;
    let (a, b) = conflict(
        &site,
        "dns",
        json!({"servers": ["10.0.0.1"]}),
        json!({"servers": ["10.0.0.2"]}),
        store::LastWriteWins,
    )
    .await;
    let all = get_json(&site, "/v1/conflicts?status=all").await;
    let item = &all["items"][0];
    assert_eq!(item["status"], "resolved", "{all}");
    assert_eq!(item["strategy"], "last-write-wins");
    assert_eq!(item["winner"], b.to_string());
    assert_eq!(get_json(&site, "/v1/conflicts").await["items"], json!([]), "nothing needs attention");
    let id = item["id"].as_str().expect("id").to_owned();

    let response = post(&site, &format!("/v1/conflicts/{id}/ack"), None).await;
    assert_problem(response, StatusCode::CONFLICT, "by its strategy (last-write-wins)").await;

    let response =
        post(&site, &format!("/v1/conflicts/{id}/resolve"), Some(json!({"pick": a.to_string()}))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let current = get_json(&site, "/v1/objects/Policy/global/dns").await;
    assert_eq!(
        current["spec"],
        json!({"servers": ["10.0.0.1"]}),
        "the operator's pick overrides the strategy"
    );
    site.stop().await;
}

#[tokio::test]
async fn picking_a_deleted_side_deletes_the_object() {
    let site = Site::start().await;
    let now = now_ms();
    let deleted = remote_version("legacy", "edge-zone-a1", now - 2_000, &[], Value::Null, true);
    let kept = remote_version("legacy", "region-a-control", now - 1_000, &[], json!({"keep": true}), false);
    let (tombstone, live) = concurrent_versions(&site, deleted, kept, Manual).await;
    let list = get_json(&site, "/v1/conflicts").await;
    let id = list["items"][0]["id"].as_str().expect("a conflict").to_owned();
    assert_eq!(list["items"][0]["sides"][0]["deleted"], true);
    assert_eq!(
        get_json(&site, &format!("/v1/conflicts/{id}")).await["current"]["metadata"]["version"],
        live.to_string()
    );

    let response =
        post(&site, &format!("/v1/conflicts/{id}/resolve"), Some(json!({"pick": tombstone.to_string()})))
            .await;
    assert_eq!(response.status(), StatusCode::OK);
    let resolution: Value = response.json().await.expect("json");
    assert_eq!(resolution["object"]["metadata"]["deleted"], true);
    assert_eq!(resolution["conflict"]["status"], "resolved");
    let gone = site.http.get(site.object_url("Policy", "global", "legacy")).send().await.expect("get");
    assert_problem(gone, StatusCode::NOT_FOUND, "was deleted by carol").await;
    site.stop().await;
}

#[tokio::test]
async fn bad_conflict_requests_get_problem_documents() {
    let site = Site::start().await;
    let url = |path: &str| format!("{}{path}", site.url);
    let cases = [
        (
            "/v1/conflicts?status=pending",
            StatusCode::BAD_REQUEST,
            "status is `pending`; it must be `open`, `acknowledged`, `resolved` or `all`",
        ),
        ("/v1/conflicts?limit=0", StatusCode::BAD_REQUEST, "limit is 0"),
        (
            "/v1/conflicts?object=Policy/global",
            StatusCode::BAD_REQUEST,
            "it must name one object as `Kind/scope/name`",
        ),
        ("/v1/conflicts?colour=red", StatusCode::BAD_REQUEST, "unknown field `colour`"),
        ("/v1/conflicts/not-an-id", StatusCode::BAD_REQUEST, "`not-an-id` is not a conflict id"),
        ("/v1/conflicts/0123456789abcdef", StatusCode::NOT_FOUND, "no conflict `0123456789abcdef`"),
    ];
    for (path, status, says) in cases {
        let response = site.http.get(url(path)).send().await.expect("get");
        assert_problem(response, status, says).await;
    }
    let response = post(&site, "/v1/conflicts/0123456789abcdef/ack", None).await;
    assert_problem(response, StatusCode::NOT_FOUND, "no conflict").await;
    let response =
        post(&site, "/v1/conflicts/0123456789abcdef/resolve", Some(json!({"pick": "1.0@a"}))).await;
    assert_problem(response, StatusCode::NOT_FOUND, "no conflict").await;

    let (_, _) = conflict(&site, "x", json!({"v": 1}), json!({"v": 2}), Manual).await;
    let id = get_json(&site, "/v1/conflicts").await["items"][0]["id"].as_str().expect("id").to_owned();
    let response = post(&site, &format!("/v1/conflicts/{id}/resolve"), Some(json!({"choose": "x"}))).await;
    assert_problem(response, StatusCode::BAD_REQUEST, "send {\"pick\": \"<version>\"}").await;
    let response = site
        .http
        .post(url(&format!("/v1/conflicts/{id}/resolve")))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_problem(response, StatusCode::BAD_REQUEST, "send {\"pick\"").await;
    let response =
        post(&site, &format!("/v1/conflicts/{id}/resolve"), Some(json!({"pick": "garbage"}))).await;
    assert_problem(response, StatusCode::BAD_REQUEST, "`garbage` is not a side of conflict").await;
    site.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_operator_endpoints() {
    let site = Site::start().await;
    let openapi = get_json(&site, "/v1/openapi.json").await;
    let paths = openapi["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/v1/conflicts", "get"),
        ("/v1/conflicts/{id}", "get"),
        ("/v1/conflicts/{id}/ack", "post"),
        ("/v1/conflicts/{id}/resolve", "post"),
        ("/v1/events", "get"),
        ("/v1/webhooks/deliveries", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    for schema in ["ConflictItem", "ConflictDetail", "Resolution", "EventItem", "DeliveryPage"] {
        assert!(openapi["components"]["schemas"].get(schema).is_some(), "{schema} missing");
    }
    site.stop().await;
}
