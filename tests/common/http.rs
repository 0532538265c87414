//! The admin and control endpoints over HTTP, through a well-kept client
//! (ureq): status and body of a GET or POST, and the Prometheus samples.

use super::*;
use std::net::SocketAddr;

/// A client that reports every status (a 4xx or 5xx is an answer here,
/// not an error) and gives up after [`TIMEOUT`].
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(TIMEOUT))
        .build()
        .into()
}

/// The status code and body of `response`.
fn answer(
    what: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> (u16, String) {
    let mut response = response.unwrap_or_else(|e| panic!("{what}: no HTTP answer: {e}"));
    let body = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("{what}: unreadable body: {e}"));
    (response.status().as_u16(), body)
}

/// `GET path`; returns the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    answer(
        &format!("GET {path}"),
        agent().get(format!("http://{addr}{path}")).call(),
    )
}

/// `POST path` with `body`; returns the status code and body.
pub fn http_post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    http_post_as(addr, path, body, None)
}

/// [`http_post`] with `token` as the bearer token, if any.
pub fn http_post_as(
    addr: SocketAddr,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut request = agent()
        .post(format!("http://{addr}{path}"))
        .content_type("text/plain");
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    answer(&format!("POST {path}"), request.send(body))
}

/// The samples of `GET /metrics`, by series (`name{labels}`).
pub fn metrics(admin: SocketAddr) -> std::collections::HashMap<String, f64> {
    let (code, body) = http_get(admin, "/metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            (series.to_owned(), value.parse().expect("a numeric sample"))
        })
        .collect()
}

/// One series of `GET /metrics`, e.g.
/// `tcphost_connections_open{tenant="seed"}`; panics if it is missing.
pub fn metric(admin: SocketAddr, series: &str) -> f64 {
    let all = metrics(admin);
    *all.get(series)
        .unwrap_or_else(|| panic!("no series {series} in /metrics: {all:?}"))
}

/// Polls `series` until `ok` holds for it, at most [`TIMEOUT`].
pub fn wait_metric(admin: SocketAddr, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let value = metric(admin, series);
        if ok(value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed at {value} for {TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
