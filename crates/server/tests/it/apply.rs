//! `POST /v1/apply`: many documents in one request, committed together, one outcome each.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Site, assert_problem, policy};

async fn apply(site: &Site, items: Vec<Value>) -> reqwest::Response {
    site.http
        .post(format!("{}/v1/apply", site.url))
        .header("x-souverix-author", "ops")
        .json(&json!({ "items": items }))
        .send()
        .await
        .expect("post")
}

async fn count(site: &Site) -> usize {
    site.get_json("/v1/objects").await["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn a_batch_creates_and_updates_in_order_with_one_outcome_per_document() {
    let site = Site::start().await;
    let response = apply(
        &site,
        vec![policy("a", json!({"n": 1})), policy("b", json!({"n": 2})), policy("a", json!({"n": 3}))],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    let statuses: Vec<u64> =
        body["items"].as_array().expect("items").iter().map(|i| i["status"].as_u64().unwrap_or(0)).collect();
    assert_eq!(statuses, [201, 201, 200], "{body}");
    assert_eq!(body["written"], 3);
    assert_eq!(body["refused"], 0);
    assert_eq!(body["items"][0]["object"], "Policy/global/a");

    let a = site.get_json("/v1/objects/Policy/global/a").await;
    assert_eq!(a["spec"], json!({"n": 3}), "the later document of the same object wins");
    assert_eq!(a["metadata"]["version"], body["items"][2]["version"], "{a}");
    let history = site.get_json("/v1/objects/Policy/global/a/history").await;
    assert_eq!(history["items"].as_array().map_or(0, Vec::len), 2);
    assert_eq!(history["items"][0]["author"], "ops");
    site.stop().await;
}

#[tokio::test]
async fn one_bad_document_rejects_the_request_and_writes_nothing() {
    let site = Site::start().await;
    let mut bad = policy("b", json!({}));
    bad["kind"] = json!("Weather");
    let response = apply(&site, vec![policy("a", json!({})), bad]).await;
    assert_problem(
        response,
        StatusCode::BAD_REQUEST,
        "document 2 of the request is not valid (nothing was written)",
    )
    .await;
    assert_eq!(count(&site).await, 0, "nothing was written");

    let response =
        site.http.post(format!("{}/v1/apply", site.url)).body("[1, 2]").send().await.expect("post");
    assert_problem(response, StatusCode::BAD_REQUEST, "{\"items\": [documents]}").await;

    let many: Vec<Value> = (0..1001).map(|i| policy(&format!("p{i}"), json!({}))).collect();
    let response = apply(&site, many).await;
    assert_problem(response, StatusCode::BAD_REQUEST, "send at most 1000 per request").await;
    assert_eq!(count(&site).await, 0);
    site.stop().await;
}

#[tokio::test]
async fn documents_the_authority_rules_forbid_are_refused_alone() {
    // A regional site on its own holds only its own scope.
    let text = "Site:\n  id: region-a-control\n  listen: 127.0.0.1:0\nAuthority:\n  level: regional\n  region: region-a\n  master: region-a-control\n";
    let config = config::SiteConfig::parse(text, "site.yaml", Path::new("")).expect("a valid site file");
    let site = Site::start_with(config).await;
    let mut own = policy("limits", json!({"max": 1}));
    own["metadata"]["scope"] = json!("region-a");
    let response = apply(&site, vec![policy("elsewhere", json!({})), own]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["items"][0]["status"], 403, "{body}");
    assert_eq!(body["items"][0]["problem"]["type"], "urn:souverix:problem:authority", "{body}");
    assert!(body["items"][0]["version"].is_null());
    assert_eq!(body["items"][1]["status"], 201, "{body}");
    assert_eq!((body["written"].as_u64(), body["refused"].as_u64()), (Some(1), Some(1)));
    assert_eq!(count(&site).await, 1, "only the allowed document was written");
    site.stop().await;
}
