//! The opt-in admin endpoint: HTTP on an operator-chosen address, for
//! people and probes. `GET /status` lists every tenant (state, restarts,
//! connections, last error, counters) as JSON; `GET /status/{name}` shows
//! one; `GET /healthz` answers 200 when every tenant is running, 503 with
//! the ones that are not otherwise.

use crate::tenant::{Snapshot, State, Tenant};
use axum::Json;
use axum::extract::{Path, State as Shared};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use std::sync::Arc;

/// Every tenant the host runs, shared with the handlers.
type Tenants = Arc<Vec<Arc<Tenant>>>;

#[derive(Serialize)]
struct StatusBody {
    tenants: Vec<Snapshot>,
}

/// Serves the admin endpoint on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, tenants: Tenants) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/status", get(status))
        .route("/status/{name}", get(status_of))
        .route("/healthz", get(healthz))
        .with_state(tenants);
    axum::serve(listener, app).await
}

async fn status(Shared(tenants): Shared<Tenants>) -> Json<StatusBody> {
    Json(StatusBody {
        tenants: tenants.iter().map(|t| t.snapshot()).collect(),
    })
}

async fn status_of(Shared(tenants): Shared<Tenants>, Path(name): Path<String>) -> Response {
    match tenants.iter().find(|t| t.name() == name) {
        Some(tenant) => Json(tenant.snapshot()).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no tenant named {name:?}\n")).into_response(),
    }
}

async fn healthz(Shared(tenants): Shared<Tenants>) -> Response {
    let unhealthy: Vec<String> = tenants
        .iter()
        .filter(|t| t.state() != State::Running)
        .map(|t| format!("{}: {:?}", t.name(), t.state()))
        .collect();
    if unhealthy.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", unhealthy.join("\n")),
        )
            .into_response()
    }
}
