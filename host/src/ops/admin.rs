//! The host's two HTTP endpoints, both opt-in: the admin endpoint, for
//! reading (people, probes, Prometheus), and the control endpoint, for
//! changing what runs. Reading and changing have different doors, so the
//! first can be opened to a monitoring network and the second kept on
//! loopback or a Unix socket behind a credential.
//!
//! Admin (read-only):
//! - `GET /status`: every tenant (state, version, restarts, connections,
//!   counters, last error) as JSON; `GET /status/{name}`: one tenant.
//! - `GET /healthz`: the host's readiness for a load balancer: 503 while a
//!   tenant is still starting (for at most [`START_GRACE`]) or the host is
//!   stopping, else 200. A tenant that fails later does not make the host
//!   unready: its neighbours still serve, and a hostile tenant must not be
//!   able to take them out of a load balancer. The body lists every tenant
//!   not running. `GET /healthz/{name}`: 200 while that tenant is running
//!   (serving on its addresses), else 503 with its state.
//! - `GET /metrics`: counters per tenant and host-wide, for Prometheus
//!   (crate::ops::metrics).
//! - A control request here is refused (405), pointing at the control
//!   endpoint.
//!
//! Control (every request needs `Authorization: Bearer TOKEN`, the token
//! file's content, when a token file is set; each request is counted and
//! logged as an audit line, its path cut past 200 bytes; refused ones at
//! most 10 a second, the next line saying how many were left out):
//! - `POST /tenants/{name}/swap` with a component (a path on the host, or
//!   `builtin:NAME`) as the body: swaps that tenant's guest live; 200 with
//!   the time the new version took to listen, or why not (the old version
//!   keeps serving): 404 for an unknown tenant, 503 once the host is
//!   stopping, 422 for a component that cannot be used.
//! - `POST /reload`: re-reads the manifest, as SIGHUP does; 200 with what
//!   changed, or why nothing did: 503 once the host is stopping, else 422.
//! - `GET /status`, as on the admin endpoint.

use super::metrics::{self, Audited};
use super::slots::{NoSlot, Slots};
use crate::account::log_budget::{LogBudget, left_out_note};
use crate::config::model::ComponentSource;
use crate::tenancy::control::{Control, ReloadError, SwapError};
use crate::tenancy::tenant::{Snapshot, State as TenantState};
use axum::Json;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

#[derive(Serialize)]
struct StatusBody {
    tenants: Vec<Snapshot>,
}

/// Serves the read-only admin endpoint on `listener` until the process
/// ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<Control>,
    audited: Arc<Audited>,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/status", get(status))
        .route("/status/{name}", get(status_of))
        .route("/healthz", get(healthz))
        .route("/healthz/{name}", get(healthz_of))
        .route("/metrics", get(metrics))
        .route("/tenants/{name}/swap", any(elsewhere))
        .route("/reload", any(elsewhere))
        .layer(axum::Extension(audited))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(control);
    serve_bounded(listener, app, |addr| Some(*addr)).await
}

/// Longest a client may take to send a request's headers (also the
/// longest an idle kept-alive connection stays open).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one connection may last: a swap answers within its 10 s listen
/// timeout and 1 s settle.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `app` on `listener`, within its slots (crate::ops::slots: a
/// bounded number, a share per client, idle ones shed first, so a flood
/// costs the host a bounded number of tasks and descriptors, no tenant
/// anything, and cannot keep a readiness probe out), [`HEADER_TIMEOUT`]
/// and [`CONNECTION_TIMEOUT`]; `peer` gives a TCP client's address for the
/// audit lines and the per-client share.
async fn serve_bounded<L>(
    mut listener: L,
    app: axum::Router,
    peer: fn(&L::Addr) -> Option<std::net::SocketAddr>,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use std::sync::atomic::Ordering;
    use tower::ServiceExt as _;
    let slots = Arc::new(Slots::default());
    loop {
        let (io, addr) = listener.accept().await;
        let peer = peer(&addr);
        let slot = match slots.take(peer.map(|p| p.ip())) {
            Ok(slot) => slot,
            Err(why) => {
                // Told, not left guessing (briefly: a client that does not
                // read cannot hold this up).
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let mut io = io;
                    let body = match why {
                        NoSlot::ClientFull => "busy: too many connections from this client\n",
                        NoSlot::AllBusy => "busy: too many connections at once\n",
                    };
                    let busy = format!(
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), io.write_all(busy.as_bytes()))
                            .await;
                });
                continue;
            }
        };
        let app = match peer {
            Some(peer) => app.clone().layer(axum::Extension(ConnectInfo(peer))),
            None => app.clone(),
        };
        tokio::spawn(async move {
            // Inside a request, the connection keeps its slot; between
            // requests (or before its first) it may be shed for a newer one.
            let busy = slot.busy.clone();
            let service = hyper::service::service_fn(move |request| {
                busy.store(true, Ordering::Relaxed);
                let (busy, response) = (busy.clone(), app.clone().oneshot(request));
                async move {
                    let response = response.await;
                    busy.store(false, Ordering::Relaxed);
                    response
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(io), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => {}
                () = slot.close.notified() => {}
            }
        });
    }
}

