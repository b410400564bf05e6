//! Stage 4 of a call: the prediction record. Every outcome is written, with what the model
//! saw (the Observations and a hash of the input tensor), so a card can be explained later.

use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use super::call::{CallFacts, CdsService, Entry};
use super::scoring::Prepared;
use crate::cards;
use crate::features::FeatureMatrix;
use crate::inference::LoadedModel;
use crate::metrics::inc;
use crate::store::{Mode, ModelInput, Outcome, PredictionRecord};

impl CdsService {
    /// The record of one outcome of this call, as [`Self::record`] writes it.
    pub(super) fn prediction_record(
        &self,
        facts: &CallFacts<'_>,
        model: &LoadedModel,
        entry: Entry<'_>,
        prepared: Option<&Prepared>,
    ) -> PredictionRecord {
        let refs = prepared.map(input_refs).unwrap_or_default();
        self.prediction_record_with(facts, model, entry, prepared, refs)
    }

    /// [`Self::prediction_record`] with the tensor's FHIR references already built (the dedup
    /// decision builds them first).
    fn prediction_record_with(
        &self,
        facts: &CallFacts<'_>,
        model: &LoadedModel,
        entry: Entry<'_>,
        prepared: Option<&Prepared>,
        input_refs: Vec<String>,
    ) -> PredictionRecord {
        let Entry {
            outcome,
            risk,
            indicator,
            reason,
        } = entry;
        let m = &model.manifest;
        PredictionRecord {
            id: cards::card_uuid(&self.def.id, &facts.call_key, m),
            at: facts.now,
            service_id: self.def.id.clone(),
            hook: self.def.hook.clone(),
            hook_instance: facts.request.hook_instance.clone(),
            model: m.name.clone(),
            model_version: m.version.clone(),
            mode: if outcome == Outcome::Shadow {
                Mode::Shadow
            } else {
                Mode::Active
            },
            scope: facts.scope.clone(),
            patient_id: facts.patient_id.map(str::to_owned),
            patient_hash: None,
            unit: Some(facts.unit.clone()),
            risk: risk.map(f64::from),
            indicator: indicator.map(str::to_owned),
            outcome,
            reason: reason.map(str::to_owned),
            input_refs,
            tensor_sha256: prepared.map(|p| tensor_hash(&p.matrix)),
            data_quality: prepared.map(|p| p.quality.clone()),
            latency_ms: facts.started.elapsed().as_secs_f64() * 1e3,
            // Inputs are kept on the feature grid (the learning export's rows); a token
            // model's input is identified by its tensor hash and its input references.
            inputs: prepared
                .filter(|_| self.def.learning.store_inputs && model.vocab.is_none())
                .map(|p| model_input(model, &p.matrix, facts)),
        }
    }

    /// Writes one prediction record; a failure is logged and counted, the answer still goes.
    pub(super) async fn record(
        &self,
        facts: &CallFacts<'_>,
        model: &LoadedModel,
        entry: Entry<'_>,
        prepared: Option<&Prepared>,
    ) {
        let refs = prepared.map(input_refs).unwrap_or_default();
        self.record_with_refs(facts, model, entry, prepared, refs)
            .await
    }

    /// [`Self::record`] with the references already built.
    pub(super) async fn record_with_refs(
        &self,
        facts: &CallFacts<'_>,
        model: &LoadedModel,
        entry: Entry<'_>,
        prepared: Option<&Prepared>,
        refs: Vec<String>,
    ) {
        let record = self.prediction_record_with(facts, model, entry, prepared, refs);
        let span = tracing::info_span!("record", outcome = record.outcome.as_str());
        if let Err(e) = self
            .env
            .store
            .record_prediction(&record)
            .instrument(span)
            .await
        {
            inc(&self.metrics.record_failed);
            tracing::error!(error = %e, "prediction not recorded");
        }
    }
}

/// The FHIR references of every measurement the tensor holds.
pub(super) fn input_refs(prepared: &Prepared) -> Vec<String> {
    let mut refs: Vec<String> = prepared
        .matrix
        .measurements
        .iter()
        .map(|m| format!("Observation/{}", m.resource_id))
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

/// The model input as kept for learning: the matrix on its grid, the patient generalised.
fn model_input(
    model: &LoadedModel,
    matrix: &FeatureMatrix,
    facts: &CallFacts<'_>,
) -> Box<ModelInput> {
    let spec = &model.features;
    Box::new(ModelInput {
        window_start: matrix.window_start,
        step_seconds: i64::try_from(spec.step.as_secs()).unwrap_or(i64::MAX),
        features: spec.features.iter().map(|f| f.name.clone()).collect(),
        matrix: matrix.values.clone(),
        quasi: facts.quasi.clone(),
    })
}

/// sha256 of the input tensor's bytes: says later exactly what the model saw.
fn tensor_hash(matrix: &FeatureMatrix) -> String {
    let mut h = Sha256::new();
    for v in &matrix.values {
        h.update(v.to_le_bytes());
    }
    hex::encode(h.finalize())
}
