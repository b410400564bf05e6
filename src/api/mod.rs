//! The public prediction API developers build on, beside CDS Hooks:
//!
//! - Open Inference Protocol (KServe v2) on bedside itself: `GET /v2/models/{name}`,
//!   `POST /v2/models/{name}[/versions/{v}]/infer` (tensor in, probabilities out), readiness;
//! - `POST /api/v1/models/{name}/predict`: a FHIR R4 Bundle in, risk + model version +
//!   explanation out, through the same features and batched inference as the cards;
//! - `POST /api/v1/embed` and `/v2/models/foundation`: the foundation model's patient embedding
//!   ([`embed`]).
//!
//! Same client JWT as the hooks, with `aud` = the URL called, or a static bearer token from
//! `[[api_tokens]]` (stored hashed; never accepted on CDS Hooks paths). The reference time of a
//! prediction is `?asOf=`, else the Bundle's `timestamp`, else the clock, so a replay of
//! recorded data gives what the live call gave.

mod embed;
mod error;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};

use crate::features::explain;
use crate::features::news2::{self, Vitals};
use crate::features::oxygen;
use crate::fhir::projection::{self, Text};
use crate::fhir::time::parse_instant;
use crate::http::auth::ClientAuth;
use crate::http::BodyLimits;
use crate::http::{parse_json, read_body, read_json_body};
use crate::inference::oip::{
    flatten_numbers, InferOutput, InferRequest, InferResponse, ModelMetadata, TensorMetadata,
    INPUT_NAME, OUTPUT_NAME,
};
use crate::inference::LoadedModel;
use crate::services::abstain;
use crate::services::scoring;
use crate::services::RuntimeHandle;
pub use error::ApiError;

/// Budget of one API prediction (the hooks' budget comes from each service definition).
const API_DEADLINE: Duration = Duration::from_secs(2);
/// Most samples one `/infer` call may send.
const MAX_INFER_BATCH: usize = 1024;

/// The prediction API's state (its own `web::Data`): the models in force, the credentials it
/// accepts, and the limits and public URL calls are checked against.
pub struct ApiState {
    pub runtime: Arc<RuntimeHandle>,
    pub auth: Arc<ClientAuth>,
    /// `(name, sha256)` of each `[[api_tokens]]` token.
    pub api_tokens: Vec<(String, [u8; 32])>,
    pub body_limits: BodyLimits,
    /// `public_url` without a trailing slash.
    pub public_base: String,
}

/// Registers the OIP and prediction routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    embed::configure(cfg);
    cfg.route(
        "/v2/health/live",
        web::get().to(|| async { HttpResponse::Ok().finish() }),
    )
    .route("/v2/health/ready", web::get().to(server_ready))
    .route("/v2/models/{name}", web::get().to(metadata))
    .route("/v2/models/{name}/ready", web::get().to(model_ready))
    .route(
        "/v2/models/{name}/versions/{version}",
        web::get().to(metadata),
    )
    .route("/v2/models/{name}/infer", web::post().to(infer))
    .route(
        "/v2/models/{name}/versions/{version}/infer",
        web::post().to(infer),
    )
    .route("/api/v1/models/{name}/predict", web::post().to(predict))
    .route(
        "/api/v1/models/{name}/versions/{version}/predict",
        web::post().to(predict),
    );
}

async fn server_ready(state: web::Data<ApiState>) -> HttpResponse {
    let runtime = state.runtime.current();
    let foundation_alive = runtime.foundation.as_ref().is_none_or(|f| f.is_alive());
    if runtime.models.all_alive() && foundation_alive {
        HttpResponse::Ok().finish()
    } else {
        HttpResponse::ServiceUnavailable().finish()
    }
}

/// `{name}` and optional `{version}` from the path → the model that answers.
fn resolve(state: &ApiState, req: &HttpRequest) -> Result<Arc<LoadedModel>, ApiError> {
    let name = req.match_info().get("name").unwrap_or_default();
    let runtime = state.runtime.current();
    let found = match req.match_info().get("version") {
        Some(version) => runtime.models.get(name, version),
        None => runtime.models.default_version(name),
    };
    found.ok_or_else(|| ApiError::UnknownModel(name.to_owned()))
}

/// A configured API token, else a client JWT whose `aud` is the URL called (without query).
async fn authorize(state: &ApiState, req: &HttpRequest) -> Result<(), ApiError> {
    if let Some(label) = crate::http::static_token_holder(&state.api_tokens, req) {
        // The configured label of the token's holder (never the token, never patient data).
        tracing::debug!(token_holder = %label, path = req.path(), "prediction API call");
        return Ok(());
    }
    let audience = [format!("{}{}", state.public_base, req.path())];
    state.auth.verify_request(req, &audience).await?;
    Ok(())
}

