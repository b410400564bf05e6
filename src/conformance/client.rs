//! The runner as a CDS client: its keys, its JWKS endpoint, the tokens it signs (good ones the
//! way Epic and the sandbox sign them, and bad ones a service must refuse).

use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const RSA: &str = include_str!("../../conformance/keys/rsa.pem");
const EC384: &str = include_str!("../../conformance/keys/ec384.pem");
const JWKS: &str = include_str!("../../conformance/keys/jwks.json");

/// A way of signing (or mis-signing) a client JWT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// RS384 with `jku` and `nbf` (Epic's shape).
    Rs384,
    /// ES384 with `jku`, `aud` as an array (the sandbox's shape).
    Es384,
    Expired,
    NotYetValid,
    WrongAudience,
    UnknownIssuer,
    /// `alg: none`, no signature.
    AlgNone,
    /// HS256 keyed with the RSA public key text (the classic confusion attack).
    Hs256,
    /// A valid RS384 token whose signature was altered.
    BadSignature,
}

/// How a client shapes its (valid) JWT; vectors name the shape of the EHR they stand for.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct JwtShape {
    /// `RS384` or `ES384`.
    pub alg: JwtAlg,
    /// `jku` in the header (otherwise the service must know the JWKS out of band).
    pub jku: bool,
    /// `nbf` (Epic adds it, 5 minutes before `iat`).
    pub nbf: bool,
    /// `aud` as a one-element array instead of a string.
    pub aud_array: bool,
    /// A `tenant` claim.
    pub tenant: bool,
}

/// The two algorithms the spec recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum JwtAlg {
    RS384,
    ES384,
}

impl JwtShape {
    /// Epic's: RS384, jku, nbf.
    pub const EPIC: Self = Self {
        alg: JwtAlg::RS384,
        jku: true,
        nbf: true,
        aud_array: false,
        tenant: false,
    };
    /// The CDS Hooks sandbox's: ES384, jku.
    pub const SANDBOX: Self = Self {
        alg: JwtAlg::ES384,
        jku: true,
        nbf: false,
        aud_array: false,
        tenant: false,
    };
}

/// Who the runner says it is.
pub struct Signer {
    pub iss: String,
    pub jwks_url: String,
    audience_base: String,
    rsa: EncodingKey,
    ec: EncodingKey,
}

impl Signer {
    /// `audience_base`: the deployment's public base (`aud` = `{base}/cds-services/{id}`).
    pub fn new(iss: &str, jwks_url: &str, audience_base: &str) -> Result<Self, String> {
        Ok(Self {
            iss: iss.to_owned(),
            jwks_url: jwks_url.to_owned(),
            audience_base: audience_base.trim_end_matches('/').to_owned(),
            rsa: EncodingKey::from_rsa_pem(RSA.as_bytes()).map_err(|e| e.to_string())?,
            ec: EncodingKey::from_ec_pem(EC384.as_bytes()).map_err(|e| e.to_string())?,
        })
    }

    /// `Authorization` header value for a call to `path` (`/cds-services/x`).
    pub fn bearer(&self, path: &str, token: Token) -> String {
        format!("Bearer {}", self.sign(path, token))
    }

    /// A valid token in the shape a vector's EHR uses.
    pub fn bearer_shaped(&self, path: &str, shape: &JwtShape) -> String {
        let now = chrono::Utc::now().timestamp();
        let aud = format!("{}{path}", self.audience_base);
        let mut claims = json!({
            "iss": self.iss, "exp": now + 300, "iat": now,
            "jti": uuid::Uuid::new_v4().to_string(),
            "aud": if shape.aud_array { json!([aud]) } else { json!(aud) },
        });
        if shape.nbf {
            claims["nbf"] = json!(now - 300);
        }
        if shape.tenant {
            claims["tenant"] = json!("conformance");
        }
        let (alg, kid, key) = match shape.alg {
            JwtAlg::RS384 => (Algorithm::RS384, "test-rs384", &self.rsa),
            JwtAlg::ES384 => (Algorithm::ES384, "test-es384", &self.ec),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        if shape.jku {
            header.jku = Some(self.jwks_url.clone());
        }
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&header, &claims, key).unwrap_or_default()
        )
    }

    fn sign(&self, path: &str, token: Token) -> String {
        let now = chrono::Utc::now().timestamp();
        let aud = format!("{}{path}", self.audience_base);
        let mut claims = json!({
            "iss": self.iss, "aud": aud, "exp": now + 300, "iat": now,
            "jti": uuid::Uuid::new_v4().to_string(), "tenant": "conformance",
        });
        let mut header = Header::new(Algorithm::RS384);
        header.kid = Some("test-rs384".into());
        header.jku = Some(self.jwks_url.clone());
        let mut key = &self.rsa;
        match token {
            Token::Rs384 | Token::BadSignature => claims["nbf"] = json!(now - 300),
            Token::Es384 => {
                header = Header::new(Algorithm::ES384);
                header.kid = Some("test-es384".into());
                header.jku = Some(self.jwks_url.clone());
                key = &self.ec;
                claims["aud"] = json!([aud]);
            }
            Token::Expired => {
                claims["iat"] = json!(now - 900);
                claims["exp"] = json!(now - 600);
            }
            Token::NotYetValid => claims["nbf"] = json!(now + 600),
            Token::WrongAudience => claims["aud"] = json!(format!("{aud}-other")),
            Token::UnknownIssuer => claims["iss"] = json!("https://unknown-client.invalid"),
            Token::AlgNone => return unsigned(&claims),
            Token::Hs256 => {
                let mut h = Header::new(Algorithm::HS256);
                h.kid = Some("test-rs384".into());
                let hmac = EncodingKey::from_secret(RSA.as_bytes());
                return jsonwebtoken::encode(&h, &claims, &hmac).unwrap_or_default();
            }
        }
        let signed = jsonwebtoken::encode(&header, &claims, key).unwrap_or_default();
        if token == Token::BadSignature {
            tamper(&signed)
        } else {
            signed
        }
    }
}

fn unsigned(claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims.to_string())
    )
}

/// Flips one character in the middle of the signature.
fn tamper(jwt: &str) -> String {
    let mut chars: Vec<char> = jwt.chars().collect();
    let i = jwt.rfind('.').map(|dot| dot + 10).unwrap_or(0);
    if let Some(c) = chars.get_mut(i) {
        *c = if *c == 'A' { 'B' } else { 'A' };
    }
    chars.into_iter().collect()
}

/// The runner's JWKS endpoint, `GET /.well-known/jwks.json`, while the run lasts.
pub struct JwksEndpoint {
    pub addr: SocketAddr,
    handle: ServerHandle,
}

impl JwksEndpoint {
    /// Binds `listen` and serves the runner's public keys.
    pub fn start(listen: &str) -> std::io::Result<Self> {
        let server = HttpServer::new(|| {
            App::new().route(
                "/.well-known/jwks.json",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(JWKS)
                }),
            )
        })
        .workers(1)
        .bind(listen)?;
        let addr = server
            .addrs()
            .first()
            .copied()
            .ok_or_else(|| std::io::Error::other("no address bound"))?;
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self { addr, handle })
    }

    /// Stops the endpoint.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}
