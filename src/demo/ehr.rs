//! The demo EHR: a patient list and charts over [`DemoRecord`], and the EHR's side of CDS Hooks
//! against bedside's own endpoints — discovery, prefetch filled from the chart, a signed client
//! JWT, the cards rendered by the page (`smart-launch/demo-ehr/`), suggestions applied to the
//! chart, feedback posted as the spec says, and the SMART app opened from a card through the
//! demo's authorization server ([`super::authz`]) and FHIR facade ([`super::fhir`]).
//!
//! A separate origin from the gateway, as a real EHR is. For the demo only; `serve` never
//! starts it.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::error::InternalError;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::authz::{Authz, LaunchContext};
use super::client::DemoClient;
use super::record::{DemoRecord, RecordError};

const PAGE: &str = include_str!("../../smart-launch/demo-ehr/ehr.html");
const SCRIPT: &str = include_str!("../../smart-launch/demo-ehr/ehr.js");
const STYLE: &str = include_str!("../../smart-launch/demo-ehr/ehr.css");

/// What the page shows in its banner.
pub const NOTICE: &str = "Demo EHR — synthetic patients only, not for clinical use. Its signing key, authorization server and FHIR facade exist for this demo only; `bedside serve` never enables them.";

/// How long the FHIR token a hook call carries (`fhirAuthorization`) is valid.
const HOOK_TOKEN_TTL: Duration = Duration::from_secs(300);

/// Largest JSON body the demo EHR's API accepts.
const MAX_BODY: usize = 64 * 1024;

/// The demo EHR's state.
pub struct DemoEhr {
    /// This EHR's origin (`http://127.0.0.1:8081`).
    pub origin: String,
    /// bedside's public base (`http://127.0.0.1:8080`).
    pub gateway: String,
    /// The admin token for bedside's report (this run's).
    pub admin_token: String,
    pub record: DemoRecord,
    pub authz: Authz,
    pub client: DemoClient,
    http: reqwest::Client,
}

impl DemoEhr {
    /// The demo EHR at `origin` in front of the gateway at `gateway`.
    pub fn new(
        origin: &str,
        gateway: &str,
        admin_token: &str,
        smart_client_id: &str,
        smart_redirect_uri: &str,
    ) -> Result<Self, String> {
        let now = chrono::Utc::now();
        let fhir_base = format!("{origin}/fhir");
        Ok(Self {
            origin: origin.to_owned(),
            gateway: gateway.trim_end_matches('/').to_owned(),
            admin_token: admin_token.to_owned(),
            record: DemoRecord::load(now).map_err(|e| format!("demo patients: {e}"))?,
            authz: Authz::new(smart_client_id, smart_redirect_uri, &fhir_base),
            client: DemoClient::generate(origin, &format!("{origin}/.well-known/jwks.json"))?,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(15))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())?,
        })
    }

    /// The FHIR base hook calls and the SMART app use.
    pub fn fhir_base(&self) -> String {
        format!("{}/fhir", self.origin)
    }
}

/// Every route of the demo EHR.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Bad input gets the same JSON error body as every other refusal (OAuth's shape on the
    // token endpoint, an OperationOutcome under /fhir).
    let json = web::JsonConfig::default()
        .limit(MAX_BODY)
        .error_handler(|e, _| {
            InternalError::from_response(e.to_string(), error(400, &e.to_string())).into()
        });
    let query = web::QueryConfig::default().error_handler(|e, req| {
        let body = if req.path().starts_with("/fhir") {
            super::fhir::outcome(400, "invalid", &e.to_string())
        } else {
            error(400, &e.to_string())
        };
        InternalError::from_response(e.to_string(), body).into()
    });
    let form = web::FormConfig::default()
        .limit(MAX_BODY)
        .error_handler(|e, _| {
            let body = HttpResponse::BadRequest()
                .json(json!({"error": "invalid_request", "error_description": e.to_string()}));
            InternalError::from_response(e.to_string(), body).into()
        });
    cfg.app_data(json)
        .app_data(query)
        .app_data(form)
        .route("/", web::get().to(page))
        .route("/assets/ehr.js", web::get().to(script))
        .route("/assets/ehr.css", web::get().to(style))
        .route("/.well-known/jwks.json", web::get().to(jwks))
        .route("/api/info", web::get().to(info))
        .route("/api/patients", web::get().to(patients))
        .route("/api/patients/{id}", web::get().to(chart))
        .route("/api/patients/{id}/chart.svg", web::get().to(trend_svg))
        .route("/api/patients/{id}/hooks/{hook}", web::post().to(fire_hook))
        .route("/api/patients/{id}/actions", web::post().to(apply_actions))
        .route("/api/feedback/{service}", web::post().to(feedback))
        .route("/launch", web::get().to(launch))
        .route("/report", web::get().to(report));
    super::fhir::configure(cfg);
    super::authz::configure(cfg);
}