/// Largest request body either endpoint reads: a component's path, or
/// nothing.
const MAX_BODY: usize = 64 * 1024;

async fn elsewhere() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        "this admin endpoint is read-only: swaps and reloads go to the control endpoint ([host] control)\n",
    )
        .into_response()
}

/// Where the control endpoint listens.
pub enum ControlListener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// A Unix socket.
    Unix(tokio::net::UnixListener),
}

/// Serves the control endpoint on `listener` until the process ends;
/// every request needs the token in `token_file`, if set.
pub async fn serve_control(
    listener: ControlListener,
    control: Arc<Control>,
    token_file: Option<PathBuf>,
    audited: Arc<Audited>,
) -> std::io::Result<()> {
    let guard = Arc::new(Guard {
        token_file,
        audited,
        refusals_log: LogBudget::default(),
    });
    let app = axum::Router::new()
        .route("/status", get(status))
        .route("/tenants/{name}/swap", post(swap))
        .route("/reload", post(reload))
        .layer(middleware::from_fn_with_state(guard, audit))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(control);
    match listener {
        ControlListener::Tcp(listener) => serve_bounded(listener, app, |addr| Some(*addr)).await,
        ControlListener::Unix(listener) => serve_bounded(listener, app, |_| None).await,
    }
}

/// What the control endpoint's gate needs.
struct Guard {
    token_file: Option<PathBuf>,
    /// Where the requests are counted.
    audited: Arc<Audited>,
    /// Bounds how fast refused requests, which anyone who reaches the
    /// endpoint can send, fill the log (all are counted).
    refusals_log: LogBudget,
}

/// The longest request path an audit line shows; a longer one is cut.
const SHOWN_PATH: usize = 200;

/// `path` as an audit line shows it: cut past [`SHOWN_PATH`] bytes, with
/// its full length said.
fn shown(path: &str) -> std::borrow::Cow<'_, str> {
    if path.len() <= SHOWN_PATH {
        return path.into();
    }
    let mut end = SHOWN_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &path[..end], path.len()).into()
}

/// Checks the credential, runs the request, and logs and counts it: one
/// audit line per request (when is the line's time), saying from where,
/// what, and the outcome. Never logs the token.
async fn audit(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "the unix socket".to_owned(), |c| c.0.to_string());
    let method = request.method().clone();
    let full_path = request.uri().path();
    let action = action_of(full_path);
    let path = shown(full_path).into_owned();
    if let Some(file) = &guard.token_file {
        let presented = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Err(why) = check_token(file, presented) {
            guard.audited.count(action, 2);
            if let Some(left_out) = guard.refusals_log.admit(0) {
                let note = left_out_note(left_out);
                warn!(target: "audit", %peer, %method, path, "audit: {peer}: {method} {path}: refused, {why}{note}");
            }
            return (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                "unauthorized: send the control token as Authorization: Bearer TOKEN\n",
            )
                .into_response();
        }
    }
    // Before acting, so an action whose client goes away is on record too.
    info!(target: "audit", %peer, %method, path, "audit: {peer}: {method} {path}: authorized, begun");
    let response = next.run(request).await;
    let status = response.status();
    let outcome = if status.is_success() { 0 } else { 1 };
    guard.audited.count(action, outcome);
    info!(target: "audit", %peer, %method, path, status = status.as_u16(), "audit: {peer}: {method} {path}: {status}");
    response
}

/// The action a request path names, as the audit counter indexes it.
fn action_of(path: &str) -> usize {
    match path {
        "/reload" => 1,
        "/status" => 2,
        p if p.starts_with("/tenants/") && p.ends_with("/swap") => 0,
        _ => 3,
    }
}

/// Whether `presented` is the token in `file`, compared in constant time.
/// The file is read at every request, so replacing it rotates the token.
fn check_token(file: &std::path::Path, presented: Option<&str>) -> Result<(), String> {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let Some(presented) = presented else {
        return Err("no bearer token".into());
    };
    let token = read_token(file)?;
    // Digests of equal length, so not even the token's length shows in
    // the time the comparison takes.
    let digest = |text: &str| -> [u8; 32] { sha2::Sha256::digest(text.as_bytes()).into() };
    if bool::from(digest(&token).ct_eq(&digest(presented.trim()))) {
        Ok(())
    } else {
        Err("wrong bearer token".into())
    }
}

/// The token in `file` (surrounding whitespace trimmed): an error if it
/// cannot be read or is empty.
pub fn read_token(file: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the token file {}: {e}", file.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", file.display()));
    }
    Ok(token.to_owned())
}

async fn status(State(control): State<Arc<Control>>) -> Json<StatusBody> {
    Json(StatusBody {
        tenants: control.tenants().iter().map(|t| t.snapshot()).collect(),
    })
}

