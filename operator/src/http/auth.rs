//! Who is calling, and may they: every `/v1/…` route (but the gateway's
//! signed callbacks) and the codec endpoint ask for a bearer credential,
//! and Kubernetes RBAC decides what it may do — one model for kubectl and
//! HTTP alike.
//!
//! **Authentication.** `Authorization: Bearer <credential>`, one of:
//! - a Kubernetes token (a projected ServiceAccount token with the audience
//!   `paysaga`, or any token the API server authenticates for that
//!   audience), verified by a `TokenReview`;
//! - an API key `psk_<secret>_<random>` for clients outside the cluster: the
//!   Secret `<secret>` in the API's namespace, labelled
//!   `paysaga.dev/api-key=true`, holds the SHA-256 of `<random>` (never the
//!   key). The API watches those Secrets: deleting one revokes its key
//!   within the watch's delay (well under a second on a healthy cluster).
//!   An API key's user is `paysaga:apikey:<namespace>:<secret>`, in the
//!   group `paysaga:apikeys`, and is bound to roles like any user.
//!
//! An unknown key and a wrong one take the same work (a SHA-256 and a
//! constant-time comparison, against a stand-in hash when the Secret does
//! not exist) and get the same answer: 401.
//!
//! **Authorization.** A `SubjectAccessReview` asks whether the caller may
//! do the route's verb on the route's resource in the namespace (`create
//! payments` for `POST /v1/payments`, `patch payments` for cancel…; see
//! [`access`]). With payer scoping on, acting for a payer also needs
//! `use` on `payers.paysaga.dev` named by the `userId` (RBAC
//! `resourceNames` list the payers a caller owns).
//!
//! **Rate limits** per caller (by user name), 429 with `Retry-After`.
//!
//! Answers are cached briefly (a token review 10 s, an access decision
//! 5 s): a caller whose rights are taken away loses them within that.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::problem::Problem;

/// The audience a Kubernetes token must be issued for.
pub const DEFAULT_AUDIENCE: &str = "paysaga";
/// The label that marks a Secret as an API key.
pub const API_KEY_LABEL: &str = "paysaga.dev/api-key";
/// The key of an API-key Secret's data that holds the key's SHA-256 (hex).
pub const API_KEY_HASH: &str = "sha256";
/// Every API key starts with this.
pub const API_KEY_PREFIX: &str = "psk_";
/// The group of every API key's user.
pub const API_KEY_GROUP: &str = "paysaga:apikeys";
/// The API group of paysaga's resources, real and virtual.
pub const GROUP: &str = "paysaga.dev";
/// The virtual resource whose `use` verb, by name, scopes a caller to
/// payers.
pub const PAYERS: &str = "payers";

const TOKEN_TTL: Duration = Duration::from_secs(10);
const REFUSED_TOKEN_TTL: Duration = Duration::from_secs(2);
const ACCESS_TTL: Duration = Duration::from_secs(5);
/// Past this many cached answers, the cache starts again.
const CACHE_MAX: usize = 10_000;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

/// What a route does, as RBAC says it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    pub verb: &'static str,
    pub resource: &'static str,
    pub name: Option<String>,
}

impl Access {
    fn new(verb: &'static str, resource: &'static str, name: Option<&str>) -> Self {
        Access {
            verb,
            resource,
            name: name.map(str::to_string),
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}.{GROUP}", self.verb, self.resource)?;
        if let Some(n) = &self.name {
            write!(f, " {n:?}")?;
        }
        Ok(())
    }
}

