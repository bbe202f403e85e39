//! How a site reaches its neighbours: HTTP POSTs to the peer's sync endpoints. Behind a trait
//! so tests and the simulator can put their own network in between.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A failed exchange with a peer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("{0}")]
    Unreachable(String),
    #[error("the peer refused ({status}): {detail}")]
    Refused { status: u16, detail: String },
}

pub type Reply<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, TransportError>> + Send + 'a>>;

/// Sends a request body to a path of a peer and returns the answer's body.
pub trait Transport: Send + Sync {
    fn post<'a>(
        &'a self,
        base_url: &'a str,
        path: &'a str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Reply<'a>;
}

/// The real network: HTTP over reqwest.
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    pub fn new() -> Result<Self, TransportError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(4)
            .build()
            .map_err(|e| TransportError::Unreachable(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { client })
    }
}

impl Transport for HttpTransport {
    fn post<'a>(
        &'a self,
        base_url: &'a str,
        path: &'a str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Reply<'a> {
        Box::pin(async move {
            let response = self
                .client
                .post(format!("{base_url}{path}"))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .map_err(|e| TransportError::Unreachable(root_cause(&e)))?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| TransportError::Unreachable(root_cause(&e)))?;
            if status.is_success() {
                return Ok(bytes.to_vec());
            }
            let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
            Err(TransportError::Refused { status: status.as_u16(), detail })
        })
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
