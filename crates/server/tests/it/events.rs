//! `GET /v1/events`: server-sent events, resumable from the last event id, filtered by kind,
//! ended when the site stops.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Manual, Site, assert_problem, conflict, policy};

/// How long a test waits for an event that should come.
const DEADLINE: Duration = Duration::from_secs(10);

/// One server-sent event.
#[derive(Debug)]
pub struct Frame {
    pub id: u64,
    pub event: String,
    pub data: Value,
}

/// A client of the event stream that parses frames as they arrive.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    pub async fn open(site: &Site, query: &str, last_event_id: Option<u64>) -> EventStream {
        let mut request = site.http.get(format!("{}/v1/events{query}", site.url));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("connect");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        EventStream { response, buffer: String::new() }
    }

    /// The next event, or `None` when the stream ends; fails after [`DEADLINE`].
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse().expect("a numeric id"));
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).expect("one line of JSON"));
                    }
                }
                match (id, event, data) {
                    (Some(id), Some(event), Some(data)) => return Some(Frame { id, event, data }),
                    _ => continue, // a keep-alive comment
                }
            }
            let chunk = tokio::time::timeout(DEADLINE, self.response.chunk())
                .await
                .expect("an event within the deadline")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).expect("utf-8")),
                None => return None,
            }
        }
    }

    /// Skips events until one about `object` of `kind` arrives.
    pub async fn until(&mut self, kind: &str, object: &str) -> Frame {
        loop {
            let frame = self.next().await.expect("the stream goes on");
            if frame.event == kind && frame.data["object"] == object {
                return frame;
            }
        }
    }
}

async fn put(site: &Site, name: &str, spec: Value) {
    let response = site
        .http
        .put(site.object_url("Policy", "global", name))
        .json(&policy(name, spec))
        .send()
        .await
        .expect("put");
    assert!(response.status().is_success(), "{}", response.status());
}

#[tokio::test]
async fn a_client_sees_writes_as_they_happen_and_resumes_from_the_last_event_id() {
    let site = Site::start().await;
    let mut stream = EventStream::open(&site, "", None).await;
    put(&site, "first", json!({"n": 1})).await;
    let first = stream.until("write", "Policy/global/first").await;
    assert_eq!(first.data["seq"], first.id);
    assert_eq!(first.data["kind"], "write");
    assert!(first.data["time"].as_str().expect("time").ends_with('Z'), "{}", first.data);
    put(&site, "second", json!({"n": 2})).await;
    let second = stream.until("write", "Policy/global/second").await;
    assert!(second.id > first.id);
    drop(stream);

    // Reconnecting with the id of the first event replays only what came after it.
    put(&site, "third", json!({"n": 3})).await;
    let mut resumed = EventStream::open(&site, "", Some(first.id)).await;
    let next = resumed.next().await.expect("an event");
    assert!(next.id > first.id, "{next:?}");
    let mut seen = vec![next];
    while !seen.iter().any(|f| f.data["object"] == "Policy/global/third") {
        seen.push(resumed.next().await.expect("an event"));
    }
    assert!(seen.iter().any(|f| f.id == second.id), "the second write is replayed");
    assert!(seen.iter().all(|f| f.id > first.id), "nothing at or before the last id");
    let ids: Vec<u64> = seen.iter().map(|f| f.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");

    // `after` does the same; the header wins when both are given.
    let mut after = EventStream::open(&site, &format!("?after={}", second.id), None).await;
    assert_eq!(after.until("write", "Policy/global/third").await.data["object"], "Policy/global/third");
    let mut both = EventStream::open(&site, "?after=0", Some(second.id)).await;
    assert!(both.next().await.expect("an event").id > second.id);

    // `after=latest` skips everything stored: the first event is the next write.
    let mut latest = EventStream::open(&site, "?after=latest", None).await;
    put(&site, "fourth", json!({"n": 4})).await;
    let first_new = latest.next().await.expect("an event");
    assert_eq!(first_new.data["object"], "Policy/global/fourth", "nothing stored before is replayed");
    site.stop().await;
}

#[tokio::test]
async fn kinds_filter_the_stream_and_follow_false_ends_it_after_the_stored_events() {
    let site = Site::start().await;
    put(&site, "plain", json!({})).await;
    conflict(&site, "contested", json!({"v": "a"}), json!({"v": "b"}), Manual).await;

    let mut conflicts = EventStream::open(&site, "?kinds=conflict&follow=false", None).await;
    let frame = conflicts.next().await.expect("the conflict event");
    assert_eq!(frame.event, "conflict");
    assert_eq!(frame.data["object"], "Policy/global/contested");
    while let Some(frame) = conflicts.next().await {
        assert_eq!(frame.event, "conflict", "only conflicts pass the filter");
    }

    let mut everything = EventStream::open(&site, "?follow=false", None).await;
    let mut kinds = Vec::new();
    while let Some(frame) = everything.next().await {
        kinds.push(frame.event);
    }
    assert!(kinds.contains(&"write".to_owned()) && kinds.contains(&"conflict".to_owned()), "{kinds:?}");
    site.stop().await;
}

#[tokio::test]
async fn an_open_stream_ends_when_the_site_stops() {
    let site = Site::start().await;
    let mut stream = EventStream::open(&site, "", None).await;
    put(&site, "x", json!({})).await;
    stream.until("write", "Policy/global/x").await;
    tokio::time::timeout(DEADLINE, site.stop()).await.expect("the site stops with a stream open");
    assert!(stream.next().await.is_none(), "the stream ended");
}

#[tokio::test]
async fn bad_event_requests_get_problem_documents() {
    let site = Site::start().await;
    let url = format!("{}/v1/events", site.url);
    let response = site.http.get(format!("{url}?kinds=conflict,weather")).send().await.expect("get");
    assert_problem(response, StatusCode::BAD_REQUEST, "kinds has `weather`; list kinds separated by commas")
        .await;
    let response = site.http.get(format!("{url}?after=-1")).send().await.expect("get");
    assert_problem(response, StatusCode::BAD_REQUEST, "after is `-1`; give an event id").await;
    let response = site.http.get(format!("{url}?follow=maybe")).send().await.expect("get");
    assert_problem(response, StatusCode::BAD_REQUEST, "follow").await;
    let response = site.http.get(&url).header("last-event-id", "yesterday").send().await.expect("get");
    assert_problem(response, StatusCode::BAD_REQUEST, "Last-Event-ID must be the id of an event").await;
    site.stop().await;
}
