//! Authentication and authorization through HTTP: 401 problem details with `WWW-Authenticate:
//! Bearer` for every unusable token, 403 for a missing scope or a resource one does not own, `[]`
//! for parties one may not read; health routes are open; unknown routes and wrong methods are
//! problem details too.

use crate::common;

use std::path::Path;

use crate::common::{
    Answer, PERSON, PUBLISH, RESOURCE, SUBSCRIBE, Server, client, generic_event, jwks_of,
    publish_ok, send, token_for,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::{Value, json};

const APP_SOURCE: &str =
    "https://ttd.apps.altinn.no/ttd/app1/instances/50002598/3ebaa1a2-9113-4905-ab26-a84fc3ec8acc";

/// A header as name and value.
type Header<'a> = (&'a str, &'a str);
/// A request body: content type and text.
type Body = (&'static str, String);

/// Problem details as every error is rendered, with a `detail` saying what was wrong.
fn assert_problem(reply: &Answer, status: u16, context: &str) {
    common::assert_problem(reply, status, context);
    assert!(
        reply.body["detail"].is_string(),
        "{context}: {}",
        reply.text
    );
}

fn detail(reply: &Answer) -> String {
    reply.body["detail"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase()
}

/// Every protected route, with a request that would succeed for ttd.
fn protected_requests(server: &Server) -> Vec<(Method, String, Option<Body>)> {
    let app_event = json!({"specversion": "1.0", "type": "app.instance.created",
                           "subject": "/party/50002598", "source": APP_SOURCE});
    vec![
        (Method::GET, server.log_url(""), None),
        (
            Method::POST,
            server.at("/events/api/v1/events"),
            Some((
                "application/cloudevents+json",
                generic_event("secret").to_string(),
            )),
        ),
        (
            Method::POST,
            server.at("/events/api/v1/app"),
            Some(("application/json", app_event.to_string())),
        ),
        (
            Method::GET,
            server.at("/events/api/v1/app/party?after=0&party=50002598"),
            None,
        ),
        (
            Method::GET,
            server.at("/events/api/v1/app/ttd/app1?after=0"),
            None,
        ),
    ]
}

async fn call(
    method: &Method,
    url: &str,
    body: &Option<Body>,
    authorization: Option<&str>,
) -> Answer {
    let mut request = client().request(method.clone(), url);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    if let Some((content_type, text)) = body {
        request = request
            .header("content-type", *content_type)
            .body(text.clone());
    }
    send(request).await
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

/// The token with its payload changed by `change`, keeping the original header and signature.
fn tampered(token: &str, change: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS compact token");
    let mut payload = decode_part(parts[1]);
    change(&mut payload);
    format!("{}.{}.{}", parts[0], b64(&payload), parts[2])
}

/// Claims that would make a valid ttd token, for hand-made tokens.
fn ttd_claims() -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": "hendelse-dev", "iat": now, "nbf": now - 5, "exp": now + 3600,
           "urn:altinn:org": "ttd", "scope": format!("{PUBLISH} {SUBSCRIBE}")})
}

async fn stored(server: &Server) -> Value {
    let (status, _, body) = common::get(&server.log_url(""), &server.ttd()).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn unusable_tokens_get_401_problem_details_with_www_authenticate() {
    let server = Server::start();
    let ttd = server.ttd();
    let kid = decode_part(ttd.split('.').next().expect("header"))["kid"].clone();
    let other_dir = tempfile::tempdir().expect("temp dir");
    let other_key = token_for(
        other_dir.path(),
        &["--org", "ttd", "--scope", &format!("{PUBLISH} {SUBSCRIBE}")],
    );
    let expired = server.token(&[
        "--org",
        "ttd",
        "--scope",
        &format!("{PUBLISH} {SUBSCRIBE}"),
        "--ttl",
        "-10",
    ]);
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&ttd_claims())
    );
    let alg_none_signed = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        b64(&ttd_claims()),
        ttd.rsplit('.').next().expect("signature")
    );
    let hs256 = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "HS256", "typ": "JWT", "kid": kid})),
        b64(&ttd_claims()),
        URL_SAFE_NO_PAD.encode([7u8; 32])
    );
    // Asymmetric, but not an algorithm the issuer uses.
    let rs256 = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "RS256", "typ": "JWT", "kid": kid})),
        b64(&ttd_claims()),
        URL_SAFE_NO_PAD.encode([7u8; 256])
    );
    let foreign_issuer = tampered(&ttd, |p| p["iss"] = json!("https://evil.example"));
    let no_issuer = tampered(&ttd, |p| {
        p.as_object_mut().expect("object").remove("iss");
    });
    let more_scope = tampered(&ttd, |p| {
        p["scope"] = json!(format!("{PUBLISH} {SUBSCRIBE} altinn:events.publish.admin"))
    });
    let not_yet = server.token(&[
        "--org",
        "ttd",
        "--scope",
        &format!("{PUBLISH} {SUBSCRIBE}"),
        "--not-before",
        "600",
    ]);
    let longer_life = tampered(&expired, |p| {
        p["exp"] = json!(chrono::Utc::now().timestamp() + 3600)
    });

    // (Authorization header, a word the detail must contain, the token that must not be echoed)
    let cases: Vec<(Option<String>, &str, &str)> = vec![
        (None, "required", ""),
        (Some("Bearer".into()), "", ""),
        (Some("Bearer ".into()), "", ""),
        (Some("Bearer garbage".into()), "malformed", "garbage"),
        (Some("Bearer a.b.c".into()), "", "a.b.c"),
        (
            Some("Basic dHRkOnNlY3JldA==".into()),
            "",
            "dHRkOnNlY3JldA==",
        ),
        (Some(format!("Bearer {expired}")), "expired", &expired),
        (Some(format!("Bearer {not_yet}")), "not valid yet", &not_yet),
        (Some(format!("Bearer {other_key}")), "signature", &other_key),
        (Some(format!("Bearer {alg_none}")), "algorithm", &alg_none),
        (
            Some(format!("Bearer {alg_none_signed}")),
            "algorithm",
            &alg_none_signed,
        ),
        (Some(format!("Bearer {hs256}")), "hs256", &hs256),
        (Some(format!("Bearer {rs256}")), "rs256", &rs256),
        (
            Some(format!("Bearer {foreign_issuer}")),
            "issuer",
            &foreign_issuer,
        ),
        (Some(format!("Bearer {no_issuer}")), "", &no_issuer),
        (
            Some(format!("Bearer {more_scope}")),
            "signature",
            &more_scope,
        ),
        (
            Some(format!("Bearer {longer_life}")),
            "signature",
            &longer_life,
        ),
    ];
    for (method, url, body) in protected_requests(&server) {
        for (authorization, word, token) in &cases {
            let context = format!("{method} {url} with {authorization:?}");
            let reply = call(&method, &url, &body, authorization.as_deref()).await;
            assert_problem(&reply, 401, &context);
            assert!(
                reply
                    .header("www-authenticate")
                    .unwrap_or_default()
                    .starts_with("Bearer"),
                "{context}: WWW-Authenticate {:?}",
                reply.header("www-authenticate").unwrap_or_default()
            );
            assert!(detail(&reply).contains(word), "{context}: {}", reply.text);
            if !token.is_empty() {
                assert!(!reply.text.contains(token), "{context}: echoes the token");
            }
        }
        // The same request with a good token is not refused, so the 401s above are the tokens'.
        let reply = call(&method, &url, &body, Some(&format!("Bearer {ttd}"))).await;
        assert!(
            (200..300).contains(&reply.status),
            "{method} {url}: {}",
            reply.text
        );
    }
    // Only the requests with the good token stored anything.
    let events = stored(&server).await;
    assert_eq!(events.as_array().expect("array").len(), 1, "{events}");
}

