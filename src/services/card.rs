//! Stage 5 of a call: the card a clinician reads, from the score, its explanation, the
//! bedside scores and the service's card text; or the card that says why the model did not
//! score.

use chrono::Duration as ChronoDuration;

use super::baselines;
use super::call::{Call, CallFacts, CdsService};
use super::suggestions;
use crate::cards::{self, Abstention, BaselineReport, RiskAssessment};
use crate::cds::wire::{Card, CdsResponse, Indicator};
use crate::features::explain;
use crate::features::{oxygen, FeatureMatrix};
use crate::fhir::fulfil::Supply;
use crate::fhir::ObservationView;

/// Contributing observations listed on a card.
const DRIVERS_SHOWN: usize = 4;

impl CdsService {
    /// The risk card for `call`, scored `risk`, shown at `indicator`, with its explanation
    /// (`contributions`, empty when none came in time) and guardrail `notes`.
    pub(super) fn card(
        &self,
        call: &Call<'_>,
        risk: f32,
        indicator: Indicator,
        contributions: &[(usize, f32)],
        notes: Vec<String>,
    ) -> Card {
        let Call {
            facts,
            supplies,
            gathered,
            prepared,
            drafts,
            ..
        } = *call;
        let request = facts.request;
        let spec = &self.model.features;
        let matrix = &prepared.matrix;
        let baselines = self.bedside_scores(facts, supplies, matrix, &gathered.observations);
        let resulted: Vec<String> = gathered
            .resulted
            .iter()
            .filter(|(_, t)| *t >= matrix.window_start)
            .map(|(c, _)| c.clone())
            .collect();
        let uuid = cards::card_uuid(&self.def.id, &facts.call_key, &self.model.manifest);
        let order = drafts.first();
        let suggestions = suggestions::build(
            &self.def.suggestions,
            &uuid,
            indicator,
            request,
            order,
            &resulted,
        );
        let extra_values = order
            .map(|o| vec![("drug", o.drug.clone())])
            .unwrap_or_default();
        cards::risk_card(
            &RiskAssessment {
                service_id: &self.def.id,
                hook_instance: &facts.call_key,
                manifest: &self.model.manifest,
                matrix,
                risk,
                indicator,
                baselines: &baselines,
                explanation: &explain::explain(spec, matrix, contributions, DRIVERS_SHOWN),
                rejected: prepared.rejected,
                public_base: &self.env.public_base,
                suggestions,
                extra_values,
                notes,
            },
            &self.def.card,
        )
    }

    /// The service's bedside scores (`baselines = [...]`) from the measurements in `matrix`.
    /// They describe the patient now: parameters older than the staleness limit count as not
    /// recorded rather than scoring an old value.
    fn bedside_scores(
        &self,
        facts: &CallFacts<'_>,
        supplies: &[Supply<'_>],
        matrix: &FeatureMatrix,
        observations: &[ObservationView<'_>],
    ) -> BaselineReport {
        let recent = facts.now
            - ChronoDuration::from_std(self.def.guardrails.max_staleness)
                .unwrap_or(ChronoDuration::MAX);
        baselines::compute(
            &self.def.baselines,
            &self.model.features,
            matrix,
            recent,
            self.spo2_scale(supplies),
            oxygen::on_oxygen(observations, recent.max(matrix.window_start), facts.now),
        )
    }

    /// The card that says why the model did not score (when the service asks for one), with
    /// the bedside scores from the same data, which still stand.
    pub(super) fn abstain(
        &self,
        facts: &CallFacts<'_>,
        supplies: &[Supply<'_>],
        reason: String,
        matrix: &FeatureMatrix,
        observations: &[ObservationView<'_>],
    ) -> CdsResponse {
        if !self.def.guardrails.abstain_card {
            return CdsResponse::default();
        }
        let baselines = self.bedside_scores(facts, supplies, matrix, observations);
        let card = cards::abstain_card(
            &Abstention {
                service_id: &self.def.id,
                hook_instance: &facts.call_key,
                manifest: &self.model.manifest,
                reason,
                window_start: matrix.window_start,
                window_end: matrix.window_end,
                public_base: &self.env.public_base,
                baselines: &baselines,
            },
            &self.def.card,
        );
        CdsResponse {
            cards: vec![checked(card)],
            system_actions: Vec::new(),
        }
    }
}

/// Last line of defence for the spec's card rules: a summary that grew too long (a long
/// abstention reason) is shortened rather than sent invalid; other problems are logged.
pub(super) fn checked(mut card: Card) -> Card {
    if card.summary.chars().count() >= 140 {
        card.summary = card.summary.chars().take(138).collect::<String>() + "…";
    }
    for problem in cards::validate::card_problems(&card) {
        tracing::error!(%problem, "card breaks a CDS Hooks rule");
    }
    card
}
