//! Authorisation with a registry: anonymous, basic, or the token flow
//! (the registry's `WWW-Authenticate` challenge answered at its token
//! service), with credentials from a Docker `config.json`, never logged.

use super::*;
use crate::config::source::OciRef;
use tracing::warn;

/// The credentials configured for a registry.
pub(super) enum Credentials {
    Anonymous,
    Basic(String, String),
}

/// How a registry's requests are authorised, once its challenge is
/// answered.
pub(super) enum Authorization {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

impl Authorization {
    pub(super) fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Authorization::Anonymous => request,
            Authorization::Basic(user, password) => request.basic_auth(user, Some(password)),
            Authorization::Bearer(token) => request.bearer_auth(token),
        }
    }
}

impl Puller {
    /// How requests to `wanted`'s registry are authorised: the registry's
    /// challenge answered with the configured credentials, through the
    /// token flow (as Docker Hub and GHCR use) or basic auth.
    pub(super) async fn authorize(&self, wanted: &OciRef) -> Result<Authorization, PullError> {
        let credentials = self.credentials(&wanted.registry);
        let url = format!("{}/v2/", self.base_url(&wanted.registry));
        let (status, headers, _) = self.get(self.http.get(&url), SMALL_BODY, "/v2/").await?;
        if status.is_success() {
            return Ok(Authorization::Anonymous);
        }
        if status != reqwest::StatusCode::UNAUTHORIZED {
            return Err(answered(status, &url));
        }
        let challenge = headers
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let challenges = http_auth::parse_challenges(&challenge).map_err(|e| {
            PullError::Refused(format!("the registry's auth challenge does not parse: {e}"))
        })?;
        let param = |c: &http_auth::ChallengeRef<'_>, name: &str| {
            c.params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_unescaped())
        };
        if let Some(bearer) = challenges
            .iter()
            .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        {
            let realm = param(bearer, "realm").ok_or_else(|| {
                PullError::Refused("the registry's Bearer challenge names no realm".into())
            })?;
            let service = param(bearer, "service");
            return self
                .token(wanted, &realm, service.as_deref(), &credentials)
                .await;
        }
        if challenges
            .iter()
            .any(|c| c.scheme.eq_ignore_ascii_case("basic"))
        {
            return match credentials {
                Credentials::Basic(user, password) => Ok(Authorization::Basic(user, password)),
                Credentials::Anonymous => Err(PullError::Refused(format!(
                    "the registry answered 401 Unauthorized for {url}: it wants credentials, and none are configured for {}",
                    wanted.registry
                ))),
            };
        }
        Err(PullError::Refused(format!(
            "the registry answered 401 Unauthorized for {url} with no challenge the host can answer"
        )))
    }

    /// The registry token flow: a token for pulling `wanted`'s repository
    /// from the token service at `realm`, which must be HTTPS (or, like a
    /// registry, plain HTTP on loopback or where the operator allows it),
    /// as credentials may be sent to it.
    pub(super) async fn token(
        &self,
        wanted: &OciRef,
        realm: &str,
        service: Option<&str>,
        credentials: &Credentials,
    ) -> Result<Authorization, PullError> {
        let url = reqwest::Url::parse(realm).map_err(|e| {
            PullError::Refused(format!("the token realm {realm:?} is not a URL: {e}"))
        })?;
        let authority = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => String::new(),
        };
        let secure =
            url.scheme() == "https" || (url.scheme() == "http" && self.plain_http(&authority));
        if !secure {
            return Err(PullError::Refused(format!(
                "the token realm {realm} is not HTTPS: no credentials are sent to it"
            )));
        }
        let scope = format!("repository:{}:pull", wanted.repository);
        let mut query = vec![("scope", scope.as_str())];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let mut request = self.http.get(url).query(&query);
        if let Credentials::Basic(user, password) = credentials {
            request = request.basic_auth(user, Some(password));
        }
        let (status, _, body) = self.get(request, SMALL_BODY, "the token").await?;
        if !status.is_success() {
            return Err(answered(status, realm));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&body).map_err(|e| {
            PullError::Refused(format!("the token service's answer is not a token: {e}"))
        })?;
        token
            .token
            .or(token.access_token)
            .filter(|t| !t.is_empty())
            .map(Authorization::Bearer)
            .ok_or_else(|| PullError::Refused("the token service answered no token".into()))
    }

    /// The credentials for `registry` from the Docker `config.json` (the
    /// configured one, else the user's), anonymous if none.
    pub(super) fn credentials(&self, registry: &str) -> Credentials {
        let path = self
            .settings
            .credentials
            .clone()
            .or_else(default_docker_config);
        let Some(path) = path else {
            return Credentials::Anonymous;
        };
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                if self.settings.credentials.is_some() {
                    warn!(file = %path.display(), "cannot read registry credentials, pulling anonymously: {e}");
                }
                return Credentials::Anonymous;
            }
        };
        match docker_credential::get_credential_from_reader(file, registry) {
            Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
                Credentials::Basic(user, password)
            }
            Ok(docker_credential::DockerCredential::IdentityToken(_)) => {
                // An OAuth refresh token, for a flow the host does not
                // implement: pulls go anonymously, and say why.
                warn!(
                    registry,
                    "the registry's credentials are an identity token, which the host does not use: pulling anonymously"
                );
                Credentials::Anonymous
            }
            Err(_) => Credentials::Anonymous,
        }
    }
}
