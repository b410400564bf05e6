//! The listener against hostile or slow clients, security headers, and TLS.

use std::time::{Duration, Instant};

use crate::common::{bearer, http, patient, Gateway, GatewayOptions, Key, KeyServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(gw: &Gateway) -> String {
    gw.url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let keys = KeyServer::start().await;
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        extra_toml: "[http]\nframe_ancestors = ['https://ehr.hospital.example']\n".into(),
        ..Default::default()
    })
    .await;
    let card = http()
        .post(gw.service("deterioration"))
        .header("Authorization", bearer("deterioration", Key::Rs384))
        .json(&patient("deteriorating"))
        .send()
        .await
        .unwrap();
    let refused = http()
        .post(gw.service("deterioration"))
        .send()
        .await
        .unwrap();
    let discovery = http()
        .get(format!("{}/cds-services", gw.url))
        .send()
        .await
        .unwrap();
    for (what, r) in [("card", card), ("401", refused), ("discovery", discovery)] {
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(h["cache-control"], "no-store", "{what}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
        assert_eq!(
            h["content-security-policy"],
            "default-src 'none'; frame-ancestors https://ehr.hospital.example",
            "{what}"
        );
        // public_url is https (behind a TLS proxy): browsers must stay on https.
        assert_eq!(h["strict-transport-security"], "max-age=31536000", "{what}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_trickles_its_body_gets_408_and_one_that_never_finishes_its_headers_is_dropped(
) {
    let keys = KeyServer::start().await;
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        extra_toml: "[limits]\nbody_timeout = '500ms'\nheader_timeout = '500ms'\n".into(),
        ..Default::default()
    })
    .await;
    // Headers complete, body promised (Content-Length) but never sent.
    let mut slow_body = TcpStream::connect(addr(&gw)).await.unwrap();
    let head = format!(
        "POST /cds-services/deterioration HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"hook\":",
        bearer("deterioration", Key::Rs384)
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), slow_body.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Slowloris: half a request line, then silence.
    let mut slow_head = TcpStream::connect(addr(&gw)).await.unwrap();
    slow_head
        .write_all(b"POST /cds-services/deterioration HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 1024];
    let outcome = tokio::time::timeout(Duration::from_secs(5), slow_head.read(&mut buf))
        .await
        .expect("the server closed the connection");
    // actix answers 408 or just closes: either way the connection is gone, quickly.
    match outcome {
        Ok(0) | Err(_) => {}
        Ok(n) => assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408")),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // The gateway still answers others.
    let r = http()
        .get(format!("{}/health/live", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn oversized_or_too_many_headers_are_refused_before_any_handler() {
    let gw = Gateway::start(GatewayOptions {
        auth: bedside::server::AuthMode::InsecureDisabled,
        ..Default::default()
    })
    .await;
    for (what, head) in [
        (
            "one 100 KB header",
            format!("X-Big: {}\r\n", "a".repeat(100 * 1024)),
        ),
        (
            "200 headers",
            (0..200).map(|i| format!("X-H{i}: v\r\n")).collect(),
        ),
    ] {
        let mut stream = TcpStream::connect(addr(&gw)).await.unwrap();
        let request = format!("GET /health/live HTTP/1.1\r\nHost: x\r\n{head}\r\n");
        let _ = stream.write_all(request.as_bytes()).await;
        let mut answer = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("answered")
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&answer[..n]);
        assert!(text.starts_with("HTTP/1.1 431"), "{what}: {text}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn tls_on_the_listener_serves_hooks_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (installed by .ci/setup)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let keys = KeyServer::start().await;
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        extra_toml: format!(
            "[http]\ntls_cert = '{}'\ntls_key = '{}'\n",
            cert.display(),
            key.display()
        ),
        ..Default::default()
    })
    .await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let https = gw.url.replace("http://", "https://");
    let r = client
        .post(format!("{https}/cds-services/deterioration"))
        .header("Authorization", bearer("deterioration", Key::Es384))
        .json(&patient("deteriorating"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["cards"].as_array().map(Vec::len), Some(1));
    // Plain http to the TLS port gets nothing useful.
    assert!(http()
        .get(format!("{}/health/live", gw.url))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true));
    gw.stop().await;
}
