//! The opt-in admin endpoint: HTTP on an operator-chosen address, for
//! people and probes.
//!
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
//!   (crate::metrics).
//! - `POST /tenants/{name}/swap` with a component (a path on the host, or
//!   `builtin:NAME`) as the body: swaps that tenant's guest live; 200 with
//!   the time the new version took to listen, or 422 with why not (the old
//!   version keeps serving).
//! - `POST /reload`: re-reads the manifest, as SIGHUP does; 200 with what
//!   changed, or 422 with why nothing did.

use crate::control::Control;
use crate::manifest::{BUILTIN_PREFIX, ComponentSource};
use crate::tenant::{Snapshot, State as TenantState};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Serialize)]
struct StatusBody {
    tenants: Vec<Snapshot>,
}

/// Serves the admin endpoint on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<Control>,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/status", get(status))
        .route("/status/{name}", get(status_of))
        .route("/healthz", get(healthz))
        .route("/healthz/{name}", get(healthz_of))
        .route("/metrics", get(metrics))
        .route("/tenants/{name}/swap", post(swap))
        .route("/reload", post(reload))
        .with_state(control);
    axum::serve(listener, app).await
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

async fn metrics(State(control): State<Arc<Control>>) -> Response {
    match crate::metrics::render(&control) {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                crate::metrics::CONTENT_TYPE,
            )],
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
    let component = body.trim();
    if component.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "the body must name a component: a path, or builtin:NAME\n",
        )
            .into_response();
    }
    let source = match component.strip_prefix(BUILTIN_PREFIX) {
        Some(builtin) => ComponentSource::Builtin(builtin.to_owned()),
        None => ComponentSource::File(
            std::path::absolute(component).unwrap_or_else(|_| component.into()),
        ),
    };
    match control.swap(&name, source).await {
        Ok(took) => (
            StatusCode::OK,
            format!(
                "swapped {name} to {component}; the new version listened after {} ms\n",
                took.as_millis()
            ),
        )
            .into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("not swapped: {e}\n"),
        )
            .into_response(),
    }
}

async fn reload(State(control): State<Arc<Control>>) -> Response {
    match control.reload().await {
        Ok(report) => Json(report).into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("not reloaded, nothing changed: {e}\n"),
        )
            .into_response(),
    }
}
