//! HTTP front: `/api/...` as the APIC answers it, `/_sim/...` for tests and demos.

use crate::error::{ApicError, Envelope};
use crate::query::{self, QueryOpts, Scope};
use crate::tree::Writer;
use crate::{dn, payload, FaultConfig, SimState};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode, Uri};
use actix_web::web::{self, Bytes, Data, Json, Path};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::time::Duration;

type St = Data<SimState>;

/// Largest request body (2 MiB, what the sim accepted before and ample for a batch of bindings).
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The routes: `/_sim/...` controls, everything else goes to the APIC API.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(BODY_LIMIT))
        .app_data(web::JsonConfig::default().limit(BODY_LIMIT))
        .route("/_sim/dump", web::get().to(dump))
        .route("/_sim/reset", web::post().to(reset))
        .service(
            web::resource("/_sim/mo/{dn:.*}")
                .route(web::post().to(inject))
                .route(web::delete().to(remove)),
        )
        .service(
            web::resource("/_sim/requests")
                .route(web::get().to(counts))
                .route(web::delete().to(reset_counts)),
        )
        .route("/_sim/expire-tokens", web::post().to(expire_tokens))
        .service(
            web::resource("/_sim/faults")
                .route(web::get().to(get_faults))
                .route(web::put().to(put_faults)),
        )
        .default_service(web::to(api));
}

/// nginx's default 50x page, which an overloaded APIC returns instead of JSON (§3.2, §8.2).
const NGINX_503: &str = "<!DOCTYPE html>\n<html>\n<head>\n<title>Error</title>\n</head>\n<body>\n<h1>An error occurred.</h1>\n<p>Sorry, the page you are looking for is currently unavailable.<br/>\nPlease try again later.</p>\n<p>If you are the system administrator of this resource then you should check\nthe error log for details.</p>\n<p><em>Faithfully yours, nginx.</em></p>\n</body>\n</html>\n";

/// What nginx answers to a lower-case method, wrapped in HTTP 200 (Book Symptom 6).
const NGINX_400: &str = "<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

fn html(status: StatusCode, body: &'static str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html")
        .body(body)
}

fn error(e: ApicError) -> HttpResponse {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    HttpResponse::build(status).json(e.body())
}

fn ok(total: usize, imdata: Vec<Value>) -> HttpResponse {
    HttpResponse::Ok().json(Envelope::new(imdata, total))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters, percent-decoded; `+` stays `+` (it is a regex operator in `wcard`).
fn params(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn kind(method: &Method, rest: &str) -> &'static str {
    let rest = rest.strip_prefix("node/").unwrap_or(rest);
    match (method.as_str(), rest) {
        (_, r) if r.starts_with("aaaLogin.") => "login",
        (_, r) if r.starts_with("aaaRefresh.") => "refresh",
        (_, r) if r.starts_with("aaaLogout.") => "logout",
        ("GET", r) if r.starts_with("mo/") || r.starts_with("mo.") => "mo_get",
        ("POST", r) if r.starts_with("mo/") || r.starts_with("mo.") => "mo_post",
        ("DELETE", r) if r.starts_with("mo/") || r.starts_with("mo.") => "mo_delete",
        ("GET", r) if r.starts_with("class/") => "class_get",
        _ => "other",
    }
}

/// Counts the request and decides the injected faults: `(latency, overloaded)`.
fn admit(st: &SimState, kind: &str) -> (u64, bool) {
    let mut g = st.lock();
    *g.counts.entry(kind.to_string()).or_default() += 1;
    let f = &mut g.faults;
    let overloaded = if f.overload_next > 0 {
        f.overload_next -= 1;
        true
    } else {
        f.overload_rate > 0.0 && rand::random::<f64>() < f.overload_rate
    };
    (f.latency_ms, overloaded)
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("APIC-cookie"))
        .map(|(_, v)| v.to_string())
}

