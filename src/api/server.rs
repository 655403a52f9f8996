//! The HTTP server loop, written on hyper directly instead of `axum::serve`, for what a LAN peer
//! must not be able to do to the tills (docs/security.md, finding 1):
//! - hold a connection forever: the headers of each request must arrive within
//!   `api.header_read_timeout`, which also bounds an idle keep-alive connection, and a whole
//!   request (its body included) gets four times that;
//! - exhaust descriptors or starve the tills by opening connections: at most
//!   `api.max_connections_per_client` from one address and `api.max_connections` in all; a
//!   connection over either is answered `503` at once and closed.
//!
//! `axum::serve` sets no timer on hyper, so hyper's header timeout never fires there, and it
//! accepts every connection it is offered.

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

/// The limits of the loop, from `[api]`.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub header_read_timeout: Duration,
}

/// How long shutdown waits for open connections to finish their request in flight.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Open connections, per client address and in all.
#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// A connection's place in [`Open`], given back when it closes.
struct Admitted {
    open: Arc<Mutex<Open>>,
    client: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock() {
            open.total = open.total.saturating_sub(1);
            if let Some(n) = open.by_client.get_mut(&self.client) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.by_client.remove(&self.client);
                }
            }
        }
    }
}

fn admit(open: &Arc<Mutex<Open>>, client: IpAddr, limits: &ServeLimits) -> Option<Admitted> {
    let mut guard = open.lock().ok()?;
    let from_client = guard.by_client.get(&client).copied().unwrap_or(0);
    if guard.total >= limits.max_connections || from_client >= limits.max_connections_per_client {
        return None;
    }
    guard.total += 1;
    *guard.by_client.entry(client).or_insert(0) += 1;
    Some(Admitted {
        open: Arc::clone(open),
        client,
    })
}

/// What a connection over the limits is told before it is closed.
const OVER_LIMIT: &str = "{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many \
    open connections (api.max_connections, api.max_connections_per_client); close idle ones \
    and retry\"}}";

async fn refuse(mut stream: TcpStream) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: \
         1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{OVER_LIMIT}",
        OVER_LIMIT.len()
    );
    // A peer that does not read its refusal is not waited for.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Serve `app` on `listener` until `shutdown` resolves, then let open connections finish the
/// request in flight (bounded) and return.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let open = Arc::new(Mutex::new(Open::default()));
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut refusals_logged_at: Option<std::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a peer gone before accept: keep serving the others.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Some(admitted) = admit(&open, peer.ip(), &limits) else {
            if refusals_logged_at.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                refusals_logged_at = Some(std::time::Instant::now());
                tracing::warn!(client = %peer.ip(), limits = ?limits,
                    "refusing connections over the limits (logged once per 10 s)");
            }
            connections.spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            peer,
            app.clone(),
            limits,
            admitted,
            closed.clone(),
        ));
    }
    let _ = closing.send(true);
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "connections still open {DRAIN_LIMIT:?} after shutdown began: closed without waiting"
        );
        connections.abort_all();
    }
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ServeLimits,
    _admitted: Admitted,
    mut closed: tokio::sync::watch::Receiver<bool>,
) {
    let request_limit = limits.header_read_timeout.saturating_mul(4);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // The peer address feeds the per-client rate limit.
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move {
            let request = request.map(axum::body::Body::new);
            // A slow body (or a stuck handler) cannot hold the connection: a streamed
            // response is already on its way once the handler returned, so live streams are
            // not cut by this.
            match tokio::time::timeout(request_limit, app.call(request)).await {
                Ok(response) => response,
                Err(_) => Ok(super::ApiError::new(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request took longer than {request_limit:?} to arrive and be \
                         answered; nothing was recorded unless a retry with its key says so"
                    ),
                )
                .into_response()),
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let closing = async move {
        let _ = closed.wait_for(|closing| *closing).await;
    };
    tokio::select! {
        _ = conn.as_mut() => return,
        () = closing => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_share_is_refused_and_its_places_come_back_when_it_closes() {
        let open = Arc::new(Mutex::new(Open::default()));
        let limits = ServeLimits {
            max_connections: 3,
            max_connections_per_client: 2,
            header_read_timeout: Duration::from_secs(1),
        };
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = admit(&open, a, &limits);
        let second = admit(&open, a, &limits);
        assert!(first.is_some() && second.is_some());
        assert!(admit(&open, a, &limits).is_none(), "a's share is 2");
        let other = admit(&open, b, &limits);
        assert!(other.is_some(), "b still gets in");
        assert!(admit(&open, b, &limits).is_none(), "3 in all");
        drop(first);
        assert!(admit(&open, b, &limits).is_some());
    }
}