/// The RBAC access a route needs: `None` for a route this module does not
/// guard.
pub fn access(method: &Method, path: &str) -> Option<Access> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // axum answers HEAD with the GET handler: the same access.
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    let delete = method == Method::DELETE;
    Some(match segments.as_slice() {
        ["v1", "payments"] if post => Access::new("create", "payments", None),
        ["v1", "payments"] if get => Access::new("list", "payments", None),
        ["v1", "payments", id] if get => Access::new("get", "payments", Some(id)),
        ["v1", "payments", id, "cancel" | "review" | "expedite"] if post => {
            Access::new("patch", "payments", Some(id))
        }
        ["v1", "payments", _, "refunds"] if post => Access::new("create", "refunds", None),
        ["v1", "payments", _, "refunds"] if get => Access::new("list", "refunds", None),
        ["v1", "refunds", id] if get => Access::new("get", "refunds", Some(id)),
        ["v1", "recurring-payments"] if post => Access::new("create", "recurringpayments", None),
        ["v1", "recurring-payments"] if get => Access::new("list", "recurringpayments", None),
        ["v1", "recurring-payments", id] if get => {
            Access::new("get", "recurringpayments", Some(id))
        }
        ["v1", "recurring-payments", id] if delete => {
            Access::new("delete", "recurringpayments", Some(id))
        }
        ["v1", "recurring-payments", id, "suspend" | "resume"] if post => {
            Access::new("patch", "recurringpayments", Some(id))
        }
        ["v1", "recurring-payments", _, "payments"] if get => Access::new("list", "payments", None),
        ["codec", "encode"] if post => Access::new("encode", "payloads", None),
        ["codec", "decode"] if post => Access::new("decode", "payloads", None),
        _ => return None,
    })
}

/// An API key's parts: the Secret that holds its hash, and the secret part.
pub fn parse_api_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let (name, secret) = rest.rsplit_once('_')?;
    (!name.is_empty() && !secret.is_empty()).then_some((name, secret))
}

/// The SHA-256 of an API key's secret part, as its Secret holds it.
pub fn api_key_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The user name of the API key held by `secret` in `namespace`.
pub fn api_key_user(namespace: &str, secret: &str) -> String {
    format!("paysaga:apikey:{namespace}:{secret}")
}

/// A fresh API key for the Secret `name`: the key (shown once) and the
/// hash to keep, in hex.
pub fn new_api_key(name: &str) -> Result<(String, String), getrandom::Error> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)?;
    let secret = hex::encode(random);
    let hash = hex::encode(api_key_hash(&secret));
    Ok((format!("{API_KEY_PREFIX}{name}_{secret}"), hash))
}

