//! The `/metrics` endpoint: a small HTTP/1 server (hyper) on the controller's runtime. Each
//! scrape asks the controller's event loop, which owns the datapath, for a fresh exposition.

use std::{convert::Infallible, net::SocketAddr};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::CONTENT_TYPE,
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};

/// Where `otfw run` serves metrics unless told otherwise (loopback only).
pub const DEFAULT_ADDR: &str = "127.0.0.1:9725";

/// A scrape waiting for the controller: answered with the text exposition.
pub type ScrapeRequest = oneshot::Sender<String>;

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr`; fails with what to do when the address is taken.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "serving metrics on {addr}; is another otfw running? choose another address with \
             --metrics ADDR, or --metrics off"
        )
    })
}

/// Serves `/metrics` on `listener` until the runtime stops; scrapes go to `scrapes`.
pub async fn serve(listener: TcpListener, scrapes: mpsc::Sender<ScrapeRequest>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("metrics: accept failed: {e}");
                continue;
            }
        };
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, scrapes.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                log::debug!("metrics: connection from {peer}: {e}");
            }
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    scrapes: mpsc::Sender<ScrapeRequest>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status, content_type, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(content_type),
        );
        Ok(response)
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let (tx, rx) = oneshot::channel();
            if scrapes.send(tx).await.is_err() {
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "shutting down\n".into(),
                );
            }
            match rx.await {
                Ok(body) => reply(StatusCode::OK, TEXT_FORMAT, body),
                Err(_) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "reading the datapath failed; see the controller's log\n".into(),
                ),
            }
        }
        "/" => reply(
            StatusCode::OK,
            "text/plain",
            "otfw: metrics at /metrics\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
