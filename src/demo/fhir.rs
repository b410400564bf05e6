//! The demo EHR's FHIR R4 facade over [`super::record::DemoRecord`]: what bedside reads when an
//! EHR's prefetch is incomplete, and what bedside's SMART app reads after its launch. Read and
//! search only, bearer tokens from [`super::authz`], one patient per token, paged searchset
//! Bundles with `next` links. Errors are OperationOutcomes.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::ehr::DemoEhr;

/// Page size when `_count` is absent, and the most one page holds.
const DEFAULT_COUNT: usize = 100;
const MAX_COUNT: usize = 1000;

/// Resource types the facade serves.
const TYPES: &[&str] = &[
    "Patient",
    "Observation",
    "Condition",
    "Encounter",
    "MedicationRequest",
    "ServiceRequest",
];

/// A search as the demo reads it: the patient, the filters [`super::record::DemoRecord::search`]
/// applies, the page size asked for and the offset of the page. The facade and the EHR's own
/// prefetch read queries alike.
pub(super) struct Search {
    pub patient: Option<String>,
    pub filters: BTreeMap<String, String>,
    pub count: Option<usize>,
    pub offset: usize,
}

impl Search {
    /// Reads search parameters; an error is `(OperationOutcome issue code, why)`.
    pub fn parse<'a>(
        params: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, (&'static str, &'static str)> {
        let mut search = Self {
            patient: None,
            filters: BTreeMap::new(),
            count: None,
            offset: 0,
        };
        for (name, value) in params {
            match name {
                "patient" | "subject" | "_id" => {
                    search.patient = Some(value.trim_start_matches("Patient/").to_owned())
                }
                "_count" => {
                    search.count = Some(
                        value
                            .parse()
                            .map_err(|_| ("invalid", "_count must be a whole number"))?,
                    )
                }
                "_offset" => {
                    search.offset = value
                        .parse()
                        .map_err(|_| ("invalid", "_offset must be a whole number"))?
                }
                "_sort" if value != "-date" => {
                    return Err(("not-supported", "only _sort=-date is supported"))
                }
                "_sort" => {}
                other => {
                    search.filters.insert(other.to_owned(), value.to_owned());
                }
            }
        }
        Ok(search)
    }
}

/// Routes under `/fhir`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/fhir/metadata", web::get().to(metadata))
        .route(
            "/fhir/.well-known/smart-configuration",
            web::get().to(smart_configuration),
        )
        .route("/fhir/{type}", web::get().to(search))
        .route("/fhir/{type}/{id}", web::get().to(read));
}

/// An OperationOutcome with one issue.
pub fn outcome(status: u16, code: &str, diagnostics: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .content_type("application/fhir+json")
    .json(json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }))
}

fn fhir_json(body: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/fhir+json")
        .json(body)
}

async fn metadata(ehr: web::Data<DemoEhr>) -> HttpResponse {
    let params = |names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .map(|n| {
                let kind = match *n {
                    "patient" | "subject" => "reference",
                    "date" => "date",
                    _ => "token",
                };
                json!({"name": n, "type": kind})
            })
            .collect()
    };
    let resources: Vec<Value> = TYPES
        .iter()
        .map(|t| {
            json!({
                "type": t,
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": match *t {
                    "Patient" => params(&["_id"]),
                    "Observation" => params(&["patient", "subject", "category", "code", "date"]),
                    "Condition" => params(&["patient", "subject", "clinical-status"]),
                    "Encounter" => params(&["patient", "subject", "status", "date"]),
                    _ => params(&["patient", "subject", "status"]),
                },
            })
        })
        .collect();
    fhir_json(&json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": chrono::Utc::now().format("%Y-%m-%d").to_string(),
        "kind": "instance",
        "software": {"name": "bedside demo EHR (synthetic data, demo only)"},
        "implementation": {"description": "bedside's demo EHR FHIR facade", "url": ehr.fhir_base()},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "security": {
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [
                        {"url": "authorize", "valueUri": format!("{}/auth/authorize", ehr.origin)},
                        {"url": "token", "valueUri": format!("{}/auth/token", ehr.origin)},
                    ],
                }],
            },
            "resource": resources,
            "searchParam": [
                {"name": "_sort", "type": "string", "documentation": "-date only (newest first)"},
                {"name": "_count", "type": "number"},
            ],
        }],
    }))
}