/// Writes a `--trusted-issuers` file (and its JWKS) into `dir`.
fn trusted_issuers(dir: &Path, jwks: &Value, issuer: Value) -> String {
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).expect("write jwks");
    let path = dir.join(format!("issuers-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, json!([issuer]).to_string()).expect("write issuers");
    path.to_str().expect("utf8 path").to_owned()
}

/// Production issuers: a token signed by a trusted key is accepted only under its issuer's name,
/// with the issuer's audience; `--no-dev-tokens` stops trusting the data directory's key.
#[tokio::test]
async fn only_trusted_issuers_are_accepted() {
    let idp = tempfile::tempdir().expect("temp dir");
    let scope = format!("{PUBLISH} {SUBSCRIBE}");
    let idp_token = token_for(idp.path(), &["--org", "ttd", "--scope", &scope]);
    let jwks = jwks_of(idp.path());
    let query = format!("/events/api/v1/events?resource={RESOURCE}&after=0");
    let get = |server: &Server, token: &str| {
        send(
            client()
                .get(server.at(&query))
                .bearer_auth(token.to_owned()),
        )
    };

    // The key is trusted under the issuer name its tokens carry.
    let issuers = trusted_issuers(
        idp.path(),
        &jwks,
        json!({"issuer": "hendelse-dev", "jwks": "jwks.json", "algorithms": ["ES256"]}),
    );
    let server = Server::start_with(&["--no-dev-tokens", "--trusted-issuers", &issuers]);
    let reply = get(&server, &idp_token).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // The server's own development key is not trusted any more.
    let reply = get(&server, &server.ttd()).await;
    assert_problem(&reply, 401, "dev token with --no-dev-tokens");
    assert!(detail(&reply).contains("signature"), "{}", reply.text);
    drop(server);

    // The same key trusted for another issuer: a token naming an untrusted issuer is refused
    // although its signature would verify.
    let issuers = trusted_issuers(
        idp.path(),
        &jwks,
        json!({"issuer": "https://idp.example", "jwks": "jwks.json", "algorithms": ["ES256"]}),
    );
    let server = Server::start_with(&["--no-dev-tokens", "--trusted-issuers", &issuers]);
    let reply = get(&server, &idp_token).await;
    assert_problem(&reply, 401, "untrusted issuer");
    assert!(detail(&reply).contains("issuer"), "{}", reply.text);
    assert!(
        reply
            .header("www-authenticate")
            .unwrap_or_default()
            .starts_with("Bearer")
    );
    drop(server);

    // An issuer with an audience.
    let issuers = trusted_issuers(
        idp.path(),
        &jwks,
        json!({"issuer": "hendelse-dev", "jwks": "jwks.json", "algorithms": ["ES256"],
               "audience": "https://events.example"}),
    );
    let server = Server::start_with(&["--no-dev-tokens", "--trusted-issuers", &issuers]);
    let reply = get(&server, &idp_token).await;
    assert_problem(&reply, 401, "no audience");
    let right = token_for(
        idp.path(),
        &[
            "--org",
            "ttd",
            "--scope",
            &scope,
            "--audience",
            "https://events.example",
        ],
    );
    assert_eq!(get(&server, &right).await.status, 200);
    let wrong = token_for(
        idp.path(),
        &[
            "--org",
            "ttd",
            "--scope",
            &scope,
            "--audience",
            "https://elsewhere.example",
        ],
    );
    let reply = get(&server, &wrong).await;
    assert_problem(&reply, 401, "wrong audience");
    assert!(detail(&reply).contains("audience"), "{}", reply.text);
}

#[tokio::test]
async fn dev_tokens_need_the_configured_audience() {
    let server = Server::start_with(&["--audience", "hendelse-test"]);
    let query = server.log_url("");
    let scope = format!("{PUBLISH} {SUBSCRIBE}");
    for (audience, status) in [
        (None, 401),
        (Some("hendelse-test"), 200),
        (Some("somebody-else"), 401),
    ] {
        let mut args: Vec<&str> = vec!["--org", "ttd", "--scope", &scope];
        if let Some(aud) = audience {
            args.extend(["--audience", aud]);
        }
        let reply = send(client().get(&query).bearer_auth(server.token(&args))).await;
        assert_eq!(
            reply.status, status,
            "audience {audience:?}: {}",
            reply.text
        );
        if status == 401 {
            assert_problem(&reply, 401, "audience");
            assert!(
                reply
                    .header("www-authenticate")
                    .unwrap_or_default()
                    .starts_with("Bearer")
            );
        }
    }
}

/// 403: a valid token without the scope a route needs, or publishing what one does not own.
#[tokio::test]
async fn a_missing_scope_or_a_resource_one_does_not_own_is_403() {
    let server = Server::start();
    let subscribe_only = server.token(&["--org", "ttd", "--scope", SUBSCRIBE]);
    let publish_only = server.token(&["--org", "ttd", "--scope", PUBLISH]);
    let no_scope = server.token(&["--org", "ttd"]);
    let person_publisher = server.token(&[
        "--pid",
        PERSON,
        "--party-id",
        "50002598",
        "--scope",
        &format!("{PUBLISH} {SUBSCRIBE}"),
    ]);
    let ttd = server.ttd();
    let with_resource = |resource: &str| {
        let mut e = generic_event("forbidden");
        e["resource"] = json!(resource);
        e
    };

    let publishes = [
        (
            subscribe_only.clone(),
            generic_event("a"),
            "no publish scope",
        ),
        (no_scope.clone(), generic_event("b"), "no scope at all"),
        (person_publisher.clone(), generic_event("c"), "a person"),
        (
            ttd.clone(),
            with_resource("urn:altinn:resource:skd-service"),
            "skd's resource",
        ),
        (
            ttd.clone(),
            with_resource("urn:altinn:resource:not-in-the-registry"),
            "an unknown resource",
        ),
        (
            ttd.clone(),
            with_resource("urn:altinn:resource:app_skd_app1"),
            "skd's app",
        ),
    ];
    for (token, event, context) in publishes {
        let reply = send(
            client()
                .post(server.at("/events/api/v1/events"))
                .bearer_auth(token)
                .header("content-type", "application/cloudevents+json")
                .body(event.to_string()),
        )
        .await;
        assert_problem(&reply, 403, context);
    }

    let app_event = |source: &str| {
        json!({"specversion": "1.0", "type": "app.instance.created",
               "subject": "/party/50002598", "source": source})
    };
    for (token, source, context) in [
        (
            ttd.clone(),
            "https://skd.apps.altinn.no/skd/app1/instances/50002598/g",
            "another org's app",
        ),
        (person_publisher.clone(), APP_SOURCE, "a person"),
        (subscribe_only.clone(), APP_SOURCE, "no publish scope"),
    ] {
        let reply = send(
            client()
                .post(server.at("/events/api/v1/app"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(app_event(source).to_string()),
        )
        .await;
        assert_problem(&reply, 403, context);
    }

    // Reading generic events needs the subscribe scope.
    for (token, context) in [(publish_only, "publish only"), (no_scope, "no scope")] {
        let reply = send(client().get(server.log_url("")).bearer_auth(token)).await;
        assert_problem(&reply, 403, context);
        assert!(detail(&reply).contains(SUBSCRIBE), "{}", reply.text);
    }

    assert_eq!(stored(&server).await, json!([]));
    let (_, _, body) = common::get(&server.at("/events/api/v1/app/ttd/app1?after=0"), &ttd).await;
    assert_eq!(body, json!([]));
}

/// A party one may not read answers like a party without events: 200 and `[]`.
#[tokio::test]
async fn a_party_one_may_not_read_looks_empty() {
    let server = Server::start();
    let ttd = server.ttd();
    let app_event = json!({"specversion": "1.0", "id": "other-party",
        "source": "https://ttd.apps.altinn.no/ttd/app1/instances/50003333/g", "type": "t",
        "subject": "/party/50003333", "alternativesubject": "/person/01017012345",
        "resource": "urn:altinn:resource:app_ttd_app1"});
    let unit_event = json!({"specversion": "1.0", "id": "other-unit",
        "source": "https://ttd.apps.altinn.no/ttd/app1/instances/50004444/g", "type": "t",
        "subject": "/party/50004444", "alternativesubject": "/organisation/912345678",
        "resource": "urn:altinn:resource:app_ttd_app1"});
    let generic = json!({"specversion": "1.0", "id": "other-org",
        "source": "https://example.com/s", "type": "t", "resource": RESOURCE,
        "subject": "urn:altinn:organization:identifier-no:912345678"});
    for event in [&app_event, &unit_event, &generic] {
        publish_ok(&server, &ttd, event).await;
    }
    let me = server.person();
    let skd = server.token(&["--org", "skd", "--scope", SUBSCRIBE]);
    let queries: Vec<(&str, Vec<Header>, &str)> = vec![
        (
            "/events/api/v1/app/party?after=0&party=50003333",
            vec![],
            "other-party",
        ),
        (
            "/events/api/v1/app/party?after=0&unit=912345678",
            vec![],
            "other-unit",
        ),
        (
            "/events/api/v1/app/party?after=0",
            vec![("person", "01017012345")],
            "other-party",
        ),
        (
            "/events/api/v1/app/ttd/app1?after=0&party=50003333",
            vec![],
            "other-party",
        ),
        (
            "/events/api/v1/events?resource=urn:altinn:resource:super-simple-service&after=0&subject=urn:altinn:organization:identifier-no:912345678",
            vec![],
            "other-org",
        ),
    ];
    for (path, headers, id) in &queries {
        // The owner sees the event ...
        let (status, _, body) = common::get_with(&server.at(path), &ttd, headers).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body[0]["id"], *id, "{path}: {body}");
        // ... the person and another org get an empty page, with a next link (on the orgs'
        // app route the person gets Altinn's 401).
        for (reader, who) in [(&me, "person"), (&skd, "skd")] {
            let (status, next, body) = common::get_with(&server.at(path), reader, headers).await;
            if who == "person" && path.starts_with("/events/api/v1/app/ttd/") {
                assert_eq!(status, 401, "{who} {path}: {body}");
                continue;
            }
            assert_eq!(status, 200, "{who} {path}: {body}");
            assert_eq!(body, json!([]), "{who} {path}");
            assert!(next.is_some(), "{who} {path}: next");
        }
    }
}

#[tokio::test]
async fn health_routes_need_no_token() {
    let server = Server::start();
    for path in ["/health", "/health/live", "/health/ready"] {
        for authorization in [None, Some("Bearer garbage")] {
            let mut request = client().get(server.at(path));
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            let reply = send(request).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text);
            assert!(reply.body["status"].is_string(), "{path}: {}", reply.text);
        }
    }
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problem_details() {
    let server = Server::start();
    let ttd = server.ttd();
    for (method, path, token) in [
        (Method::GET, "/nope", None),
        (Method::GET, "/events/api/v1/nope", Some(&ttd)),
        (Method::GET, "/events/api/v2/events", Some(&ttd)),
        (Method::POST, "/", None),
    ] {
        let mut request = client().request(method.clone(), server.at(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_problem(&send(request).await, 404, &format!("{method} {path}"));
    }
    for (method, path, allowed) in [
        (Method::DELETE, "/events/api/v1/events", "POST"),
        (Method::PUT, "/events/api/v1/events", "GET"),
        (Method::GET, "/events/api/v1/app", "POST"),
        (Method::POST, "/events/api/v1/app/party", "GET"),
        (Method::PATCH, "/events/api/v1/app/ttd/app1", "GET"),
        (Method::POST, "/health", "GET"),
        (Method::DELETE, "/health/live", "GET"),
    ] {
        let reply = send(
            client()
                .request(method.clone(), server.at(path))
                .bearer_auth(&ttd),
        )
        .await;
        let context = format!("{method} {path}");
        assert_problem(&reply, 405, &context);
        assert!(
            reply.header("allow").unwrap_or_default().contains(allowed),
            "{context}: Allow {:?}",
            reply.header("allow").unwrap_or_default()
        );
    }
}

#[tokio::test]
async fn the_app_route_of_orgs_refuses_an_end_user_with_altinns_text() {
    let server = Server::start();
    let person = server.person();
    let url = server.at("/events/api/v1/app/ttd/some-app?after=0");
    let reply = call(&Method::GET, &url, &None, Some(&format!("Bearer {person}"))).await;
    assert_problem(&reply, 401, "an end user on /app/{org}/{app}");
    assert_eq!(
        reply.body["detail"], "Only orgs can call this api",
        "{}",
        reply.text
    );
    let org = call(
        &Method::GET,
        &url,
        &None,
        Some(&format!("Bearer {}", server.ttd())),
    )
    .await;
    assert_eq!(org.status, 200, "{}", org.text);
}