async fn model_ready(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let model = resolve(&state, &req)?;
    Ok(if model.handle.is_alive() {
        HttpResponse::Ok().finish()
    } else {
        HttpResponse::ServiceUnavailable().finish()
    })
}

async fn metadata(state: web::Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req).await?;
    let model = resolve(&state, &req)?;
    let m = &model.manifest;
    let shape = |tail: &[usize]| {
        std::iter::once(-1)
            .chain(tail.iter().map(|&d| d as i64))
            .collect()
    };
    Ok(HttpResponse::Ok().json(ModelMetadata {
        name: m.name.clone(),
        versions: state
            .runtime
            .current()
            .models
            .versions(&m.name)
            .iter()
            .map(|v| v.manifest.version.clone())
            .collect(),
        platform: "pytorch_torchscript".into(),
        inputs: vec![TensorMetadata {
            name: INPUT_NAME.into(),
            datatype: "FP32".into(),
            shape: shape(&m.input.shape),
        }],
        outputs: vec![TensorMetadata {
            name: OUTPUT_NAME.into(),
            datatype: "FP32".into(),
            shape: shape(&m.output.shape),
        }],
    }))
}

async fn infer(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req).await?;
    let model = resolve(&state, &req)?;
    let body = read_json_body(&req, payload, state.body_limits).await?;
    let request: InferRequest = parse_json(&body)?;
    let invalid = |field: &str, message: String| ApiError::invalid(field, message);
    let [input] = request.inputs.as_slice() else {
        return Err(invalid(
            "inputs",
            format!("exactly one input tensor ({INPUT_NAME}) is expected"),
        ));
    };
    if input.datatype != "FP32" && input.datatype != "FP64" {
        return Err(invalid(
            "inputs[0].datatype",
            "must be FP32 (or FP64)".into(),
        ));
    }
    let sample_shape: Vec<i64> = model
        .manifest
        .input
        .shape
        .iter()
        .map(|&d| d as i64)
        .collect();
    let batch = match input.shape.split_first() {
        Some((&b, rest)) if rest == sample_shape.as_slice() && b >= 1 => b as usize,
        _ => {
            return Err(invalid(
                "inputs[0].shape",
                format!(
                    "must be [batch, {}] with batch ≥ 1",
                    sample_shape
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        }
    };
    if batch > MAX_INFER_BATCH {
        return Err(invalid(
            "inputs[0].shape",
            format!("batch is limited to {MAX_INFER_BATCH}"),
        ));
    }
    let mut data = Vec::with_capacity(batch * model.handle.per_sample());
    if !flatten_numbers(&input.data, &mut data) || data.len() != batch * model.handle.per_sample() {
        return Err(invalid(
            "inputs[0].data",
            format!(
                "must hold {} finite numbers",
                batch * model.handle.per_sample()
            ),
        ));
    }
    if let Some(vocab) = &model.vocab {
        // A token model's rows are (token id, hours): the ids must be tokens of its vocabulary.
        let tokens = vocab.len() as f32;
        if data
            .chunks(2)
            .any(|row| row[0].fract() != 0.0 || !(0.0..tokens).contains(&row[0]))
        {
            return Err(invalid(
                "inputs[0].data",
                format!(
                    "column 0 holds token ids: integers from 0 to {}",
                    vocab.len().saturating_sub(1)
                ),
            ));
        }
    }
    let scores = model
        .handle
        .score(data, batch, Instant::now() + API_DEADLINE)
        .await?;
    Ok(HttpResponse::Ok().json(InferResponse {
        model_name: model.manifest.name.clone(),
        model_version: Some(model.manifest.version.clone()),
        id: request.id,
        outputs: vec![InferOutput {
            name: OUTPUT_NAME.into(),
            shape: vec![batch as i64, 1],
            datatype: "FP32".into(),
            data: json!(scores),
        }],
    }))
}

#[derive(Deserialize)]
struct PredictQuery {
    #[serde(rename = "asOf")]
    as_of: Option<String>,
}

#[derive(Deserialize)]
struct BundleHead<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Text<'a>,
    #[serde(borrow, default)]
    timestamp: Option<Text<'a>>,
}

async fn predict(
    state: web::Data<ApiState>,
    req: HttpRequest,
    query: web::Query<PredictQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req).await?;
    let model = resolve(&state, &req)?;
    let body = read_fhir_body(&state, &req, payload).await?;
    let bundle: &RawValue = parse_json(&body)?;
    let head: BundleHead<'_> = parse_json(bundle.get().as_bytes())?;
    if &*head.resource_type != "Bundle" {
        return Err(ApiError::invalid(
            "resourceType",
            format!("expected a FHIR Bundle, got {}", &*head.resource_type),
        ));
    }
    let as_of = reference_time(query.as_of.as_deref(), head.timestamp.as_deref())?;
    let projected = projection::observations(bundle).map_err(|e| {
        ApiError::Json(crate::http::JsonError::Invalid {
            field: None,
            message: e.to_string(),
        })
    })?;
    let prepared = scoring::prepare(&model, &projected.observations, projected.unreadable, as_of);
    if prepared.matrix.measurements.is_empty() {
        return Err(ApiError::InsufficientData(format!(
            "no usable observations of the model's inputs in the {} h before {}",
            model.features.window.as_secs() / 3600,
            stamp(as_of)
        )));
    }
    // Outside what the model was trained on: no number, the reason instead.
    if let Some(reason) = abstain::reason(
        &model.manifest.validity,
        None,
        &model.features,
        &prepared.matrix,
        as_of,
    ) {
        return Err(ApiError::InsufficientData(reason));
    }
    let scored = scoring::score(&model, &prepared, Instant::now() + API_DEADLINE).await?;
    let on_oxygen = oxygen::on_oxygen(&projected.observations, prepared.matrix.window_start, as_of);
    Ok(HttpResponse::Ok().json(prediction_json(
        &state, &model, &prepared, &scored, as_of, on_oxygen,
    )))
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A FHIR JSON body (`application/fhir+json` or `application/json`), within the body limits.
async fn read_fhir_body(
    state: &ApiState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<web::BytesMut, ApiError> {
    Ok(read_body(
        req,
        payload,
        state.body_limits,
        &["application/json", "application/fhir+json"],
    )
    .await?)
}

/// The reference time of a call: `?asOf=`, else the Bundle's `timestamp`, else the clock.
fn reference_time(as_of: Option<&str>, timestamp: Option<&str>) -> Result<DateTime<Utc>, ApiError> {
    match (as_of, timestamp) {
        (Some(q), _) => parse_instant(q).ok_or_else(|| {
            ApiError::invalid("asOf", "`asOf` must be an RFC 3339 date-time with a zone")
        }),
        (None, Some(ts)) => parse_instant(ts).ok_or_else(|| {
            ApiError::invalid("timestamp", "Bundle.timestamp must be a FHIR instant")
        }),
        (None, None) => Ok(Utc::now()),
    }
}

fn prediction_json(
    state: &ApiState,
    model: &LoadedModel,
    prepared: &scoring::Prepared,
    scored: &scoring::Scored,
    as_of: DateTime<Utc>,
    on_oxygen: Option<bool>,
) -> Value {
    let m = &model.manifest;
    let x = &prepared.matrix;
    let news2 = news2::score(&Vitals {
        on_oxygen,
        ..Vitals::latest(&model.features, x, x.window_start)
    });
    let why = explain::explain(&model.features, x, &scored.contributions, 5);
    let explanation: Vec<Value> = model
        .features
        .features
        .iter()
        .enumerate()
        .map(|(f, def)| {
            let latest = x.latest(f);
            json!({
                "feature": def.name,
                "display": def.display,
                "unit": def.unit,
                "measurements": x.count(f),
                "latest": latest.map(|l| json!({
                    "value": l.value,
                    "time": stamp(l.time),
                    "observation": format!("Observation/{}", l.resource_id),
                })),
                "risk_without": scored.risk_without.get(f),
            })
        })
        .collect();
    json!({
        "model": m.name,
        "version": m.version,
        "status": m.status,
        "risk": scored.risk,
        "meaning": m.output.meaning,
        "horizon_hours": m.output.horizon_hours,
        "calibration": m.output.calibration,
        "as_of": stamp(as_of),
        "window": {"start": stamp(x.window_start), "end": stamp(x.window_end)},
        // Measurements used; observations dropped (implausible, unit, status) and values read
        // clamped to the training range, by reason.
        "data_quality": prepared.quality,
        "measurements": x.measurements.len(),
        "rejected_observations": prepared.rejected,
        "news2": {
            "total": news2.total,
            "band": news2.band.as_str(),
            "parts": news2.parts.iter().map(|(n, p)| json!({"parameter": n, "points": p})).collect::<Vec<_>>(),
            "not_recorded": news2.missing,
        },
        "explanation": explanation,
        "drivers": why.drivers.iter().map(|d| json!({
            "feature": d.feature,
            "observation": d.reference,
            "contribution": d.contribution,
            "words": d.words,
        })).collect::<Vec<_>>(),
        "trends": why.trends.iter().map(|t| json!({"feature": t.feature, "words": t.words})).collect::<Vec<_>>(),
        "training_data": m.training_data,
        "model_card": format!("{}/models/{}/{}/model-card", state.public_base, m.name, m.version),
    })
}
