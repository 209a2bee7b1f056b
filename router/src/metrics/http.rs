//! A tiny HTTP/1.1 listener over tokio TCP for `/metrics`, `/healthz` and
//! `/readyz`: one request per connection, `Connection: close`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::state::RouterState;

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `/readyz` waits for the store or a shard.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves the endpoints on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<RouterState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, state.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads one request and writes its response.
async fn answer(mut stream: TcpStream, state: Arc<RouterState>) {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(h)) => h,
        _ => return,
    };
    let (status, content_type, body) = respond(&state, &head).await;
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    if !head.starts_with("HEAD ") {
        let _ = stream.write_all(body.as_bytes()).await;
    }
    let _ = stream.shutdown().await;
}

/// The request head up to its blank line (`None`: too long or closed).
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(chunk.get(..n)?);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Status line, content type and body for a request head.
async fn respond(state: &RouterState, head: &str) -> (&'static str, &'static str, String) {
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET and HEAD\n".into());
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            super::render(state),
        ),
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" => match not_ready(state).await {
            None => ("200 OK", TEXT, "ready\n".into()),
            Some(why) => (
                "503 Service Unavailable",
                TEXT,
                format!("not ready: {why}\n"),
            ),
        },
        _ => (
            "404 Not Found",
            TEXT,
            "try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Why the router should not get traffic now, if it should not.
async fn not_ready(state: &RouterState) -> Option<String> {
    let store = state.catalog.store();
    match tokio::time::timeout(PROBE_TIMEOUT, store.revision()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Some(format!("config store does not answer: {e}")),
        Err(_) => return Some("config store does not answer within 2 s".into()),
    }
    if !state.metrics.routing_loaded.load(Ordering::Relaxed) {
        return Some("routing table not loaded".into());
    }
    let shards = state.placement.shards();
    if shards.is_empty() {
        return Some("no shards in the cluster".into());
    }
    let ping = bson::rawdoc! {"ping": 1, "$db": "admin"};
    let pings = shards.iter().map(|s| {
        let body: &bson::RawDocument = &ping;
        tokio::time::timeout(
            PROBE_TIMEOUT,
            state.pool_client.command(crate::shards::target(s), body),
        )
    });
    let answered = futures::future::join_all(pings)
        .await
        .into_iter()
        .any(|r| matches!(r, Ok(Ok(_))));
    (!answered).then(|| format!("none of the {} shards answers", shards.len()))
}