/// Whether a state-changing request comes from this EHR's own page (or from a tool that sends
/// no `Origin`, like curl): another site's page may not fire hooks or post feedback here.
fn same_origin(ehr: &DemoEhr, req: &HttpRequest) -> bool {
    match req.headers().get("Origin").and_then(|o| o.to_str().ok()) {
        None => true,
        Some(origin) => origin == ehr.origin,
    }
}

fn error(status: u16, message: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .json(json!({"error": message}))
}

async fn page(ehr: web::Data<DemoEhr>) -> HttpResponse {
    let csp = format!(
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-src 'self' {gw}; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        gw = ehr.gateway
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", csp))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Cache-Control", "no-store"))
        .body(PAGE)
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(SCRIPT)
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(STYLE)
}

async fn jwks(ehr: web::Data<DemoEhr>) -> HttpResponse {
    HttpResponse::Ok().json(ehr.client.jwks())
}

/// bedside's discovery document, as this EHR reads it before each call.
async fn discovery(ehr: &DemoEhr) -> Result<Vec<Value>, String> {
    let url = format!("{}/cds-services", ehr.gateway);
    let response = ehr
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("discovery failed: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("discovery answered {}", response.status()));
    }
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("discovery is not JSON: {e}"))?;
    Ok(body["services"].as_array().cloned().unwrap_or_default())
}

async fn info(ehr: web::Data<DemoEhr>) -> HttpResponse {
    let services: Vec<Value> = discovery(&ehr)
        .await
        .unwrap_or_default()
        .iter()
        .map(|s| json!({"id": s["id"], "hook": s["hook"], "title": s["title"]}))
        .collect();
    HttpResponse::Ok().json(json!({
        "gateway": ehr.gateway, "notice": NOTICE, "report": "/report", "services": services,
    }))
}

async fn patients(ehr: web::Data<DemoEhr>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"patients": ehr.record.list()}))
}

async fn chart(ehr: web::Data<DemoEhr>, id: web::Path<String>) -> HttpResponse {
    let id = id.into_inner();
    if !ehr.record.has(&id) {
        return error(404, "no such demo patient");
    }
    let none = BTreeMap::new();
    let patient = ehr
        .record
        .read_resource("Patient", &id)
        .unwrap_or(Value::Null);
    HttpResponse::Ok().json(json!({
        "patient": patient,
        "observations": ehr.record.search(&id, "Observation", &none),
        "conditions": ehr.record.search(&id, "Condition", &none),
        "orders": ehr.record.orders(&id),
    }))
}

/// Vital signs drawn as trend lines (heart rate, respiratory rate, SpO₂, systolic BP,
/// temperature; LOINC), with the SMART app's own sparkline.
const TRENDS: &[(&str, &[&str])] = &[
    ("Heart rate /min", &["8867-4"]),
    ("Respiratory rate /min", &["9279-1"]),
    ("SpO₂ %", &["59408-5", "2708-6"]),
    ("Systolic BP mmHg", &["8480-6"]),
    ("Temperature", &["8310-5"]),
];

