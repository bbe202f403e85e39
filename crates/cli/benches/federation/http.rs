//! The bench's HTTP client for our sites: HTTP/1.1 connections kept open and reused, one request
//! at a time on each, as an operator's tool writing many objects keeps its connections. It
//! shares the machine with the sites it measures, so it does no more than send a request and
//! read the answer (no redirects, retries or proxies to look up).

use std::collections::HashMap;
use std::sync::Mutex;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;

/// Idle connections, by `host:port`.
#[derive(Default)]
pub struct Client {
    idle: Mutex<HashMap<String, Vec<SendRequest<Full<Bytes>>>>>,
}

/// A status and the whole body of an answer.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    /// Sends `body` as JSON to `url` (`http://host:port/path`) and reads the whole answer.
    pub async fn send(&self, method: Method, url: &str, body: Bytes) -> anyhow::Result<Answer> {
        let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("not an http:// URL: {url}"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut sender = match self.take(authority) {
            Some(sender) => sender,
            None => connect(authority).await?,
        };
        let request = Request::builder()
            .method(method)
            .uri(if path.is_empty() { "/" } else { path })
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !sender.is_closed() {
            crate::lock(&self.idle).entry(authority.to_owned()).or_default().push(sender);
        }
        Ok(Answer { status, body })
    }

    /// An idle connection to `authority` that can take a request now.
    fn take(&self, authority: &str) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = crate::lock(&self.idle);
        let senders = idle.get_mut(authority)?;
        while let Some(sender) = senders.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }
}

async fn connect(authority: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Ends when the sender is dropped or the server closes the connection.
    tokio::spawn(connection);
    Ok(sender)
}
