//! Client JWT verification over real HTTP, with a real JWKS server and real signatures.

use crate::common;

use std::time::Duration;

use crate::common::{
    bearer, claims, http, patient, sign, sign_with, Gateway, GatewayOptions, Key, KeyServer,
};
use serde_json::Value;

async fn call(gw: &Gateway, authorization: Option<String>) -> (u16, Value) {
    let mut req = http()
        .post(gw.service("deterioration"))
        .json(&patient("deteriorating"));
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (status, body)
}

fn assert_refused(status: u16, body: &Value, needle: &str) {
    assert_eq!(status, 401, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "expected `{needle}` in {body}");
    assert!(body["error"].is_string(), "{body}");
    // Never leak key material.
    let text = body.to_string();
    assert!(!text.contains("BEGIN") && !text.contains("\"n\""), "{text}");
}

#[tokio::test]
async fn rs384_and_es384_tokens_from_a_trusted_client_get_cards() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    for key in [Key::Rs384, Key::Es384] {
        let (status, body) = call(&gw, Some(bearer("deterioration", key))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["cards"].as_array().unwrap().len(), 1, "{body}");
    }
    // The JWKS was fetched once and then served from cache.
    assert_eq!(keys.hits("/jwks.json"), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_token_naming_an_allowlisted_jku_is_accepted() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let token = sign(&claims("deterioration"), Key::Es384, Some(&keys.jwks_url()));
    let (status, body) = call(&gw, Some(format!("Bearer {token}"))).await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn missing_expired_wrong_audience_and_unknown_kid_are_refused() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;

    let (s, b) = call(&gw, None).await;
    assert_refused(s, &b, "missing bearer token");

    let (s, b) = call(&gw, Some("Basic dXNlcjpwYXNz".into())).await;
    assert_refused(s, &b, "Bearer scheme");

    let mut expired = claims("deterioration");
    expired["iat"] = (common::now() - 3600).into();
    expired["exp"] = (common::now() - 600).into();
    let (s, b) = call(
        &gw,
        Some(format!("Bearer {}", sign(&expired, Key::Rs384, None))),
    )
    .await;
    assert_refused(s, &b, "expired");

    let mut wrong_aud = claims("deterioration");
    wrong_aud["aud"] = "https://elsewhere.test/cds-services/deterioration".into();
    let (s, b) = call(
        &gw,
        Some(format!("Bearer {}", sign(&wrong_aud, Key::Es384, None))),
    )
    .await;
    assert_refused(s, &b, "aud");

    let (s, b) = call(&gw, Some(bearer("deterioration", Key::Unpublished))).await;
    assert_refused(s, &b, "kid");

    let mut stranger = claims("deterioration");
    stranger["iss"] = "https://stranger.test".into();
    let (s, b) = call(
        &gw,
        Some(format!("Bearer {}", sign(&stranger, Key::Rs384, None))),
    )
    .await;
    assert_refused(s, &b, "not a trusted CDS client");

    let mut future = claims("deterioration");
    future["iat"] = (common::now() + 3600).into();
    future["exp"] = (common::now() + 3900).into();
    let (s, b) = call(
        &gw,
        Some(format!("Bearer {}", sign(&future, Key::Rs384, None))),
    )
    .await;
    assert_refused(s, &b, "iat");

    let mut not_yet = claims("deterioration");
    not_yet["nbf"] = (common::now() + 600).into();
    let (s, b) = call(
        &gw,
        Some(format!("Bearer {}", sign(&not_yet, Key::Rs384, None))),
    )
    .await;
    assert_refused(s, &b, "nbf");

    let mut no_jti = claims("deterioration");
    no_jti.as_object_mut().unwrap().remove("jti");
    let (s, b) = call(
        &gw,
        Some(format!("Bearer {}", sign(&no_jti, Key::Rs384, None))),
    )
    .await;
    assert_refused(s, &b, "jti");

    // An unverified `iss` with a newline is neither echoed raw nor allowed to break the header.
    let mut forged = claims("deterioration");
    forged["iss"] = "https://stranger.test\nINFO forged log line".into();
    let (s, b) = call(
        &gw,
        Some(format!("Bearer {}", sign(&forged, Key::Rs384, None))),
    )
    .await;
    assert_refused(s, &b, "not a trusted CDS client");
    assert!(!b["message"].as_str().unwrap().contains('\n'));

    let typ = sign_with(&claims("deterioration"), Key::Rs384, |h| {
        h.typ = Some("at+jwt".into())
    });
    let (s, b) = call(&gw, Some(format!("Bearer {typ}"))).await;
    assert_refused(s, &b, "typ");

    let (s, b) = call(&gw, Some("Bearer not.a.jwt".into())).await;
    assert_refused(s, &b, "malformed");

    // A token for another service of this gateway is not valid here.
    let (s, b) = call(&gw, Some(bearer("other-service", Key::Rs384))).await;
    assert_refused(s, &b, "aud");
    gw.stop().await;
}