async fn trend_svg(ehr: web::Data<DemoEhr>, id: web::Path<String>) -> HttpResponse {
    let id = id.into_inner();
    if !ehr.record.has(&id) {
        return error(404, "no such demo patient");
    }
    let observations = ehr.record.search(&id, "Observation", &BTreeMap::new());
    let to = chrono::Utc::now();
    let from = to - chrono::Duration::hours(48);
    const ROW: f64 = 72.0;
    let height = ROW * TRENDS.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 560 {height}\" width=\"560\" height=\"{height}\" role=\"img\" aria-label=\"Vital-sign trends over the last 48 hours\"><style>.spark-line{{fill:none;stroke:#1f5fa8;stroke-width:1.5}}.spark-point{{fill:#1f5fa8}}text{{font:12px sans-serif;fill:#333}}</style>"
    );
    for (row, (label, codes)) in TRENDS.iter().enumerate() {
        let mut series: Vec<(chrono::DateTime<chrono::Utc>, f64)> = observations
            .iter()
            .flat_map(|o| measurements(o, codes))
            .filter(|(t, _)| *t >= from)
            .collect();
        series.sort_by_key(|p| p.0);
        let y = row as f64 * ROW;
        let last = series
            .last()
            .map_or("no data".to_owned(), |(_, v)| format!("last {v:.1}"));
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{:.0}\">{}</text><text x=\"0\" y=\"{:.0}\">{}</text>",
            y + 28.0,
            crate::html::escape(label),
            y + 44.0,
            crate::html::escape(&last)
        ));
        let spark = crate::smart::chart::sparkline(label, &series, from, to, None);
        svg.push_str(&spark.replacen(
            "<svg class=\"spark\"",
            &format!("<svg class=\"spark\" x=\"170\" y=\"{y:.0}\" width=\"380\" height=\"64\""),
            1,
        ));
    }
    svg.push_str("</svg>");
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(svg)
}

/// `(time, value)` of an Observation's quantity (or component) coded with one of `codes`.
fn measurements(o: &Value, codes: &[&str]) -> Vec<(chrono::DateTime<chrono::Utc>, f64)> {
    let Some(at) = o["effectiveDateTime"]
        .as_str()
        .and_then(crate::fhir::time::parse_instant)
    else {
        return Vec::new();
    };
    let coded = |c: &Value| {
        c["coding"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|x| codes.contains(&x["code"].as_str().unwrap_or_default()))
        })
    };
    let mut out = Vec::new();
    if coded(&o["code"]) {
        if let Some(v) = o["valueQuantity"]["value"].as_f64() {
            out.push((at, v));
        }
    }
    for component in o["component"].as_array().into_iter().flatten() {
        if coded(&component["code"]) {
            if let Some(v) = component["valueQuantity"]["value"].as_f64() {
                out.push((at, v));
            }
        }
    }
    out
}

/// `{{…}}` prefetch tokens the demo EHR can fill, for `patient`.
fn fill(template: &str, context: &BTreeMap<&str, String>) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        let token = after[..end].trim();
        out.push_str(context.get(token)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// Runs one filled prefetch query against the chart, as the EHR's own server would.
fn prefetch_query(ehr: &DemoEhr, patient: &str, query: &str) -> Option<Value> {
    let (resource_type, params) = match query.split_once('?') {
        Some((t, q)) => (t, Some(q)),
        None => (query, None),
    };
    let Some(params) = params else {
        // A read: `Type/id`.
        let (t, id) = resource_type.split_once('/')?;
        return ehr.record.read_resource(t, id);
    };
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(params.as_bytes())
        .into_owned()
        .collect();
    let search =
        super::fhir::Search::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).ok()?;
    // Prefetch is about the hook's patient only; anything else is left for bedside to fetch.
    if search.patient.as_deref() != Some(patient) {
        return None;
    }
    let (filters, count) = (search.filters, search.count.unwrap_or(usize::MAX));
    let found = ehr.record.search(patient, resource_type, &filters);
    let total = found.len();
    let entry: Vec<Value> = found
        .into_iter()
        .take(count)
        .map(|r| json!({"resource": r, "search": {"mode": "match"}}))
        .collect();
    Some(json!({"resourceType": "Bundle", "type": "searchset", "total": total, "entry": entry}))
}

#[derive(Deserialize, Default)]
struct HookBody {
    /// For order-select: which drafts are selected (default: all).
    #[serde(default)]
    selections: Option<Vec<String>>,
}

