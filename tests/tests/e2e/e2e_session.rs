//! Identity end to end (issue 7, DESIGN.md section 3 session and Identity), driving the BUILT
//! `session`, `place-order` and `query-order` binaries: a `wx.login()` code exchanged at the
//! simulator's `jscode2session` for a session token, the token accepted by the other
//! functions in `AUTH_MODE=token` without debug identity, every kind of bad token refused with
//! nothing written, key rotation, WeChat's errcodes mapped, `session_key` never leaving the
//! session function, and the session binary under the Lambda and SCF runtime APIs.

use crate::e2e_support::*;
use crate::runtime_support::FakeRuntime;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sandbox::simulator::login::{openid_for, session_key_for};
use serde_json::{Value, json};
use shared::domain::Openid;
use shared::session::{SigningKey, TokenSigner, TokenVerifier};
use time::OffsetDateTime;

/// The tokens' `iss`: any https URL will do, the functions never call it.
const ISSUER: &str = "https://login.e2e.example.com";
const TTL: std::time::Duration = std::time::Duration::from_secs(7200);

fn set(env: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    env.retain(|(k, _)| k != name);
    if let Some(v) = value {
        env.push((name.to_owned(), v.to_owned()));
    }
}

/// The session function's whole environment: no merchant key, no table.
fn session_env(backend: &Backend) -> Vec<(String, String)> {
    [
        ("WXPAY_APPID", APPID.to_owned()),
        ("WX_APP_SECRET", backend.keys.app_secret().to_owned()),
        ("WX_API_BASE", backend.sim.base_url()),
        (
            "SESSION_SIGNING_KEY_FILE",
            backend
                .keys
                .session_key_path()
                .to_string_lossy()
                .into_owned(),
        ),
        ("SESSION_ISSUER", ISSUER.to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "info".to_owned()),
        ("PORT", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// place-order's or query-order's environment in `AUTH_MODE=token` with these verifying
/// keys, and no debug identity.
fn token_env(backend: &Backend, public_keys_pem: &str) -> Vec<(String, String)> {
    let mut env = backend.function_env(Some("http://127.0.0.1:9/notify/wechatpay"));
    set(&mut env, "ALLOW_DEBUG_IDENTITY", None);
    set(&mut env, "AUTH_MODE", Some("token"));
    set(&mut env, "SESSION_PUBLIC_KEYS", Some(public_keys_pem));
    set(&mut env, "SESSION_ISSUER", Some(ISSUER));
    env
}

async fn start(function: Function, env: &[(String, String)]) -> (FunctionProcess, String) {
    let mut process = FunctionProcess::spawn(function, env);
    let url = process.wait_http().await;
    (process, url)
}

async fn login(backend: &Backend, session_url: &str, body: &str) -> Reply {
    let response = backend
        .http
        .post(format!("{session_url}/sessions"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("session answers");
    Reply::read(response).await
}

/// Logs `code` in and returns `(token, openid)`.
async fn token_for(backend: &Backend, session_url: &str, code: &str) -> (String, String) {
    let reply = login(backend, session_url, &json!({ "code": code }).to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    (
        body["token"].as_str().expect("token").to_owned(),
        body["openid"].as_str().expect("openid").to_owned(),
    )
}

/// `POST /orders` with an optional `Authorization` header value.
async fn order_with(
    backend: &Backend,
    place_order_url: &str,
    authorization: Option<&str>,
    key: &str,
) -> Reply {
    let mut request = backend
        .http
        .post(format!("{place_order_url}/orders"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(cart(&[(SKU_LIMITED, 1)]));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    Reply::read(request.send().await.expect("place-order answers")).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mac = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_gives_a_token_that_places_and_queries_orders() {
    let backend = Backend::start().await;
    let (_session, session_url) = start(Function::Session, &session_env(&backend)).await;
    let public = backend.keys.session_public_key().to_spki_pem();
    let (_place, place_url) = start(Function::PlaceOrder, &token_env(&backend, &public)).await;
    let (_query, query_url) = start(Function::QueryOrder, &token_env(&backend, &public)).await;

    // wx.login() -> POST /sessions.
    let reply = login(&backend, &session_url, r#"{"code":"alice-e2e"}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
    let body = reply.json();
    let openid = openid_for("alice-e2e");
    assert_eq!(body["openid"], openid.as_str());
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["expires_at", "openid", "token"], "{body}");
    let expires_at = shared::timefmt::parse_rfc3339(body["expires_at"].as_str().unwrap())
        .expect("expires_at is RFC 3339");
    let left = expires_at - OffsetDateTime::now_utc();
    assert!(left > time::Duration::seconds(7000) && left <= time::Duration::seconds(7200));
    let token = body["token"].as_str().unwrap().to_owned();
    // The documented claims, verifiable with the published key alone.
    let verifier = TokenVerifier::new([backend.keys.session_public_key().clone()], ISSUER, APPID);
    assert_eq!(verifier.verify(&token).unwrap().as_str(), openid);

    // The token is the caller: place-order (no debug identity) creates the order as openid.
    let placed = order_with(&backend, &place_url, Some(&bearer(&token)), "sess-1").await;
    assert_eq!(placed.status, 201, "{}", placed.text());
    let no = placed.json()["out_trade_no"].as_str().unwrap().to_owned();
    assert_eq!(backend.order(&no).await.openid.as_str(), openid);
    assert_eq!(backend.orders_of(&openid).await.len(), 1);

    // query-order: the owner sees it; another logged-in user does not.
    let get = |authorization: String| {
        let request = backend
            .http
            .get(format!("{query_url}/orders/{no}"))
            .header("authorization", authorization);
        async move { Reply::read(request.send().await.expect("query-order answers")).await }
    };
    let seen = get(bearer(&token)).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(seen.json()["out_trade_no"], no.as_str());
    let (bob, _) = token_for(&backend, &session_url, "bob-e2e").await;
    get(bearer(&bob)).await.assert_error(404, "ORDER_NOT_FOUND");
    get("Bearer not-a-token".into())
        .await
        .assert_error(401, "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_tokens_are_401_and_create_nothing() {
    let backend = Backend::start().await;
    let ours = backend.keys.session_key().clone();
    let public = ours.public_key().to_spki_pem();
    let (place, place_url) = start(Function::PlaceOrder, &token_env(&backend, &public)).await;
    let openid = Openid::parse("o_victim").unwrap();
    let now = OffsetDateTime::now_utc();
    let signer = |key: &SigningKey, issuer: &str, audience: &str| {
        TokenSigner::new(key.clone(), issuer, audience, TTL)
    };
    let good = signer(&ours, ISSUER, APPID).issue(&openid, now).token;
    let claims = json!({"iss": ISSUER, "sub": "o_victim", "aud": APPID,
                        "iat": now.unix_timestamp(), "exp": now.unix_timestamp() + 3600});
    let kid = ours.kid();
    let hs_header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});

    let cases: Vec<(&str, Option<String>)> = vec![
        (
            "expired (2 h ago, beyond the 60 s leeway)",
            Some(bearer(
                &signer(&ours, ISSUER, APPID)
                    .issue(&openid, now - time::Duration::hours(4))
                    .token,
            )),
        ),
        (
            "signed by another key",
            Some(bearer(
                &signer(&SigningKey::generate(), ISSUER, APPID)
                    .issue(&openid, now)
                    .token,
            )),
        ),
        (
            "alg none",
            Some(bearer(&format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
                b64(&claims)
            ))),
        ),
        (
            "HS256 keyed with the public key PEM",
            Some(bearer(&hs256(public.as_bytes(), &hs_header, &claims))),
        ),
        (
            "HS256 keyed with the JWK",
            Some(bearer(&hs256(
                ours.public_key().jwk().to_string().as_bytes(),
                &hs_header,
                &claims,
            ))),
        ),
        (
            "wrong aud",
            Some(bearer(
                &signer(&ours, ISSUER, "wxanotherapp0000001")
                    .issue(&openid, now)
                    .token,
            )),
        ),
        (
            "wrong iss",
            Some(bearer(
                &signer(&ours, "https://evil.example.com", APPID)
                    .issue(&openid, now)
                    .token,
            )),
        ),
        ("garbage", Some(bearer("garbage.garbage.garbage"))),
        ("not base64", Some(bearer("!!.??.**"))),
        ("two parts", Some(bearer("a.b"))),
        ("no scheme", Some(good.clone())),
        ("Basic scheme", Some(format!("Basic {good}"))),
        ("missing header", None),
    ];
    let before = backend.snapshot().await;
    for (i, (what, authorization)) in cases.iter().enumerate() {
        let reply = order_with(
            &backend,
            &place_url,
            authorization.as_deref(),
            &format!("bad-{i}"),
        )
        .await;
        reply.assert_error(401, "UNAUTHENTICATED");
        if let Some(value) = authorization {
            let token = value.rsplit(' ').next().unwrap();
            assert!(
                token.len() < 8 || !reply.text().contains(token),
                "{what}: the token is echoed"
            );
        }
        eprintln!("{what}: {}", reply.json()["message"]);
    }
    // No debug identity here: the header names nobody.
    let debug = backend
        .http
        .post(format!("{place_url}/orders"))
        .header("x-debug-openid", "o_victim")
        .header("idempotency-key", "bad-debug")
        .body(cart(&[(SKU_LIMITED, 1)]))
        .send()
        .await
        .unwrap();
    Reply::read(debug)
        .await
        .assert_error(401, "UNAUTHENTICATED");
    assert_eq!(backend.snapshot().await, before, "nothing was written");
    assert!(backend.orders_of("o_victim").await.is_empty());

    // The same function takes the good token.
    let placed = order_with(&backend, &place_url, Some(&bearer(&good)), "good-1").await;
    assert_eq!(placed.status, 201, "{}", placed.text());
    // Refusals are logged with their outcome, never with the token.
    let logs = place.stdout().join("\n");
    assert!(logs.contains("rejected:unauthenticated"), "{logs}");
    assert!(!logs.contains(&good), "a token reached the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_rotation_keeps_old_tokens_valid_while_the_old_key_is_listed() {
    let backend = Backend::start().await;
    let old_key_pem = std::fs::read_to_string(backend.keys.session_key_path()).unwrap();
    let old_public = backend.keys.session_public_key().clone();
    let new_key_pem = SigningKey::generate_pkcs8_pem();
    let new_key = SigningKey::parse_all(&new_key_pem).unwrap().remove(0);
    let new_public = new_key.public_key().clone();

    // Before: the old key signs.
    let (mut before, before_url) = start(Function::Session, &session_env(&backend)).await;
    let (old_token, openid) = token_for(&backend, &before_url, "carol-e2e").await;
    before.kill();

    // Rotation: the new key first (signs), the old one still published.
    let mut env = session_env(&backend);
    set(&mut env, "SESSION_SIGNING_KEY_FILE", None);
    set(
        &mut env,
        "SESSION_SIGNING_KEY",
        Some(&format!("{new_key_pem}{old_key_pem}")),
    );
    let (_after, after_url) = start(Function::Session, &env).await;
    let (new_token, _) = token_for(&backend, &after_url, "carol-e2e").await;
    let jwks = Reply::read(
        backend
            .http
            .get(format!("{after_url}/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(jwks.status, 200);
    assert!(jwks.header("cache-control").is_some());
    let kids: Vec<String> = jwks.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kids, [new_public.kid(), old_public.kid()]);
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(new_token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_public.kid(), "the new key signs");

    // Verifiers listing both keys take both tokens.
    let both = format!("{}{}", new_public.to_spki_pem(), old_public.to_spki_pem());
    let (_place, place_url) = start(Function::PlaceOrder, &token_env(&backend, &both)).await;
    for (i, token) in [&old_token, &new_token].into_iter().enumerate() {
        let r = order_with(
            &backend,
            &place_url,
            Some(&bearer(token)),
            &format!("rot-{i}"),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    // Once the old key is dropped, its tokens are refused; the new ones still work.
    let new_only = new_public.to_spki_pem();
    let (_place2, place2_url) = start(Function::PlaceOrder, &token_env(&backend, &new_only)).await;
    order_with(&backend, &place2_url, Some(&bearer(&old_token)), "rot-old")
        .await
        .assert_error(401, "UNAUTHENTICATED");
    let r = order_with(&backend, &place2_url, Some(&bearer(&new_token)), "rot-new").await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(backend.orders_of(&openid).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wechat_errors_are_mapped_and_secrets_never_leave() {
    let backend = Backend::start().await;
    let (session, url) = start(Function::Session, &session_env(&backend)).await;

    let mut bodies = Vec::new();
    for (code, status, api_code) in [
        ("invalid-code", 401, "INVALID_CODE"),
        ("used-code", 401, "INVALID_CODE"),
        ("rate-limited", 429, "RATE_LIMITED"),
        ("risky", 403, "RISKY_USER"),
        ("busy", 502, "WECHAT_UNAVAILABLE"),
    ] {
        let reply = login(&backend, &url, &json!({ "code": code }).to_string()).await;
        reply.assert_error(status, api_code);
        bodies.push(reply.text());
    }
    assert!(
        bodies[4].contains("-1"),
        "WeChat's errcode kept: {}",
        bodies[4]
    );
    for bad in ["", "{", r#"{"code": 7}"#, r#"{"js_code": "x"}"#] {
        login(&backend, &url, bad)
            .await
            .assert_error(400, "INVALID_REQUEST");
    }
    // Distinctive codes: neither they nor their session_key may appear anywhere.
    let codes = ["code-7f3a9c1e5b", "code-0d4e8b2a6f"];
    for code in codes {
        let reply = login(&backend, &url, &json!({ "code": code }).to_string()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["openid"], openid_for(code).as_str());
        bodies.push(reply.text());
    }

    // A wrong AppSecret (WeChat's 40125) and an unreachable WeChat: 502, errcode kept.
    let mut env = session_env(&backend);
    set(&mut env, "WX_APP_SECRET", Some("wrongsecret123"));
    let (wrong, wrong_url) = start(Function::Session, &env).await;
    let reply = login(&backend, &wrong_url, r#"{"code":"code-7f3a9c1e5b"}"#).await;
    reply.assert_error(502, "WECHAT_UNAVAILABLE");
    assert!(reply.text().contains("40125"), "{}", reply.text());
    assert!(!reply.text().contains("wrongsecret123"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    set(
        &mut env,
        "WX_API_BASE",
        Some(&format!("http://127.0.0.1:{closed_port}")),
    );
    let (down, down_url) = start(Function::Session, &env).await;
    let reply = login(&backend, &down_url, r#"{"code":"code-0d4e8b2a6f"}"#).await;
    reply.assert_error(502, "WECHAT_UNAVAILABLE");

    // session_key, the AppSecret and the codes: in no answer, in no log line.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut secrets: Vec<String> = codes.iter().map(|c| session_key_for(c)).collect();
    secrets.extend(codes.iter().map(|c| (*c).to_owned()));
    secrets.push(backend.keys.app_secret().to_owned());
    secrets.push("wrongsecret123".to_owned());
    let mut everything = bodies.join("\n");
    for process in [&session, &wrong, &down] {
        everything.push_str(&process.stdout().join("\n"));
        everything.push_str(&process.stderr().join("\n"));
    }
    for secret in &secrets {
        assert!(!everything.contains(secret.as_str()), "{secret} leaked");
    }
    // Every request log line says how it ended.
    let logs = session.json_logs();
    let issued = logs.iter().filter(|l| l["outcome"] == "issued").count();
    assert_eq!(issued, 2, "{logs:?}");
    assert!(
        logs.iter().any(|l| l["outcome"] == "rejected:invalid_code"),
        "{logs:?}"
    );
}

// ---- the session binary under the Lambda and SCF runtime APIs ---------------------------

fn now_ms() -> u64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64
}

fn v2_event(method: &str, path: &str, body: &str) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "e2eapi",
            "domainName": "e2eapi.execute-api.ap-east-1.amazonaws.com", "domainPrefix": "e2eapi",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "e2e"},
            "requestId": "apigw-session", "routeKey": "$default", "stage": "$default",
            "time": "24/Nov/2026:12:00:00 +0000", "timeEpoch": now_ms()
        },
        "body": body,
        "isBase64Encoded": false
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_session_binary_serves_the_lambda_and_scf_runtime_apis() {
    let backend = Backend::start().await;
    let verifier = TokenVerifier::new([backend.keys.session_public_key().clone()], ISSUER, APPID);

    // Lambda: POST /sessions and the JWKS as HTTP API v2 events.
    let mut lambda = FakeRuntime::lambda(now_ms() + 60_000).await;
    // Lambda's variables (and the merchant's, which the session function ignores).
    let mut env = lambda_env(&backend, None, lambda.addr, "session");
    for (k, v) in session_env(&backend) {
        if k != "PORT" {
            set(&mut env, &k, Some(&v));
        }
    }
    let mut function = FunctionProcess::spawn(Function::Session, &env);
    assert_eq!(function.wait_ready().await["mode"], "lambda");
    lambda.push(
        "inv-login",
        v2_event("POST", "/sessions", r#"{"code":"lambda-user"}"#).to_string(),
    );
    let posted = lambda.posted().await;
    assert_eq!(
        (posted.kind, posted.request_id.as_deref()),
        ("response", Some("inv-login"))
    );
    let response = posted.json();
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    let token = body["token"].as_str().unwrap();
    assert_eq!(
        verifier.verify(token).unwrap().as_str(),
        openid_for("lambda-user")
    );
    lambda.push(
        "inv-jwks",
        v2_event("GET", "/.well-known/jwks.json", "").to_string(),
    );
    let response = lambda.posted().await.json();
    assert_eq!(response["statusCode"], 200, "{response}");
    let jwks: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        jwks["keys"][0]["kid"],
        backend.keys.session_public_key().kid()
    );
    lambda.push(
        "inv-bad",
        v2_event("POST", "/sessions", r#"{"code":"invalid-code"}"#).to_string(),
    );
    let response = lambda.posted().await.json();
    assert_eq!(response["statusCode"], 401, "{response}");
    assert!(function.is_running());

    // SCF: an API Gateway event through the custom runtime.
    let mut scf = FakeRuntime::scf(10_000).await;
    let mut env = session_env(&backend);
    set(&mut env, "PORT", None);
    set(&mut env, "SCF_RUNTIME_API", Some("127.0.0.1"));
    set(
        &mut env,
        "SCF_RUNTIME_API_PORT",
        Some(&scf.addr.port().to_string()),
    );
    let mut function = FunctionProcess::spawn(Function::Session, &env);
    assert_eq!(function.wait_ready().await["mode"], "scf");
    let event = json!({
        "requestContext": {"serviceId": "service-e2e", "path": "/sessions", "httpMethod": "POST",
                           "requestId": "scf-session-1", "identity": {}, "sourceIp": "10.0.2.14",
                           "stage": "release"},
        "headers": {"Content-Type": "application/json"},
        "body": r#"{"code":"scf-user"}"#,
        "pathParameters": {}, "queryStringParameters": {}, "headerParameters": {},
        "stageVariables": {"stage": "release"},
        "path": "/release/sessions", "queryString": {}, "httpMethod": "POST"
    });
    scf.push("scf-inv-1", event.to_string());
    let response = scf.posted().await.json();
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        verifier
            .verify(body["token"].as_str().unwrap())
            .unwrap()
            .as_str(),
        openid_for("scf-user")
    );
}
