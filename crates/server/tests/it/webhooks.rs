//! Webhooks: events POSTed to a real loopback receiver, retried after a failure, every attempt
//! recorded and listed at `GET /v1/webhooks/deliveries`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Manual, Site, assert_problem, conflict, eventually};

/// What the receiver was sent: the headers we check, and the body.
#[derive(Debug, Clone)]
struct Received {
    event: String,
    delivery: String,
    attempt: String,
    body: Value,
}

/// An HTTP server on 127.0.0.1 that answers 500 to the first `failures` requests, then 200,
/// and keeps what it was sent.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    async fn start(failures: usize) -> Receiver {
        let received = Arc::new(Mutex::new(Vec::<Received>::new()));
        let log = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let log = log.clone();
                async move {
                    let header = |name: &str| {
                        headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
                    };
                    let mut log = log.lock().expect("lock");
                    log.push(Received {
                        event: header("x-souverix-event"),
                        delivery: header("x-souverix-delivery"),
                        attempt: header("x-souverix-attempt"),
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    if log.len() <= failures { AxumStatus::INTERNAL_SERVER_ERROR } else { AxumStatus::OK }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Receiver { url, received, stop: Some(stop) }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn site_with_webhook(url: &str, events: &str) -> config::SiteConfig {
    let text = format!(
        "Site:\n  id: global-control\n  webhooks:\n    - name: receiver\n      url: {url}\n      events: {events}\nAuthority:\n  level: global\n"
    );
    config::SiteConfig::parse(&text, "site.yaml", Path::new("")).expect("a valid site file")
}

async fn deliveries(site: &Site, query: &str) -> Vec<Value> {
    let page = site.get_json(&format!("/v1/webhooks/deliveries{query}")).await;
    page["items"].as_array().expect("items").clone()
}

#[tokio::test]
async fn a_failed_delivery_is_retried_and_every_attempt_is_recorded() {
    let receiver = Receiver::start(1).await;
    let site = Site::start_with(site_with_webhook(&receiver.url, "[conflict]")).await;
    conflict(&site, "contested", json!({"v": "a"}), json!({"v": "b"}), Manual).await;

    let items = eventually(Duration::from_secs(20), "a delivered attempt", || async {
        let items = deliveries(&site, "").await;
        items.iter().any(|d| d["outcome"] == "delivered").then_some(items)
    })
    .await;
    // Newest first: the retry that succeeded, then the attempt the receiver failed.
    assert_eq!(items.len(), 2, "{items:#?}");
    assert_eq!(items[0]["outcome"], "delivered");
    assert_eq!(items[0]["attempt"], 2);
    assert_eq!(items[0]["status"], 200);
    assert_eq!(items[1]["outcome"], "failed");
    assert_eq!(items[1]["attempt"], 1);
    assert_eq!(items[1]["status"], 500);
    assert!(items[1]["detail"].as_str().expect("detail").contains("500"), "{}", items[1]);
    assert_eq!(items[0]["event"], items[1]["event"]);
    assert_eq!(items[0]["webhook"], "receiver");

    let received = receiver.received();
    assert_eq!(received.len(), 2, "{received:#?}");
    let event = &received[1].body;
    assert_eq!(event["kind"], "conflict");
    assert_eq!(event["object"], "Policy/global/contested");
    assert_eq!(event["seq"], items[0]["event"]);
    assert!(event["time"].as_str().is_some() && event.get("data").is_some(), "{event}");
    assert_eq!(received[0].body, received[1].body, "a retry sends the same event");
    assert_eq!(received[1].event, "conflict");
    assert_eq!(received[0].delivery, received[1].delivery, "one delivery id across attempts");
    assert_eq!(received[1].delivery, format!("global-control/receiver/{}", items[0]["event"]));
    assert_eq!((received[0].attempt.as_str(), received[1].attempt.as_str()), ("1", "2"));

    let metrics =
        site.http.get(format!("{}/metrics", site.url)).send().await.expect("get").text().await.expect("text");
    assert!(
        metrics.contains("souverix_webhook_deliveries_total{webhook=\"receiver\",outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    site.stop().await;
}

#[tokio::test]
async fn events_of_other_kinds_are_not_sent() {
    let receiver = Receiver::start(0).await;
    let site = Site::start_with(site_with_webhook(&receiver.url, "[conflict]")).await;
    // A write first (not wanted), then a conflict (wanted): only the conflict arrives, so
    // the write was passed over, not merely late.
    let response = site
        .http
        .put(site.object_url("Policy", "global", "quiet"))
        .json(&crate::harness::policy("quiet", json!({})))
        .send()
        .await
        .expect("put");
    assert!(response.status().is_success());
    conflict(&site, "loud", json!({"v": 1}), json!({"v": 2}), Manual).await;
    eventually(Duration::from_secs(20), "the conflict delivered", || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;
    let received = receiver.received();
    assert!(received.iter().all(|r| r.body["kind"] == "conflict"), "only conflicts are sent: {received:#?}");
    site.stop().await;
}

#[tokio::test]
async fn bad_delivery_queries_get_problem_documents() {
    let site = Site::start().await;
    assert!(deliveries(&site, "").await.is_empty(), "a site without webhooks delivered nothing");
    assert!(deliveries(&site, "?webhook=receiver&limit=5").await.is_empty());
    let url = format!("{}/v1/webhooks/deliveries", site.url);
    let response = site.http.get(format!("{url}?webhook=Not_A_Name")).send().await.expect("get");
    assert_problem(response, StatusCode::BAD_REQUEST, "webhook is `Not_A_Name`").await;
    let response = site.http.get(format!("{url}?limit=100000")).send().await.expect("get");
    assert_problem(response, StatusCode::BAD_REQUEST, "limit is 100000").await;
    site.stop().await;
}
