//! A typed HTTP client for one site's API.

use anyhow::{Context, anyhow};
use model::{ObjectDocument, ObjectKey};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use server::{
    ApplyResponse, AuditPage, ConflictDetail, ConflictItem, ConflictPage, DeliveryPage, HistoryPage,
    ObjectPage, Resolution, SiteDocument,
};

/// Talks to the site at `base` (such as `http://127.0.0.1:7400`).
pub struct Client {
    base: String,
    http: reqwest::Client,
    author: String,
}

/// The answer to a write.
pub struct Written {
    pub document: ObjectDocument,
    pub created: bool,
}

/// What a failed request tells the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the site at {base}: {reason}\n  is `souverix serve` running there? Choose another site with --server URL or SOUVERIX_SERVER"
    )]
    Unreachable { base: String, reason: String },
    #[error("{title} ({status}): {detail}")]
    Problem { status: u16, title: String, detail: String },
    #[error("the site answered {status} with a body that is not a problem document: {body}")]
    Unexpected { status: u16, body: String },
}

impl Client {
    pub fn new(base: &str, author: String) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(anyhow!("the server address `{base}` must start with http:// or https://"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .context("failed to build the HTTP client")?;
        Ok(Self { base, http, author })
    }

    fn object_url(&self, key: &ObjectKey) -> String {
        // Kind, scope and name are validated identifiers: no characters that need escaping.
        format!("{}/v1/objects/{}/{}/{}", self.base, key.kind, key.scope, key.name)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = request
            .header("x-souverix-author", &self.author)
            .send()
            .await
            .map_err(|e| ClientError::Unreachable { base: self.base.clone(), reason: root_cause(&e) })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        match serde_json::from_str::<ProblemBody>(&body) {
            Ok(p) => Err(ClientError::Problem { status, title: p.title, detail: p.detail }),
            Err(_) => Err(ClientError::Unexpected { status, body: body.chars().take(500).collect() }),
        }
    }

    async fn json<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let response = self.send(request).await?;
        response.json::<T>().await.context("the site's answer is not the JSON expected")
    }

    /// The site's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Who this client writes as.
    pub fn author(&self) -> &str {
        &self.author
    }

    /// `GET <path>?<query>` as typed JSON.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        self.json(self.http.get(format!("{}{path}", self.base)).query(query)).await
    }

    /// `GET <path>` as JSON, whatever its shape.
    pub async fn get_value(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.get_json(path, &[]).await
    }

    pub async fn site(&self) -> anyhow::Result<SiteDocument> {
        self.json(self.http.get(format!("{}/v1/site", self.base))).await
    }

    pub async fn put(
        &self,
        key: &ObjectKey,
        document: &ObjectDocument,
        if_match: Option<&str>,
    ) -> anyhow::Result<Written> {
        let mut request = self.http.request(Method::PUT, self.object_url(key)).json(document);
        if let Some(v) = if_match {
            request = request.header("if-match", format!("\"{v}\""));
        }
        let response = self.send(request).await?;
        let created = response.status() == StatusCode::CREATED;
        let document = response.json().await.context("the site's answer is not an object document")?;
        Ok(Written { document, created })
    }

    /// Writes many documents in one request (`POST /v1/apply`): one outcome each, in order.
    pub async fn apply_many(&self, documents: &[&ObjectDocument]) -> anyhow::Result<ApplyResponse> {
        let body = serde_json::json!({ "items": documents });
        self.json(self.http.post(format!("{}/v1/apply", self.base)).json(&body)).await
    }

    pub async fn get(&self, key: &ObjectKey) -> anyhow::Result<ObjectDocument> {
        self.json(self.http.get(self.object_url(key))).await
    }

    pub async fn delete(&self, key: &ObjectKey, if_match: Option<&str>) -> anyhow::Result<ObjectDocument> {
        let mut request = self.http.delete(self.object_url(key));
        if let Some(v) = if_match {
            request = request.header("if-match", format!("\"{v}\""));
        }
        self.json(request).await
    }

    pub async fn list(&self, query: &[(&str, String)]) -> anyhow::Result<ObjectPage> {
        self.json(self.http.get(format!("{}/v1/objects", self.base)).query(query)).await
    }

    pub async fn history(&self, key: &ObjectKey) -> anyhow::Result<HistoryPage> {
        self.json(self.http.get(format!("{}/history", self.object_url(key)))).await
    }

    pub async fn sync_status(&self, now: bool) -> anyhow::Result<replication::SyncStatus> {
        if now {
            self.json(self.http.post(format!("{}/v1/sync/now", self.base))).await
        } else {
            self.json(self.http.get(format!("{}/v1/sync", self.base))).await
        }
    }

    pub async fn signal(&self, peer: &str, state: &str) -> anyhow::Result<replication::LinkStatus> {
        let body = serde_json::json!({ "state": state });
        self.json(self.http.post(format!("{}/v1/links/{peer}/signal", self.base)).json(&body)).await
    }

    pub async fn audit(&self, query: &[(&str, String)]) -> anyhow::Result<AuditPage> {
        self.json(self.http.get(format!("{}/v1/audit", self.base)).query(query)).await
    }

    pub async fn conflicts(&self, query: &[(&str, String)]) -> anyhow::Result<ConflictPage> {
        self.json(self.http.get(format!("{}/v1/conflicts", self.base)).query(query)).await
    }

    /// A conflict id goes into the path: it must be a plain token (the site checks the rest).
    fn conflict_url(&self, id: &str, action: &str) -> anyhow::Result<String> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(anyhow!(
                "`{id}` is not a conflict id; an id is 16 hex digits (`souverix conflicts list` shows them)"
            ));
        }
        Ok(format!("{}/v1/conflicts/{id}{action}", self.base))
    }

    pub async fn conflict(&self, id: &str) -> anyhow::Result<ConflictDetail> {
        self.json(self.http.get(self.conflict_url(id, "")?)).await
    }

    pub async fn acknowledge(&self, id: &str) -> anyhow::Result<ConflictItem> {
        self.json(self.http.post(self.conflict_url(id, "/ack")?)).await
    }

    pub async fn resolve(&self, id: &str, pick: &str) -> anyhow::Result<Resolution> {
        let body = serde_json::json!({ "pick": pick });
        self.json(self.http.post(self.conflict_url(id, "/resolve")?).json(&body)).await
    }

    pub async fn deliveries(&self, query: &[(&str, String)]) -> anyhow::Result<DeliveryPage> {
        self.json(self.http.get(format!("{}/v1/webhooks/deliveries", self.base)).query(query)).await
    }

    /// Opens the event stream: a response whose body is `text/event-stream`, read as it
    /// arrives (no overall timeout: it lasts until the site or the caller ends it).
    pub async fn events(&self, query: &[(&str, String)]) -> anyhow::Result<reqwest::Response> {
        let request = self
            .http
            .get(format!("{}/v1/events", self.base))
            .query(query)
            .header("accept", "text/event-stream")
            .timeout(std::time::Duration::from_secs(365 * 24 * 3600));
        Ok(self.send(request).await?)
    }
}

#[derive(serde::Deserialize)]
struct ProblemBody {
    title: String,
    detail: String,
}

/// The innermost cause of a transport error, which is the one that explains it
/// (`Connection refused (os error 111)`).
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