async fn smart_configuration(ehr: web::Data<DemoEhr>) -> HttpResponse {
    HttpResponse::Ok().json(super::authz::smart_configuration(&ehr.origin))
}

/// The grant of the request's bearer token, or the 401 to answer.
fn authorized(ehr: &DemoEhr, req: &HttpRequest) -> Result<super::authz::Grant, Box<HttpResponse>> {
    let token = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| ehr.authz.grant(t.trim())) {
        Some(grant) => Ok(grant),
        None => {
            let mut response = outcome(
                401,
                "login",
                "a bearer token issued by the demo EHR is required",
            );
            response.headers_mut().insert(
                actix_web::http::header::WWW_AUTHENTICATE,
                actix_web::http::header::HeaderValue::from_static(
                    "Bearer realm=\"bedside demo EHR\"",
                ),
            );
            Err(Box::new(response))
        }
    }
}

async fn read(
    ehr: web::Data<DemoEhr>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let grant = match authorized(&ehr, &req) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let (resource_type, id) = path.into_inner();
    if !TYPES.contains(&resource_type.as_str()) {
        return outcome(404, "not-supported", "resource type not served by the demo");
    }
    let allowed = |r: &Value| {
        let own = format!("Patient/{}", grant.patient);
        (resource_type == "Patient" && id == grant.patient)
            || r["subject"]["reference"].as_str() == Some(own.as_str())
            || r["patient"]["reference"].as_str() == Some(own.as_str())
    };
    match ehr.record.read_resource(&resource_type, &id) {
        Some(r) if allowed(&r) => fhir_json(&r),
        Some(_) => outcome(403, "forbidden", "the token is for another patient"),
        None => outcome(
            404,
            "not-found",
            &format!("{resource_type}/{id} is not known"),
        ),
    }
}

async fn search(
    ehr: web::Data<DemoEhr>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> HttpResponse {
    let grant = match authorized(&ehr, &req) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let resource_type = path.into_inner();
    if !TYPES.contains(&resource_type.as_str()) {
        return outcome(404, "not-supported", "resource type not served by the demo");
    }
    let search = match Search::parse(query.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        Ok(s) => s,
        Err((code, why)) => return outcome(400, code, why),
    };
    let Some(patient) = search.patient else {
        return outcome(
            400,
            "required",
            "a patient (or subject) parameter is required",
        );
    };
    let (filters, offset) = (search.filters, search.offset);
    let count = search.count.unwrap_or(DEFAULT_COUNT).clamp(1, MAX_COUNT);
    if patient != grant.patient {
        return outcome(403, "forbidden", "the token is for another patient");
    }
    let found = ehr.record.search(&patient, &resource_type, &filters);
    let total = found.len();
    let page: Vec<Value> = found
        .into_iter()
        .skip(offset)
        .take(count)
        .map(|r| {
            let full_url = format!(
                "{}/{}/{}",
                ehr.fhir_base(),
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            );
            json!({"fullUrl": full_url, "resource": r, "search": {"mode": "match"}})
        })
        .collect();
    let link_for = |offset: usize| {
        let mut url = match url::Url::parse(&format!("{}/{resource_type}", ehr.fhir_base())) {
            Ok(u) => u,
            Err(_) => return String::new(),
        };
        {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query.iter().filter(|(n, _)| n != "_offset") {
                pairs.append_pair(name, value);
            }
            pairs.append_pair("_offset", &offset.to_string());
        }
        url.to_string()
    };
    let mut links = vec![json!({"relation": "self", "url": link_for(offset)})];
    if offset.saturating_add(count) < total {
        links.push(json!({"relation": "next", "url": link_for(offset + count)}));
    }
    fhir_json(&json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": page,
    }))
}