/// Creates the Secret of a new API key `name` in `namespace` and returns
/// the key (kept nowhere: the Secret holds its hash).
pub async fn create_api_key(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    if name.contains('_') || !super::payments::valid_name(name) {
        anyhow::bail!(
            "{name:?} cannot name an API key: a DNS subdomain (a-z, 0-9, '-', '.') without '_'"
        );
    }
    let (key, hash) = new_api_key(name).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let secret = Secret {
        metadata: kube::core::ObjectMeta {
            name: Some(name.to_string()),
            labels: Some([(API_KEY_LABEL.to_string(), "true".to_string())].into()),
            annotations: Some(
                [(
                    "paysaga.dev/api-key-user".to_string(),
                    api_key_user(namespace, name),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some([(API_KEY_HASH.to_string(), hash)].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client, namespace)
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|e| anyhow::anyhow!("creating Secret {namespace}/{name}: {e}"))?;
    Ok(key)
}

/// Deletes the Secret of the API key `name`: the key stops working as soon
/// as the APIs' watches see it go.
pub async fn revoke_api_key(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<()> {
    let secrets = Api::<Secret>::namespaced(client, namespace);
    let secret = secrets
        .get(name)
        .await
        .map_err(|e| anyhow::anyhow!("reading Secret {namespace}/{name}: {e}"))?;
    let is_key = secret
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.get(API_KEY_LABEL).is_some_and(|v| v == "true"));
    if !is_key {
        anyhow::bail!(
            "Secret {namespace}/{name} is not an API key (no label {API_KEY_LABEL}=true): left alone"
        );
    }
    secrets
        .delete(name, &Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("deleting Secret {namespace}/{name}: {e}"))?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send Authorization: Bearer <API key or Kubernetes token>")]
    Missing,
    #[error("the credentials were not accepted")]
    Invalid,
    #[error("cannot verify credentials now: {0}")]
    Unavailable(String),
}

/// How the API authenticates and authorizes.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// The audience a Kubernetes token must be issued for.
    pub audience: String,
    /// Requests per second per caller (a burst of twice that); 0: no limit.
    pub rate_per_second: u32,
    /// Whether acting for a payer needs `use` on `payers` by its `userId`.
    pub payer_scoping: bool,
    /// Origins the codec endpoint answers (CORS), e.g. the Temporal UI's.
    pub codec_origins: Vec<String>,
    /// The codec endpoint takes requests from this host's loopback without
    /// credentials (`make dev`, where the Temporal UI calls it from the
    /// developer's browser). Never in a cluster.
    pub codec_trust_loopback: bool,
}

type Cached<T> = Mutex<HashMap<T, (Instant, Option<Caller>)>>;

/// The API's authenticator, authorizer and rate limiter.
pub struct Auth {
    client: kube::Client,
    namespace: String,
    pub settings: AuthSettings,
    keys: reflector::Store<Secret>,
    tokens: Cached<[u8; 32]>,
    decisions: Mutex<HashMap<(String, Access), (Instant, bool)>>,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl Auth {
    /// Starts the watch of the namespace's API-key Secrets.
    pub fn start(client: kube::Client, namespace: &str, settings: AuthSettings) -> Arc<Auth> {
        let (keys, writer) = reflector::store();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().labels(&format!("{API_KEY_LABEL}=true"));
        let stream = reflector::reflector(writer, watcher(secrets, config))
            .default_backoff()
            .applied_objects();
        let ns = namespace.to_string();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                if let Err(e) = item {
                    tracing::warn!(namespace = %ns, error = %e, "watching API-key Secrets");
                }
            }
        });
        let limiter = NonZeroU32::new(settings.rate_per_second).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 > 0"));
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Arc::new(Auth {
            client,
            namespace: namespace.to_string(),
            settings,
            keys,
            tokens: Mutex::default(),
            decisions: Mutex::default(),
            limiter,
        })
    }

    /// The caller a bearer credential names.
    pub async fn authenticate(&self, bearer: &str) -> Result<Caller, AuthError> {
        if bearer.starts_with(API_KEY_PREFIX) {
            return self.api_key(bearer).ok_or(AuthError::Invalid);
        }
        let digest: [u8; 32] = Sha256::digest(bearer.as_bytes()).into();
        if let Some((at, caller)) = self.tokens.lock().expect("cache").get(&digest).cloned() {
            let ttl = if caller.is_some() {
                TOKEN_TTL
            } else {
                REFUSED_TOKEN_TTL
            };
            if at.elapsed() < ttl {
                return caller.ok_or(AuthError::Invalid);
            }
        }
        let caller = self.token_review(bearer).await?;
        let mut cache = self.tokens.lock().expect("cache");
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(digest, (Instant::now(), caller.clone()));
        caller.ok_or(AuthError::Invalid)
    }

    fn api_key(&self, key: &str) -> Option<Caller> {
        let (name, secret) = parse_api_key(key).unwrap_or(("", key));
        let stored = self
            .keys
            .get(&reflector::ObjectRef::new(name).within(&self.namespace))
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .and_then(|s| {
                let hex_hash = s.data.as_ref()?.get(API_KEY_HASH)?.0.clone();
                let mut hash = [0u8; 32];
                hex::decode_to_slice(hex_hash.trim_ascii(), &mut hash).ok()?;
                Some(hash)
            });
        // The same work whether or not the key's Secret exists.
        let expected = stored.unwrap_or([0xa5; 32]);
        let matches: bool = api_key_hash(secret).ct_eq(&expected).into();
        (matches && stored.is_some()).then(|| Caller {
            username: api_key_user(&self.namespace, name),
            uid: None,
            groups: vec![
                API_KEY_GROUP.to_string(),
                "system:authenticated".to_string(),
            ],
            extra: None,
        })
    }

    async fn token_review(&self, token: &str) -> Result<Option<Caller>, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.settings.audience.clone()]),
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("TokenReview: {e}")))?;
        let Some(status) = answer.status else {
            return Ok(None);
        };
        let audience_ok = status
            .audiences
            .as_ref()
            .is_some_and(|a| a.contains(&self.settings.audience));
        if status.authenticated != Some(true) || !audience_ok {
            if let Some(e) = status.error.filter(|e| !e.is_empty()) {
                tracing::debug!(error = %e, "a token was refused");
            }
            return Ok(None);
        }
        let Some(user) = status.user.filter(|u| u.username.is_some()) else {
            return Ok(None);
        };
        Ok(Some(Caller {
            username: user.username.unwrap_or_default(),
            uid: user.uid,
            groups: user.groups.unwrap_or_default(),
            extra: user.extra,
        }))
    }

    /// Whether `caller` may do `access` in the namespace.
    pub async fn allowed(&self, caller: &Caller, access: &Access) -> Result<bool, AuthError> {
        let key = (caller.username.clone(), access.clone());
        if let Some((at, allowed)) = self.decisions.lock().expect("cache").get(&key)
            && at.elapsed() < ACCESS_TTL
        {
            return Ok(*allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.username.clone()),
                uid: caller.uid.clone(),
                groups: Some(caller.groups.clone()),
                extra: caller.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(self.namespace.clone()),
                    verb: Some(access.verb.to_string()),
                    group: Some(GROUP.to_string()),
                    resource: Some(access.resource.to_string()),
                    name: access.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("SubjectAccessReview: {e}")))?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let mut cache = self.decisions.lock().expect("cache");
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), allowed));
        Ok(allowed)
    }

    /// With payer scoping on, refuses (403) a caller that may not act for
    /// `user_id`.
    pub async fn may_act_for(&self, caller: &Caller, user_id: &str) -> Result<(), Problem> {
        if !self.settings.payer_scoping {
            return Ok(());
        }
        let access = Access::new("use", PAYERS, Some(user_id));
        self.require(caller, &access).await
    }

    /// With payer scoping on, whether `caller` may act for every payer (a
    /// list across payers needs it).
    pub async fn may_act_for_all(&self, caller: &Caller) -> Result<(), Problem> {
        if !self.settings.payer_scoping {
            return Ok(());
        }
        self.require(caller, &Access::new("use", PAYERS, None))
            .await
            .map_err(|_| {
                Problem::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{} may act only for some payers: ask with ?userId=<a payer it may use>",
                        caller.username
                    ),
                )
            })
    }

    async fn require(&self, caller: &Caller, access: &Access) -> Result<(), Problem> {
        match self.allowed(caller, access).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(forbidden(caller, access, &self.namespace)),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// How long `caller` must wait before its next request, if it is over
    /// its rate.
    fn over_rate(&self, caller: &Caller) -> Option<Duration> {
        let limiter = self.limiter.as_ref()?;
        limiter
            .check_key(&caller.username)
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

fn forbidden(caller: &Caller, access: &Access, namespace: &str) -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        format!(
            "{} may not {access} in namespace {namespace}",
            caller.username
        ),
    )
}