async fn status_of(State(control): State<Arc<Control>>, Path(name): Path<String>) -> Response {
    match control.tenants().iter().find(|t| t.name() == name) {
        Some(tenant) => Json(tenant.snapshot()).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no tenant named {name:?}\n")).into_response(),
    }
}

/// How long a tenant that has not listened yet keeps the host unready.
pub const START_GRACE: Duration = Duration::from_secs(10);

async fn healthz(State(control): State<Arc<Control>>) -> Response {
    if control.is_stopping() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping: draining open connections\n",
        )
            .into_response();
    }
    let tenants = control.tenants();
    let starting = tenants
        .iter()
        .any(|t| t.state() == TenantState::Starting && t.state_for() < START_GRACE);
    let not_running: String = tenants
        .iter()
        .filter(|t| t.state() != TenantState::Running)
        .map(|t| format!("{}: {}\n", t.name(), t.state()))
        .collect();
    if starting {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("starting\n{not_running}"),
        )
            .into_response()
    } else {
        (StatusCode::OK, format!("ok\n{not_running}")).into_response()
    }
}

async fn healthz_of(State(control): State<Arc<Control>>, Path(name): Path<String>) -> Response {
    let Some(tenant) = control.tenants().into_iter().find(|t| t.name() == name) else {
        return (StatusCode::NOT_FOUND, format!("no tenant named {name:?}\n")).into_response();
    };
    match tenant.state() {
        TenantState::Running => (StatusCode::OK, "running\n").into_response(),
        state => (StatusCode::SERVICE_UNAVAILABLE, format!("{state}\n")).into_response(),
    }
}

async fn metrics(
    State(control): State<Arc<Control>>,
    axum::Extension(audited): axum::Extension<Arc<Audited>>,
) -> Response {
    match metrics::render(&control, &audited) {
        Ok(text) => (
            [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

async fn swap(
    State(control): State<Arc<Control>>,
    Path(name): Path<String>,
    body: String,
) -> Response {
    // What the swap itself would refuse first, answered before the body is
    // read or a registry checked: the status says the same either way.
    let refused = if control.is_stopping() {
        Some(SwapError::Stopping)
    } else if !control.tenants().iter().any(|t| t.name() == name) {
        Some(SwapError::NoTenant(name.clone()))
    } else {
        None
    };
    if let Some(e) = refused {
        return swap_refused(&e);
    }
    let component = body.trim();
    if component.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "the body must name a component: a path, builtin:NAME or oci://REGISTRY/REPOSITORY:TAG\n",
        )
            .into_response();
    }
    let source = match ComponentSource::parse(component, std::path::Path::new("")) {
        Ok(source) => source,
        Err(why) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not swapped: {component:?} {why}\n"),
            )
                .into_response();
        }
    };
    // Read once, beneath an allowed directory: the bytes are what is
    // loaded, whatever is done to the path after. A registry must be one
    // swaps may pull from.
    let bytes = match &source {
        ComponentSource::File(path) => match control.read_swappable(path) {
            Ok(bytes) => Some(bytes),
            Err(why) => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("not swapped: {why}\n"),
                )
                    .into_response();
            }
        },
        ComponentSource::Oci(reference) => match control.may_pull(reference) {
            Ok(()) => None,
            Err(why) => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("not swapped: {why}\n"),
                )
                    .into_response();
            }
        },
        ComponentSource::Builtin(_) => None,
    };
    // In a task of its own: a client that goes away, or the connection's
    // deadline, cannot stop a swap halfway.
    let outcome = {
        let (control, name) = (control.clone(), name.clone());
        tokio::spawn(async move { control.swap(&name, source, bytes).await }).await
    };
    let outcome =
        outcome.unwrap_or_else(|e| Err(SwapError::Refused(format!("the swap task failed: {e}"))));
    match outcome {
        Ok(took) => (
            StatusCode::OK,
            format!(
                "swapped {name} to {component}; the new version listened after {} ms\n",
                took.as_millis()
            ),
        )
            .into_response(),
        Err(e) => swap_refused(&e),
    }
}

/// The answer to a swap that changed nothing, its status saying why.
fn swap_refused(e: &SwapError) -> Response {
    let status = match e {
        SwapError::NoTenant(_) => StatusCode::NOT_FOUND,
        SwapError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        SwapError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (status, format!("not swapped: {e}\n")).into_response()
}

async fn reload(State(control): State<Arc<Control>>) -> Response {
    // In a task of its own, as a swap (see `swap`).
    let outcome = tokio::spawn(async move { control.reload().await }).await;
    let outcome = outcome
        .unwrap_or_else(|e| Err(ReloadError::Refused(format!("the reload task failed: {e}"))));
    match outcome {
        Ok(report) => Json(report).into_response(),
        Err(e) => {
            let status = match e {
                ReloadError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
                ReloadError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (status, format!("not reloaded, nothing changed: {e}\n")).into_response()
        }
    }
}
