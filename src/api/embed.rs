//! The foundation model over HTTP: `POST /api/v1/embed` (a FHIR R4 Bundle or a list of MEDS
//! events in, a patient embedding out, with the model version, the data window and what was
//! read) and the same model over the Open Inference Protocol (`/v2/models/foundation[/infer]`:
//! token ids and hours in, the embedding out).
//!
//! An embedding is not a risk: it carries no card and no threshold. Task heads built on it are
//! ordinary models with their own manifest, validity and explanation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, value::RawValue};

use super::{authorize, read_fhir_body, reference_time, stamp, ApiError, ApiState, PredictQuery};
use crate::features::tokens::{self, MedsEvent};
use crate::http::parse_json;
use crate::inference::oip::{
    flatten_numbers, InferOutput, InferRequest, InferResponse, ModelMetadata, TensorMetadata,
};
use crate::inference::FoundationModel;

/// Budget of one embedding call.
const EMBED_DEADLINE: Duration = Duration::from_secs(2);
/// Most values one OIP input may declare (far above any context; bounds the allocation).
const MAX_TOKENS: usize = 65_536;
/// The OIP name of the foundation model.
pub const FOUNDATION: &str = "foundation";

/// Registers the embedding routes (before the task models' `/v2/models/{name}` routes).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/embed", web::post().to(embed))
        .route("/v2/models/foundation", web::get().to(metadata))
        .route("/v2/models/foundation/ready", web::get().to(ready))
        .route("/v2/models/foundation/infer", web::post().to(infer));
}

/// The foundation model in force (a reload may replace it; a call keeps the one it started with).
fn model(state: &ApiState) -> Result<Arc<FoundationModel>, ApiError> {
    state
        .runtime
        .current()
        .foundation
        .clone()
        .ok_or_else(|| ApiError::UnknownModel(FOUNDATION.into()))
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "resourceType", default)]
    resource_type: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventList {
    events: Vec<MedsEvent>,
}

async fn embed(
    state: web::Data<ApiState>,
    req: HttpRequest,
    query: web::Query<PredictQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req).await?;
    let fm = model(&state)?;
    let body = read_fhir_body(&state, &req, payload).await?;
    let head: Head = parse_json(&body)?;
    let (events, quality) = match head.resource_type.as_deref() {
        Some("Bundle") => {
            let raw: &RawValue = parse_json(&body)?;
            let read = tokens::events_of_bundle(&fm.spec, raw)
                .map_err(|message| ApiError::invalid("entry", message))?;
            let quality = json!({"dropped": read.dropped, "unreadable_entries": read.unreadable});
            (read.events, quality)
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "resourceType",
                format!("expected a FHIR Bundle or {{\"events\": [...]}}, got {other}"),
            ))
        }
        None => {
            let list: EventList = parse_json(&body)?;
            (list.events, json!({"dropped": {}, "unreadable_entries": 0}))
        }
    };
    let as_of = reference_time(query.as_of.as_deref(), head.timestamp.as_deref())?;
    let encoded = tokens::encode(&fm.vocab, &events, as_of);
    let Some((start, end)) = encoded.window else {
        return Err(ApiError::InsufficientData(format!(
            "no dated events at or before {}",
            stamp(as_of)
        )));
    };
    let tokens_used = encoded.ids.len();
    let embedding = fm
        .embed(encoded.ids, encoded.hours, Instant::now() + EMBED_DEADLINE)
        .await?;
    let m = &fm.manifest;
    Ok(HttpResponse::Ok().json(json!({
        "model": m.name,
        "version": m.version,
        "description": m.description,
        "training_data": m.training_data,
        "as_of": stamp(as_of),
        "window": {"start": stamp(start), "end": stamp(end)},
        "dimension": embedding.len(),
        "embedding": embedding,
        "tokens": tokens_used,
        "context": fm.vocab.context(),
        "events": {"read": encoded.events, "unknown_codes": encoded.unknown},
        "data_quality": quality,
    })))
}

async fn metadata(state: web::Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req).await?;
    let fm = model(&state)?;
    let tensor = |name: &str, datatype: &str, shape: Vec<i64>| TensorMetadata {
        name: name.into(),
        datatype: datatype.into(),
        shape,
    };
    Ok(HttpResponse::Ok().json(ModelMetadata {
        name: FOUNDATION.into(),
        versions: vec![fm.manifest.version.clone()],
        platform: "pytorch_torchscript".into(),
        inputs: vec![
            tensor("ids", "INT64", vec![1, -1]),
            tensor("hours", "FP32", vec![1, -1]),
        ],
        outputs: vec![tensor(
            "embedding",
            "FP32",
            vec![1, fm.manifest.embedding_dim as i64],
        )],
    }))
}

async fn ready(state: web::Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req).await?;
    Ok(if model(&state)?.is_alive() {
        HttpResponse::Ok().finish()
    } else {
        HttpResponse::ServiceUnavailable().finish()
    })
}

/// Input `name`'s length `n` (its shape must be `[1, n]`) and its values, flattened.
fn input(request: &InferRequest, name: &str) -> Result<Vec<f32>, ApiError> {
    let (i, found) = request
        .inputs
        .iter()
        .enumerate()
        .find(|(_, x)| x.name == name)
        .ok_or_else(|| ApiError::invalid("inputs", format!("input `{name}` is missing")))?;
    let n = match found.shape.as_slice() {
        [1, n] if *n >= 1 => *n as usize,
        _ => {
            return Err(ApiError::invalid(
                &format!("inputs[{i}].shape"),
                "must be [1, n] with n ≥ 1",
            ))
        }
    };
    let mut values = Vec::with_capacity(n.min(MAX_TOKENS));
    if n > MAX_TOKENS || !flatten_numbers(&found.data, &mut values) || values.len() != n {
        return Err(ApiError::invalid(
            name,
            format!("must hold the {n} finite numbers its shape declares"),
        ));
    }
    Ok(values)
}

async fn infer(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req).await?;
    let fm = model(&state)?;
    let body = crate::http::read_json_body(&req, payload, state.body_limits).await?;
    let request: InferRequest = parse_json(&body)?;
    let ids = input(&request, "ids")?;
    let hours = input(&request, "hours")?;
    if ids.len() != hours.len() || ids.len() > fm.vocab.context() {
        return Err(ApiError::invalid(
            "inputs",
            format!(
                "`ids` and `hours` must have the same length, at most {}",
                fm.vocab.context()
            ),
        ));
    }
    // Ids are small integers: exact in f32.
    let vocab = fm.vocab.len() as f32;
    if ids
        .iter()
        .any(|v| v.fract() != 0.0 || *v < 0.0 || *v >= vocab)
    {
        return Err(ApiError::invalid(
            "ids",
            format!("must hold token ids in [0, {})", fm.vocab.len()),
        ));
    }
    if hours.iter().any(|h| *h < 0.0 || *h > 1e6) {
        return Err(ApiError::invalid("hours", "must hold hours in [0, 1e6]"));
    }
    let embedding = fm
        .embed(
            ids.iter().map(|v| *v as i64).collect(),
            hours,
            Instant::now() + EMBED_DEADLINE,
        )
        .await?;
    Ok(HttpResponse::Ok().json(InferResponse {
        model_name: FOUNDATION.into(),
        model_version: Some(fm.manifest.version.clone()),
        id: request.id,
        outputs: vec![InferOutput {
            name: "embedding".into(),
            shape: vec![1, embedding.len() as i64],
            datatype: "FP32".into(),
            data: json!(embedding),
        }],
    }))
}