fn unavailable(e: AuthError) -> Problem {
    tracing::warn!(error = %e, "authentication or authorization unavailable");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "credentials cannot be checked now (the Kubernetes API is not answering); retry shortly",
    )
}

fn unauthorized(e: &AuthError) -> Response {
    let mut resp = Problem::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"paysaga\""),
    );
    resp
}

fn bearer(req: &Request) -> Result<&str, AuthError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Invalid)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Invalid)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Invalid);
    }
    Ok(token)
}

/// Whether the request came from this host's loopback.
fn from_loopback(req: &Request) -> bool {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback())
}

/// The guard of every authenticated route: 401 without a valid credential,
/// 429 over the caller's rate, 403 without the RBAC access the route
/// needs; otherwise the request goes on with its [`Caller`] in its
/// extensions.
pub async fn guard(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    // Only guarded routes come here: a method the route does not take is
    // answered here (405), and a route without a rule is refused (403), so
    // that nothing reaches a handler unguarded.
    let Some(access) = access(req.method(), req.uri().path()) else {
        let path = req.uri().path();
        let takes: Vec<&str> = [Method::GET, Method::POST, Method::DELETE]
            .iter()
            .filter(|m| access(m, path).is_some())
            .map(Method::as_str)
            .collect();
        if takes.is_empty() {
            return Problem::new(
                StatusCode::FORBIDDEN,
                format!("{} {path}: no access rule for this route", req.method()),
            )
            .into_response();
        }
        let allow = takes.join(",");
        let mut resp = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("this route does not take that method; it takes {allow}"),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&allow) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        return resp;
    };
    let Some(auth) = state.auth.as_ref() else {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this API instance has no Kubernetes credentials to check callers with",
        )
        .into_response();
    };
    if access.resource == "payloads"
        && auth.settings.codec_trust_loopback
        && from_loopback(&req)
        && req.headers().get(header::AUTHORIZATION).is_none()
    {
        return next.run(req).await;
    }
    // Owned: a borrow of the request (its body is not Sync) cannot be held
    // across an await of a Send future.
    let token = bearer(&req).map(str::to_string);
    let caller = match token {
        Ok(token) => auth.authenticate(&token).await,
        Err(e) => Err(e),
    };
    let caller = match caller {
        Ok(c) => c,
        Err(AuthError::Unavailable(e)) => {
            return unavailable(AuthError::Unavailable(e)).into_response();
        }
        Err(e) => {
            state.metrics.auth_refused("unauthenticated");
            return unauthorized(&e);
        }
    };
    if let Some(wait) = auth.over_rate(&caller) {
        state.metrics.auth_refused("rate_limited");
        let secs = wait.as_secs_f64().ceil().max(1.0) as u32;
        return Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} is over its rate of {} requests a second; retry in {secs} s",
                caller.username, auth.settings.rate_per_second
            ),
        )
        .retry_after(secs);
    }
    let mut checked = auth.require(&caller, &access).await;
    if checked.is_ok() && auth.settings.payer_scoping {
        let method = req.method().clone();
        let uri = req.uri().clone();
        checked = scope_by_path(&state, auth, &caller, &method, &uri).await;
    }
    if let Err(problem) = checked {
        if problem.status == StatusCode::FORBIDDEN.as_u16() {
            state.metrics.auth_refused("forbidden");
        }
        return problem.into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// With payer scoping on: whether `caller` may act for the payer of what the
/// path names. A create names its payer in its body: its handler asks
/// ([`act_for`]). What does not exist is left to the handler (404).
async fn scope_by_path(
    state: &AppState,
    auth: &Auth,
    caller: &Caller,
    method: &Method,
    uri: &axum::http::Uri,
) -> Result<(), Problem> {
    let path = uri.path().trim_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').collect();
    let get = method == Method::GET;
    let Some(client) = state.kube.as_ref() else {
        return Ok(());
    };
    let read =
        |e: kube::Error| unavailable(AuthError::Unavailable(format!("reading the payer: {e}")));
    let payer = match segments.as_slice() {
        ["v1", "payments"] if get => {
            let user = uri.query().and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "userId")
                    .map(|(_, v)| v.into_owned())
            });
            return match user {
                Some(user) => auth.may_act_for(caller, &user).await,
                None => auth.may_act_for_all(caller).await,
            };
        }
        ["v1", "recurring-payments"] if get => return auth.may_act_for_all(caller).await,
        ["codec", _] => return auth.may_act_for_all(caller).await,
        ["v1", "payments", id, ..] => payer_of_payment(state, client, id).await.map_err(read)?,
        ["v1", "refunds", id] => {
            let refunds: Api<paysaga_api::Refund> =
                Api::namespaced(client.clone(), &state.namespace);
            match refunds.get_opt(id).await.map_err(read)? {
                Some(r) => payer_of_payment(state, client, &r.spec.payment_name)
                    .await
                    .map_err(read)?,
                None => None,
            }
        }
        ["v1", "recurring-payments", id, ..] => {
            let recurring: Api<paysaga_api::RecurringPayment> =
                Api::namespaced(client.clone(), &state.namespace);
            recurring
                .get_opt(id)
                .await
                .map_err(read)?
                .map(|r| r.spec.template.user_id)
        }
        _ => None,
    };
    match payer {
        Some(user) => auth.may_act_for(caller, &user).await,
        None => Ok(()),
    }
}