/// `POST /api/patients/{id}/hooks/{hook}`: calls every bedside service registered for `hook`
/// the way an EHR does, and returns each answer for the page to render.
async fn fire_hook(
    ehr: web::Data<DemoEhr>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: Option<web::Json<HookBody>>,
) -> HttpResponse {
    if !same_origin(&ehr, &req) {
        return error(403, "only the demo EHR's own page may call this");
    }
    let (patient, hook) = path.into_inner();
    if !ehr.record.has(&patient) {
        return error(404, "no such demo patient");
    }
    if ![
        "patient-view",
        "order-select",
        "order-sign",
        "encounter-start",
    ]
    .contains(&hook.as_str())
    {
        return error(
            400,
            "the demo EHR fires patient-view, order-select, order-sign and encounter-start",
        );
    }
    let services = match discovery(&ehr).await {
        Ok(s) => s,
        Err(e) => return error(502, &e),
    };
    let drafts = ehr.record.drafts(&patient);
    let encounter = ehr
        .record
        .search(&patient, "Encounter", &BTreeMap::new())
        .into_iter()
        .next();
    let mut context = json!({"userId": "Practitioner/demo-clinician", "patientId": patient});
    if let Some(e) = encounter.as_ref().and_then(|e| e["id"].as_str()) {
        context["encounterId"] = Value::String(e.to_owned());
    } else if hook == "encounter-start" {
        return error(409, "this patient has no encounter to start");
    }
    if hook.starts_with("order-") {
        if drafts.is_empty() {
            return error(409, "this patient has no draft order to select or sign");
        }
        let entries: Vec<Value> = drafts.iter().map(|r| json!({"resource": r})).collect();
        context["draftOrders"] =
            json!({"resourceType": "Bundle", "type": "collection", "entry": entries});
        if hook == "order-select" {
            let drafted: Vec<String> = drafts
                .iter()
                .map(|r| {
                    format!(
                        "{}/{}",
                        r["resourceType"].as_str().unwrap_or_default(),
                        r["id"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            // Selections are draft orders of this call (the spec's `selections` ⊆ draftOrders).
            let selections: Vec<String> = match body.and_then(|b| b.into_inner().selections) {
                Some(wanted) => wanted.into_iter().filter(|s| drafted.contains(s)).collect(),
                None => drafted,
            };
            if selections.is_empty() {
                return error(400, "selections must name draft orders of this patient");
            }
            context["selections"] = json!(selections);
        }
    }
    let mut tokens: BTreeMap<&str, String> = BTreeMap::new();
    tokens.insert("context.patientId", patient.clone());
    tokens.insert("context.userId", "Practitioner/demo-clinician".into());
    tokens.insert("userPractitionerId", "demo-clinician".into());
    if let Some(e) = context["encounterId"].as_str() {
        tokens.insert("context.encounterId", e.to_owned());
    }
    let hook_instance = uuid::Uuid::new_v4().to_string();
    let mut calls = Vec::new();
    for service in services.iter().filter(|s| s["hook"] == hook.as_str()) {
        let Some(id) = service["id"].as_str() else {
            continue;
        };
        let mut prefetch = serde_json::Map::new();
        for (key, template) in service["prefetch"].as_object().into_iter().flatten() {
            let filled = template.as_str().and_then(|t| fill(t, &tokens));
            if let Some(found) = filled.and_then(|q| prefetch_query(&ehr, &patient, &q)) {
                prefetch.insert(key.clone(), found);
            }
        }
        let request = json!({
            "hook": hook, "hookInstance": hook_instance, "fhirServer": ehr.fhir_base(),
            "fhirAuthorization": {
                "access_token": ehr.authz.issue(&patient, HOOK_TOKEN_TTL), "token_type": "Bearer",
                "expires_in": HOOK_TOKEN_TTL.as_secs(), "scope": "patient/Patient.r patient/Observation.rs patient/Condition.rs patient/Encounter.r patient/MedicationRequest.rs",
                "subject": "bedside-demo-cds", "patient": patient,
            },
            "context": context, "prefetch": prefetch,
        });
        calls.push(call_service(&ehr, id, &request).await);
    }
    HttpResponse::Ok().json(json!({"hook": hook, "hookInstance": hook_instance, "calls": calls}))
}

/// One signed call to a bedside service; its answer (or why there is none) for the page.
async fn call_service(ehr: &DemoEhr, id: &str, request: &Value) -> Value {
    let url = format!("{}/cds-services/{id}", ehr.gateway);
    let failed = |status: u16, why: String| json!({"service": id, "status": status, "cards": [], "systemActions": [], "error": why});
    let bearer = match ehr.client.bearer(&url) {
        Ok(b) => b,
        Err(e) => return failed(0, e),
    };
    let response = match ehr
        .http
        .post(&url)
        .header("Authorization", bearer)
        .json(request)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return failed(0, format!("bedside did not answer: {e}")),
    };
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status != 200 {
        let why = body["error"]["message"]
            .as_str()
            .or(body["message"].as_str())
            .unwrap_or("bedside refused the call")
            .to_owned();
        return failed(status, why);
    }
    json!({
        "service": id, "status": status, "cards": body["cards"].as_array().cloned().unwrap_or_default(),
        "systemActions": body["systemActions"].as_array().cloned().unwrap_or_default(), "error": Value::Null,
    })
}

#[derive(Deserialize)]
struct ActionsBody {
    actions: Vec<Value>,
}

/// `POST /api/patients/{id}/actions`: a suggestion's actions, applied to the chart.
async fn apply_actions(
    ehr: web::Data<DemoEhr>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<ActionsBody>,
) -> HttpResponse {
    if !same_origin(&ehr, &req) {
        return error(403, "only the demo EHR's own page may call this");
    }
    let id = id.into_inner();
    match ehr.record.apply(&id, &body.actions) {
        Ok(applied) => {
            HttpResponse::Ok().json(json!({"applied": applied, "orders": ehr.record.orders(&id)}))
        }
        Err(RecordError::UnknownPatient(_)) => error(404, "no such demo patient"),
        Err(e) => error(422, &e.to_string()),
    }
}

/// `POST /api/feedback/{service}`: the page's feedback, sent to bedside signed.
async fn feedback(
    ehr: web::Data<DemoEhr>,
    req: HttpRequest,
    service: web::Path<String>,
    body: web::Json<Value>,
) -> HttpResponse {
    if !same_origin(&ehr, &req) {
        return error(403, "only the demo EHR's own page may call this");
    }
    let service = service.into_inner();
    if service.is_empty()
        || !service
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return error(400, "not a service id");
    }
    let url = format!("{}/cds-services/{service}/feedback", ehr.gateway);
    let bearer = match ehr.client.bearer(&url) {
        Ok(b) => b,
        Err(e) => return error(500, &e),
    };
    match ehr
        .http
        .post(&url)
        .header("Authorization", bearer)
        .json(&body.into_inner())
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            HttpResponse::Ok().json(json!({"status": status, "body": body}))
        }
        Err(e) => error(502, &format!("bedside did not answer: {e}")),
    }
}