#[tokio::test]
async fn refusals_carry_a_bearer_challenge() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let resp = http()
        .post(gw.service("deterioration"))
        .json(&patient("stable"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert_eq!(
        challenge,
        "Bearer error=\"invalid_token\", error_description=\"missing_token\""
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_tampered_signature_is_refused() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let token = sign(&claims("deterioration"), Key::Rs384, None);
    let (head, sig) = token.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{head}.{flipped}{}", &sig[1..]);
    let (s, b) = call(&gw, Some(format!("Bearer {tampered}"))).await;
    assert_refused(s, &b, "signature");
    gw.stop().await;
}

#[tokio::test]
async fn a_jku_off_the_allowlist_is_refused_and_never_fetched() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    // Same host, different path: only the exact allowlisted URL may be fetched.
    let evil = format!("{}/attacker/jwks.json", keys.base);
    let token = sign(&claims("deterioration"), Key::Rs384, Some(&evil));
    let (s, b) = call(&gw, Some(format!("Bearer {token}"))).await;
    assert_refused(s, &b, "jku");
    assert_eq!(
        keys.hits("/attacker/jwks.json"),
        0,
        "the unlisted jku was fetched"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_replayed_jti_is_refused() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let token = bearer("deterioration", Key::Es384);
    let (s, b) = call(&gw, Some(token.clone())).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(&gw, Some(token)).await;
    assert_refused(s, &b, "already used");
    gw.stop().await;
}

#[tokio::test]
async fn cached_keys_outlive_a_jwks_outage_until_max_age_then_fail_closed() {
    let keys = KeyServer::start().await;
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        extra_toml:
            "[auth]\njwks_refresh = '500ms'\njwks_min_refetch = '500ms'\njwks_max_age = '3s'\n"
                .into(),
        ..Default::default()
    })
    .await;
    let (s, _) = call(&gw, Some(bearer("deterioration", Key::Rs384))).await;
    assert_eq!(s, 200);
    assert_eq!(keys.hits("/jwks.json"), 1);

    keys.set_up(false);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Due for refresh: the fetch is tried, fails, and the cached keys are still used.
    let (s, b) = call(&gw, Some(bearer("deterioration", Key::Es384))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(keys.hits("/jwks.json"), 2, "the refresh was not attempted");

    // Past jwks_max_age with the endpoint still down: refuse, never accept unverifiable tokens.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let (s, b) = call(&gw, Some(bearer("deterioration", Key::Rs384))).await;
    assert_refused(s, &b, "JWK set could not be retrieved");

    // Back up: keys are fetched again and calls succeed.
    keys.set_up(true);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (s, b) = call(&gw, Some(bearer("deterioration", Key::Rs384))).await;
    assert_eq!(s, 200, "{b}");
    gw.stop().await;
}

#[tokio::test]
async fn without_any_cached_keys_an_unreachable_jwks_fails_closed() {
    let keys = KeyServer::start().await;
    keys.set_up(false);
    let gw = Gateway::with_keys(&keys).await;
    let (s, b) = call(&gw, Some(bearer("deterioration", Key::Rs384))).await;
    assert_refused(s, &b, "JWK set could not be retrieved");
    gw.stop().await;
}

#[tokio::test]
async fn feedback_also_requires_a_valid_token() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let body = serde_json::json!({"feedback": [{"card": "c1", "outcome": "accepted", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]});
    let resp = http()
        .post(format!("{}/feedback", gw.service("deterioration")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    gw.stop().await;
}

// === key rotation, time claims, `typ`, /metrics (issue 14, items 2–4) ===

/// A client's JWKS endpoint whose document can be swapped (the client rotating its key),
/// counting fetches.
struct RotatingKeys {
    url: String,
    jwks: std::sync::Arc<std::sync::Mutex<String>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl RotatingKeys {
    async fn start(jwks: String) -> Self {
        use actix_web::{web, App, HttpResponse, HttpServer};
        let doc = std::sync::Arc::new(std::sync::Mutex::new(jwks));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (d, f) = (doc.clone(), fetches.clone());
        let server = HttpServer::new(move || {
            let (d, f) = (d.clone(), f.clone());
            App::new().default_service(web::to(move || {
                let (d, f) = (d.clone(), f.clone());
                async move {
                    f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let body = d.lock().unwrap().clone();
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(body)
                }
            }))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://{addr}/jwks.json"),
            jwks: doc,
            fetches,
            handle,
        }
    }

    fn rotate_to(&self, jwks: String) {
        *self.jwks.lock().unwrap() = jwks;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A token signed with the key `jwks-rotated.json` publishes as `rotated-rs384`.
fn rotated_bearer() -> String {
    let token = sign_with(&claims("deterioration"), Key::Unpublished, |h| {
        h.kid = Some("rotated-rs384".into())
    });
    format!("Bearer {token}")
}

/// A token with a `kid` the client never published.
fn bogus_kid_bearer(kid: &str) -> String {
    let token = sign_with(&claims("deterioration"), Key::Rs384, |h| {
        h.kid = Some(kid.into())
    });
    format!("Bearer {token}")
}

#[tokio::test]
async fn a_rotated_key_is_accepted_right_after_a_bogus_kid_probe() {
    let keys = RotatingKeys::start(common::fixture("keys/jwks.json")).await;
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.url.clone()),
        ..Default::default()
    })
    .await;
    let (s, b) = call(&gw, Some(bearer("deterioration", Key::Rs384))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(keys.fetches(), 1);

    // Anyone can send a made-up kid: it costs one re-fetch (after the short back-off)...
    let (s, b) = call(&gw, Some(bogus_kid_bearer("probe-1"))).await;
    assert_refused(s, &b, "kid");
    assert_eq!(keys.fetches(), 2);
    // ...and the same kid again is answered from the negative cache, without a fetch.
    let (s, b) = call(&gw, Some(bogus_kid_bearer("probe-1"))).await;
    assert_refused(s, &b, "kid");
    assert_eq!(
        keys.fetches(),
        2,
        "a repeated unknown kid re-fetched the JWKS"
    );

    // The client rotates its key right after the probe and calls with the new kid, while more
    // made-up kids keep arriving. Every call with the new key is 200 and all the misses that
    // arrived together share one fetch.
    keys.rotate_to(common::fixture("keys/jwks-rotated.json"));
    let rotated = (0..6).map(|_| call(&gw, Some(rotated_bearer())));
    let probes = (2..5).map(|i| call(&gw, Some(bogus_kid_bearer(&format!("probe-{i}")))));
    let (rotated, probes) = tokio::join!(
        futures_util::future::join_all(rotated),
        futures_util::future::join_all(probes)
    );
    for (s, b) in rotated {
        assert_eq!(s, 200, "the rotated key was kept out: {b}");
    }
    for (s, b) in probes {
        assert_refused(s, &b, "kid");
    }
    assert_eq!(
        keys.fetches(),
        3,
        "concurrent misses did not share one fetch"
    );

    // The old key is gone with the rotation.
    let (s, b) = call(&gw, Some(bearer("deterioration", Key::Rs384))).await;
    assert_refused(s, &b, "kid");
    gw.stop().await;
    keys.handle.stop(true).await;
}

#[tokio::test]
async fn a_token_whose_times_overflow_or_lie_far_out_is_refused() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let now = common::now();
    // `exp - iat` overflows i64; this token used to pass and be replayable forever.
    for (iat, exp) in [
        (-1, i64::MAX),
        (i64::MIN, now + 300),
        (now, now + 100 * 365 * 86_400),
    ] {
        let mut c = claims("deterioration");
        c["iat"] = iat.into();
        c["exp"] = exp.into();
        let token = format!("Bearer {}", sign(&c, Key::Rs384, None));
        for _ in 0..2 {
            let (s, b) = call(&gw, Some(token.clone())).await;
            assert_refused(s, &b, "lifetime");
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_client_jwt_without_typ_is_refused() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let no_typ = sign_with(&claims("deterioration"), Key::Es384, |h| h.typ = None);
    let (s, b) = call(&gw, Some(format!("Bearer {no_typ}"))).await;
    assert_refused(s, &b, "typ");
    // "JWT" in any case is the required value.
    let lower = sign_with(&claims("deterioration"), Key::Es384, |h| {
        h.typ = Some("jwt".into())
    });
    let (s, b) = call(&gw, Some(format!("Bearer {lower}"))).await;
    assert_eq!(s, 200, "{b}");
    // CDS Hooks requires `kid` too: no kid-less key selection for clients.
    let no_kid = sign_with(&claims("deterioration"), Key::Es384, |h| h.kid = None);
    let (s, b) = call(&gw, Some(format!("Bearer {no_kid}"))).await;
    assert_refused(s, &b, "kid");
    gw.stop().await;
}

#[tokio::test]
async fn metrics_need_the_configured_bearer_token_and_are_public_without_one() {
    let token = "metrics-scraper-token";
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    let keys = KeyServer::start().await;
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        extra_toml: format!("\n[[metrics_tokens]]\nname = 'prometheus'\nsha256 = '{digest}'\n"),
        ..Default::default()
    })
    .await;
    let get = |auth: Option<&str>| {
        let mut req = http().get(format!("{}/metrics", gw.url));
        if let Some(a) = auth {
            req = req.header("Authorization", a.to_owned());
        }
        req.send()
    };
    for auth in [
        None,
        Some("Bearer wrong".to_owned()),
        Some(format!("Basic {token}")),
        Some(format!("Bearer {}", common::ADMIN_TOKEN)),
    ] {
        let r = get(auth.as_deref()).await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{auth:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert!(!r.text().await.unwrap().contains("bedside_"), "{auth:?}");
    }
    let r = get(Some(&format!("Bearer {token}"))).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("bedside_reloads_total"));
    gw.stop().await;

    // Without [[metrics_tokens]] the counters stay public, as before.
    let open = Gateway::with_keys(&keys).await;
    assert!(common::metrics(&open)
        .await
        .contains("bedside_reloads_total"));
    open.stop().await;
}