async fn payer_of_payment(
    state: &AppState,
    client: &kube::Client,
    id: &str,
) -> Result<Option<String>, kube::Error> {
    if let Some(view) = state.watched.view(id) {
        return Ok(Some(view.spec.user_id.clone()));
    }
    let payments: Api<paysaga_api::Payment> = Api::namespaced(client.clone(), &state.namespace);
    Ok(payments.get_opt(id).await?.map(|p| p.spec.user_id))
}

/// With payer scoping on, refuses (403) a caller that may not act for
/// `user_id` (a create's payer, from its body).
pub async fn act_for(state: &AppState, caller: &Caller, user_id: &str) -> Result<(), Problem> {
    match &state.auth {
        Some(auth) => auth.may_act_for(caller, user_id).await,
        None => Ok(()),
    }
}

/// CORS for the codec endpoint: the configured origins (the Temporal UI's)
/// may call it from a browser; a request from any other origin is refused
/// (403). Preflights are answered here, before authentication (a browser
/// sends them without credentials).
pub async fn codec_cors(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let origins: &[String] = state
        .auth
        .as_ref()
        .map(|a| a.settings.codec_origins.as_slice())
        .unwrap_or(&[]);
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let allowed = origin
        .to_str()
        .is_ok_and(|o| origins.iter().any(|a| a == o));
    if !allowed {
        return Problem::new(
            StatusCode::FORBIDDEN,
            format!(
                "origin {} may not call the codec endpoint",
                String::from_utf8_lossy(origin.as_bytes())
            ),
        )
        .into_response();
    }
    let mut resp = if req.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, x-namespace"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_rbac_access() {
        let cases = [
            (
                Method::POST,
                "/v1/payments",
                Some(("create", "payments", None)),
            ),
            (
                Method::GET,
                "/v1/payments",
                Some(("list", "payments", None)),
            ),
            (
                Method::HEAD,
                "/v1/payments",
                Some(("list", "payments", None)),
            ),
            (
                Method::HEAD,
                "/v1/refunds/r1",
                Some(("get", "refunds", Some("r1"))),
            ),
            (Method::PUT, "/v1/payments", None),
            (Method::PATCH, "/v1/payments/p1", None),
            (
                Method::GET,
                "/v1/payments/p1",
                Some(("get", "payments", Some("p1"))),
            ),
            (
                Method::POST,
                "/v1/payments/p1/cancel",
                Some(("patch", "payments", Some("p1"))),
            ),
            (
                Method::POST,
                "/v1/payments/p1/review",
                Some(("patch", "payments", Some("p1"))),
            ),
            (
                Method::POST,
                "/v1/payments/p1/expedite",
                Some(("patch", "payments", Some("p1"))),
            ),
            (
                Method::POST,
                "/v1/payments/p1/refunds",
                Some(("create", "refunds", None)),
            ),
            (
                Method::GET,
                "/v1/payments/p1/refunds",
                Some(("list", "refunds", None)),
            ),
            (
                Method::GET,
                "/v1/refunds/r1",
                Some(("get", "refunds", Some("r1"))),
            ),
            (
                Method::POST,
                "/v1/recurring-payments",
                Some(("create", "recurringpayments", None)),
            ),
            (
                Method::GET,
                "/v1/recurring-payments",
                Some(("list", "recurringpayments", None)),
            ),
            (
                Method::GET,
                "/v1/recurring-payments/r",
                Some(("get", "recurringpayments", Some("r"))),
            ),
            (
                Method::DELETE,
                "/v1/recurring-payments/r",
                Some(("delete", "recurringpayments", Some("r"))),
            ),
            (
                Method::POST,
                "/v1/recurring-payments/r/suspend",
                Some(("patch", "recurringpayments", Some("r"))),
            ),
            (
                Method::POST,
                "/v1/recurring-payments/r/resume",
                Some(("patch", "recurringpayments", Some("r"))),
            ),
            (
                Method::GET,
                "/v1/recurring-payments/r/payments",
                Some(("list", "payments", None)),
            ),
            (
                Method::POST,
                "/codec/encode",
                Some(("encode", "payloads", None)),
            ),
            (
                Method::POST,
                "/codec/decode",
                Some(("decode", "payloads", None)),
            ),
            (Method::POST, "/v1/gateway/callbacks", None),
            (Method::GET, "/healthz", None),
            (Method::GET, "/metrics", None),
        ];
        for (method, path, want) in cases {
            let want = want.map(|(verb, resource, name)| Access::new(verb, resource, name));
            assert_eq!(access(&method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn api_keys_parse_and_hash() {
        let (key, hash) = new_api_key("ci-client").unwrap();
        let (name, secret) = parse_api_key(&key).unwrap();
        assert_eq!(name, "ci-client");
        assert_eq!(hex::encode(api_key_hash(secret)), hash);
        assert_eq!(secret.len(), 64);
        assert_ne!(new_api_key("ci-client").unwrap().0, key, "keys are random");
        for bad in ["", "psk_", "psk_name", "psk__secret", "psk_name_", "token"] {
            assert_eq!(parse_api_key(bad), None, "{bad:?}");
        }
        assert_eq!(parse_api_key("psk_a.b-c_s3"), Some(("a.b-c", "s3")));
    }
}