async fn api(st: St, req: HttpRequest, body: Bytes) -> HttpResponse {
    let (method, uri, headers) = (req.method(), req.uri(), req.headers());
    let path = percent_decode(uri.path());
    let Some(rest) = path.strip_prefix("/api/") else {
        return HttpResponse::NotFound().body("not found");
    };
    let kind = kind(method, rest);
    let (latency, overloaded) = admit(&st, kind);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if overloaded {
        return html(StatusCode::SERVICE_UNAVAILABLE, NGINX_503);
    }
    if method.as_str().chars().any(|c| c.is_ascii_lowercase()) {
        return html(StatusCode::OK, NGINX_400);
    }
    let rest = rest.strip_prefix("node/").unwrap_or(rest);
    let result = match kind {
        "login" => return login(&st, &body),
        "refresh" => return refresh(&st, headers),
        "logout" => logout(&st, headers),
        _ => match authorize(&st, headers) {
            Err(e) => Err(e),
            Ok(()) => dispatch(&st, method, rest, &params(uri), &body),
        },
    };
    match result {
        Ok((total, imdata)) => ok(total, imdata),
        Err(e) => error(e),
    }
}

fn authorize(st: &SimState, headers: &HeaderMap) -> Result<(), ApicError> {
    let token = cookie_token(headers).ok_or_else(ApicError::token_timeout)?;
    st.lock()
        .sessions
        .user(&token)
        .map(|_| ())
        .ok_or_else(ApicError::token_timeout)
}

type Outcome = Result<(usize, Vec<Value>), ApicError>;

fn dispatch(
    st: &SimState,
    method: &Method,
    rest: &str,
    params: &[(String, String)],
    body: &[u8],
) -> Outcome {
    let opts = QueryOpts::parse(params)?;
    if let Some(class_path) = rest.strip_prefix("class/") {
        let target = class_path
            .strip_suffix(".json")
            .ok_or_else(|| ApicError::unresolved(rest))?;
        let rns = dn::split(target).ok_or_else(|| ApicError::invalid_rn(target))?;
        let (class, under) = match rns.split_last() {
            Some((class, [])) => (*class, None),
            Some((class, scope)) => (*class, Some(scope.join("/"))),
            None => return Err(ApicError::unresolved(rest)),
        };
        let g = st.lock();
        return query::run(
            &g.mit,
            Scope::Class {
                class,
                under: under.as_deref(),
            },
            &opts,
            st.config.max_result,
        );
    }
    let target = match rest {
        "mo.json" => "",
        r => r
            .strip_prefix("mo/")
            .and_then(|r| r.strip_suffix(".json"))
            .ok_or_else(|| ApicError::unresolved(rest))?,
    };
    match method.as_str() {
        "GET" => {
            let g = st.lock();
            query::run(&g.mit, Scope::Mo(target), &opts, st.config.max_result)
        }
        "POST" => {
            let node = payload::parse(body)?;
            let mut g = st.lock();
            let changes = g.mit.apply(target, &node, Writer::Api)?;
            st.written(&mut g);
            let imdata: Vec<Value> = if opts.modified {
                changes
                    .iter()
                    .map(|c| json!({c.class: {"attributes": {"dn": c.dn, "status": c.status}}}))
                    .collect()
            } else {
                Vec::new()
            };
            Ok((imdata.len(), imdata))
        }
        "DELETE" => {
            let chain = dn::resolve(target).map_err(|rn| ApicError::invalid_rn(&rn))?;
            if let Some((class, _)) = chain.last().filter(|(c, _)| !c.writable) {
                return Err(ApicError::read_only(class.name));
            }
            if chain
                .last()
                .is_some_and(|(c, _)| crate::classes::UNDELETABLE.contains(&c.name))
            {
                return Err(ApicError::undeletable(target));
            }
            let mut g = st.lock();
            let existed = g.mit.get(target).map(|m| m.class.name);
            g.mit.remove_subtree(target);
            st.written(&mut g);
            let imdata: Vec<Value> = match existed.filter(|_| opts.modified) {
                Some(class) => {
                    vec![json!({class: {"attributes": {"dn": target, "status": "deleted"}}})]
                }
                None => Vec::new(),
            };
            Ok((imdata.len(), imdata))
        }
        _ => Err(ApicError::unresolved(rest)),
    }
}

fn login_body(body: &[u8]) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let a = v.get("aaaUser")?.get("attributes")?;
    Some((
        a.get("name")?.as_str()?.to_string(),
        a.get("pwd")?.as_str()?.to_string(),
    ))
}