#[derive(Deserialize)]
struct LaunchQuery {
    patient: String,
    url: String,
    #[serde(rename = "appContext", default)]
    app_context: Option<String>,
}

/// `GET /launch`: the EHR launch of a card's SMART link — registers the launch context and
/// sends the frame to the app with `iss` and `launch`. Only bedside's own app is launched.
async fn launch(ehr: web::Data<DemoEhr>, q: web::Query<LaunchQuery>) -> HttpResponse {
    if !ehr.record.has(&q.patient) {
        return error(404, "no such demo patient");
    }
    let Ok(mut target) = url::Url::parse(&q.url) else {
        return error(400, "the SMART link is not a URL");
    };
    let gateway_origin = url::Url::parse(&ehr.gateway)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    if target.origin().ascii_serialization() != gateway_origin {
        return error(400, "the demo EHR launches only bedside's app");
    }
    let launch = ehr.authz.launch(LaunchContext {
        patient: q.patient.clone(),
        app_context: q.app_context.clone(),
    });
    target
        .query_pairs_mut()
        .append_pair("iss", &ehr.fhir_base())
        .append_pair("launch", &launch);
    HttpResponse::Found()
        .insert_header(("Location", target.to_string()))
        .finish()
}

/// `GET /report`: bedside's feedback report (fetched with this run's admin token).
async fn report(ehr: web::Data<DemoEhr>) -> HttpResponse {
    let url = format!("{}/admin/report", ehr.gateway);
    match ehr
        .http
        .get(&url)
        .header("Accept", "text/html")
        .bearer_auth(&ehr.admin_token)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {
            let html = r.text().await.unwrap_or_default();
            HttpResponse::Ok()
                .content_type("text/html; charset=utf-8")
                .insert_header((
                    "Content-Security-Policy",
                    "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
                ))
                .insert_header(("Cache-Control", "no-store"))
                .body(html)
        }
        Ok(r) => error(502, &format!("bedside's report answered {}", r.status())),
        Err(e) => error(502, &format!("bedside did not answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_templates_fill_known_tokens_only() {
        let mut ctx = BTreeMap::new();
        ctx.insert("context.patientId", "p1".to_owned());
        assert_eq!(
            fill("Observation?patient={{context.patientId}}&_count=5", &ctx).as_deref(),
            Some("Observation?patient=p1&_count=5")
        );
        assert_eq!(fill("Encounter/{{context.encounterId}}", &ctx), None);
        assert_eq!(fill("Patient/{{context.patientId", &ctx), None);
    }
}
