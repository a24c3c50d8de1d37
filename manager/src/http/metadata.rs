//! The metadata service's HTTP side: one listener per network with a
//! subnet, on 169.254.169.254:80 bound to that network's bridge
//! (`SO_BINDTODEVICE`, so the bridge a connection arrived on names the
//! network; `SO_REUSEADDR`), HTTP/1.1 with keep-alive (hyper). Who a
//! connection is from is settled once, at accept, from the bridge and
//! the peer address ([`Metadata::identify`]); each request is then
//! answered from the store. A network's stop aborts its accept task,
//! which drops its open connections with it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use kiln_api::compute::Network;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;

use crate::metadata::{Answer, Identity, Metadata};
use crate::net::link;
use crate::networks::{MetadataSpawner, METADATA_IP};
use crate::store::MAX_PASSWORD;

/// The most of a post's body read before answering it.
const DRAIN: usize = 64 * 1024;

/// What [`crate::networks::Services`] calls to start a network's
/// metadata listener.
pub fn spawner(md: Arc<Metadata>) -> MetadataSpawner {
    Box::new(move |net: &Network| match listen(&net.bridge) {
        Ok(l) => {
            let task = tokio::spawn(serve(md.clone(), net.id.clone(), net.bridge.clone(), l));
            Some(task.abort_handle())
        }
        Err(e) => {
            tracing::warn!(bridge = net.bridge, error = %e, "cannot listen for metadata requests");
            None
        }
    })
}

/// A listener on 169.254.169.254:80 of `bridge` only.
fn listen(bridge: &str) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind_device(Some(bridge.as_bytes()))?;
    s.bind(SocketAddr::from((METADATA_IP, 80)))?;
    s.listen(1024)
}

async fn serve(md: Arc<Metadata>, network_id: String, bridge: String, l: TcpListener) {
    let index = match link::get(&bridge).await {
        Ok(Some(b)) => b.index,
        other => {
            tracing::warn!(bridge, ?other, "metadata: cannot look up the bridge");
            return;
        }
    };
    tracing::info!(bridge, network = network_id, "metadata service listening");
    let network_id = Arc::new(network_id);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = l.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (md, network_id) = (md.clone(), network_id.clone());
                    conns.spawn(async move {
                        let _ = stream.set_nodelay(true);
                        let who = Arc::new(md.identify(&network_id, index, peer.ip()).await);
                        let svc = hyper::service::service_fn(move |req| {
                            let (md, who) = (md.clone(), who.clone());
                            async move { Ok::<_, Infallible>(answer(&md, &who, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(Duration::from_secs(30))
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Err(e) => {
                    tracing::warn!(bridge, error = %e, "metadata: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn answer(md: &Metadata, who: &Identity, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    // A post's body is read whoever sends it: answering before it is read
    // would close the connection with the body unread, which the kernel
    // turns into a reset the client may see instead of the answer. Up to
    // [`DRAIN`] is read; beyond [`MAX_PASSWORD`] it is too long.
    let body = if method == Method::POST {
        match Limited::new(req.into_body(), DRAIN).collect().await {
            Ok(b) => Some(b.to_bytes()).filter(|b| b.len() <= MAX_PASSWORD),
            Err(_) => None,
        }
    } else {
        None
    };
    let a = match (who, method) {
        (Identity::Unknown, _) => Answer::status(404),
        (_, Method::GET) => md.get(who, &path).await,
        (_, Method::HEAD) => Answer {
            body: Vec::new(),
            ..md.get(who, &path).await
        },
        (_, Method::POST) => md.post(who, &path, body.as_deref()).await,
        _ => Answer::status(405),
    };
    let mut r = Response::new(Full::new(Bytes::from(a.body)));
    *r.status_mut() = hyper::StatusCode::from_u16(a.status).unwrap_or_default();
    if let Ok(v) = hyper::header::HeaderValue::from_str(a.content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