fn session_response(st: &SimState, issued: crate::auth::Issued) -> HttpResponse {
    let lifetime = st.config.token_lifetime.as_secs().max(1).to_string();
    let created = issued.created_epoch.to_string();
    let login = json!({"aaaLogin":{"attributes":{
        "token": issued.token,
        "siteFingerprint": "apicsim0000000000",
        "refreshTimeoutSeconds": lifetime,
        "maximumLifetimeSeconds": "86400",
        "guiIdleTimeoutSeconds": "1200",
        "restTimeoutSeconds": "90",
        "creationTime": created,
        "firstLoginTime": created,
        "userName": issued.user,
        "remoteUser": "false",
        "unixUserId": "15374",
        "sessionId": "apic-sim",
        "lastName": "",
        "firstName": "",
        "version": "5.2(1g)",
        "buildTime": "apic-sim",
        "node": "topology/pod-1/node-1"},
      "children":[{"aaaUserDomain":{"attributes":{"name":"all","rolesR":"admin","rolesW":"admin"}}}]}});
    let cookie = format!("APIC-cookie={}; path=/; HttpOnly", issued.token);
    HttpResponse::Ok()
        .insert_header((header::SET_COOKIE, cookie))
        .json(Envelope::new(vec![login], 1))
}

fn login(st: &SimState, body: &[u8]) -> HttpResponse {
    let Some((name, pwd)) = login_body(body) else {
        return error(ApicError::json_parse());
    };
    let mut g = st.lock();
    let rate = g.faults.login_rate_per_sec;
    if !g.sessions.admit(rate) {
        return html(StatusCode::SERVICE_UNAVAILABLE, NGINX_503);
    }
    if name != st.config.username || pwd != st.config.password {
        return error(ApicError::bad_login());
    }
    let issued = g.sessions.issue(&name, st.config.token_lifetime);
    drop(g);
    session_response(st, issued)
}

fn refresh(st: &SimState, headers: &HeaderMap) -> HttpResponse {
    let mut g = st.lock();
    let rate = g.faults.login_rate_per_sec;
    if !g.sessions.admit(rate) {
        return html(StatusCode::SERVICE_UNAVAILABLE, NGINX_503);
    }
    let Some(user) = cookie_token(headers).and_then(|t| g.sessions.user(&t)) else {
        return error(ApicError::token_timeout());
    };
    let issued = g.sessions.issue(&user, st.config.token_lifetime);
    drop(g);
    session_response(st, issued)
}

fn logout(st: &SimState, headers: &HeaderMap) -> Outcome {
    let token = cookie_token(headers).ok_or_else(ApicError::token_timeout)?;
    let mut g = st.lock();
    g.sessions
        .user(&token)
        .ok_or_else(ApicError::token_timeout)?;
    g.sessions.revoke(&token);
    Ok((0, Vec::new()))
}

async fn dump(st: St) -> HttpResponse {
    let all = st.dump();
    ok(all.len(), all)
}

async fn reset(st: St) -> HttpResponse {
    st.reset();
    HttpResponse::NoContent().finish()
}

fn strip_json(dn: &str) -> &str {
    dn.strip_suffix(".json").unwrap_or(dn)
}

async fn inject(st: St, dn: Path<String>, body: Json<Value>) -> HttpResponse {
    match st.inject(strip_json(&dn), &body) {
        Ok(()) => ok(0, Vec::new()),
        Err(e) => error(e),
    }
}

async fn remove(st: St, dn: Path<String>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"deleted": st.remove(strip_json(&dn))}))
}

async fn counts(st: St) -> HttpResponse {
    HttpResponse::Ok().json(st.counts())
}

async fn reset_counts(st: St) -> HttpResponse {
    st.reset_counts();
    HttpResponse::NoContent().finish()
}

async fn expire_tokens(st: St) -> HttpResponse {
    st.expire_tokens();
    HttpResponse::NoContent().finish()
}

async fn get_faults(st: St) -> HttpResponse {
    HttpResponse::Ok().json(st.faults())
}

async fn put_faults(st: St, f: Json<FaultConfig>) -> HttpResponse {
    st.set_faults(f.into_inner());
    HttpResponse::Ok().json(st.faults())
}
