//! Stage 1 of a call: what the model reads. The prefetch the EHR sent, what it did not send
//! queried on `fhirServer` (through the egress policy, with the EHR's token or bedside's own),
//! projected into Observations; plus the unit and SpO2 scale the card and guardrails need.

use std::time::Instant;

use serde_json::value::RawValue;

use super::call::{CdsService, Gathered};
use super::definition::PrefetchSpec;
use super::ServiceError;
use crate::cds::wire::HookRequest;
use crate::cds::Caller;
use crate::features::news2::SpO2Scale;
use crate::features::terminology::{terminology, Terminology};
use crate::fhir::fulfil::{self, Supply, Want};
use crate::fhir::projection;
use crate::store::QuasiIdentifiers;

impl CdsService {
    /// The service's prefetch keys as wants: each rendered for this request, and queried on
    /// `fhirServer` when missing if it feeds the model or is required.
    pub(super) fn wants<'r>(&'r self, request: &'r HookRequest<'_>) -> Vec<Want<'r>> {
        self.def
            .prefetch
            .iter()
            .map(|p| Want {
                key: &p.key,
                query: p
                    .template
                    .render(&request.context)
                    .map_err(|e| e.to_string()),
                prefetched: request
                    .prefetch
                    .as_ref()
                    .and_then(|m| m.get(&p.key))
                    .copied(),
                // Optional context (labs, conditions) is used when the EHR prefetched it, not
                // fetched: it must not add a query to every call.
                fetch_if_missing: p.required || self.def.inputs.contains(&p.key),
            })
            .collect()
    }

    /// Fulfils the prefetch: what the EHR sent is used, what it did not send (or answered
    /// with an OperationOutcome) is queried on `fhirServer` in parallel, within the deadline
    /// less the scoring reserve. Refused servers are never contacted.
    pub(super) async fn fulfil<'r>(
        &self,
        request: &'r HookRequest<'_>,
        wants: &[Want<'r>],
        client: Option<&Caller>,
        deadline: Instant,
    ) -> Vec<Supply<'r>> {
        let token = request
            .fhir_authorization
            .as_ref()
            .filter(|a| a.token_type.eq_ignore_ascii_case("bearer"))
            .map(|a| a.access_token.as_str());
        let fetch_deadline = deadline
            .checked_sub(self.env.fhir.scoring_reserve)
            .unwrap_or(deadline);
        let caller = (
            client.map(|c| c.iss.as_str()),
            client.and_then(|c| c.tenant.as_deref()),
        );
        // The server is looked at (and the egress policy asked) only when data must be fetched.
        let server = match request.fhir_server.as_deref() {
            _ if !fulfil::needs_server(wants) => Err("no query needed".to_owned()),
            None => Err("the request has no fhirServer to query".to_owned()),
            Some(base) => self
                .env
                .fhir
                .client
                .server(base, caller, token, fetch_deadline)
                .map_err(|e| {
                    tracing::warn!(error = %e.log_summary(), "fhirServer refused, not contacted");
                    format!("fhirServer {e}")
                }),
        };
        // No token from the EHR: bedside's own (SMART Backend Services), asked for only after
        // the caller's egress check passed, and only where this caller is granted it.
        let server = match server {
            Ok(s) if token.is_none() => {
                let token = match self.env.backend.as_deref() {
                    Some(source) => source.token_for(&s, caller, fetch_deadline).await,
                    None => None,
                };
                match token {
                    Some(own) => Ok(s.with_token(own)),
                    None => Ok(s),
                }
            }
            other => other,
        };
        fulfil::fulfil(wants, server.as_ref().map_err(String::as_str)).await
    }

    /// Projects every supplied input into Observations (one pass each). A required key
    /// without data fails with 412 (spec: "Prefetch Template"), naming the key and why.
    pub(super) fn gather<'s>(
        &self,
        wants: &[Want<'_>],
        supplies: &'s [Supply<'s>],
    ) -> Result<Gathered<'s>, ServiceError> {
        let mut observations = Vec::new();
        let mut unreadable = 0;
        let mut resulted = Vec::new();
        for (p, (want, supply)) in self.def.prefetch.iter().zip(wants.iter().zip(supplies)) {
            let is_input = self.def.inputs.contains(&p.key);
            let (pages, fetched): (Vec<&RawValue>, bool) = match supply {
                Supply::Prefetched(v) => (vec![*v], false),
                Supply::Fetched(f) => (f.pages.iter().map(|b| &**b).collect(), true),
                Supply::NoData => (Vec::new(), false),
                Supply::Missing(why) if p.required => return Err(missing(p, want, why.clone())),
                Supply::Missing(why) => {
                    tracing::info!(key = %p.key, reason = %why, "optional prefetch unavailable");
                    (Vec::new(), false)
                }
                Supply::Failed(e) => {
                    tracing::warn!(key = %p.key, error = %e.log_summary(), "FHIR query failed");
                    if p.required {
                        return Err(missing(p, want, format!("querying fhirServer failed: {e}")));
                    }
                    (Vec::new(), false)
                }
            };
            for page in pages {
                // Non-input keys are read only for which results are in (suggestion rules);
                // something that is not Observations there is simply not such a result.
                if !is_input {
                    if let Ok(projected) = projection::observations(page) {
                        resulted.extend(
                            projected
                                .observations
                                .iter()
                                .flat_map(projection::resulted_codes),
                        );
                    }
                    continue;
                }
                match projection::observations(page) {
                    Ok(projected) => {
                        unreadable += projected.unreadable;
                        resulted.extend(
                            projected
                                .observations
                                .iter()
                                .flat_map(projection::resulted_codes),
                        );
                        observations.extend(projected.observations);
                    }
                    Err(e) if fetched => {
                        return Err(missing(
                            p,
                            want,
                            format!("fhirServer returned unusable data: {e}"),
                        ))
                    }
                    Err(e) => {
                        return Err(ServiceError::InvalidPrefetch {
                            key: p.key.clone(),
                            reason: e.to_string(),
                        })
                    }
                }
            }
        }
        Ok(Gathered {
            observations,
            unreadable,
            resulted,
        })
    }

    /// The unit the alert budget counts against: the Encounter's location, if prefetched.
    pub(super) fn unit(&self, supplies: &[Supply<'_>]) -> Option<String> {
        let key = self.def.alerts.unit_from.as_ref()?;
        let (_, supply) = self
            .def
            .prefetch
            .iter()
            .zip(supplies)
            .find(|(p, _)| &p.key == key)?;
        let raw: &RawValue = match supply {
            Supply::Prefetched(v) => v,
            Supply::Fetched(f) => f.pages.first()?,
            _ => return None,
        };
        projection::encounter_location(raw)
    }

    /// The patient's generalised quasi-identifiers, from the prefetch that reads the Patient
    /// (`Patient/{{context.patientId}}`; services that keep model inputs only). Observation
    /// Bundles are never parsed for it.
    pub(super) fn quasi_identifiers(
        &self,
        supplies: &[Supply<'_>],
        now: chrono::DateTime<chrono::Utc>,
    ) -> QuasiIdentifiers {
        self.def
            .prefetch
            .iter()
            .zip(supplies)
            .filter(|(p, _)| p.template.as_str().starts_with("Patient/"))
            .filter_map(|(_, supply)| match supply {
                Supply::Prefetched(v) => Some(*v),
                Supply::Fetched(f) => f.pages.first().map(|p| &**p),
                _ => None,
            })
            .find_map(projection::patient_demographics)
            .map(|d| {
                QuasiIdentifiers::generalise(
                    d.birth_date.as_deref(),
                    d.gender.as_deref(),
                    d.postal_code.as_deref(),
                    now,
                )
            })
            .unwrap_or_default()
    }

    /// SpO2 scale 2 when the conditions prefetch holds an active hypercapnic respiratory failure
    /// (the codes are the service's `[news2] scale2_conditions` and `[spo2_scale2]` of
    /// `models/terminology.toml`), else scale 1.
    pub(super) fn spo2_scale(&self, supplies: &[Supply<'_>]) -> SpO2Scale {
        let opts = &self.def.news2;
        let Some(key) = &opts.conditions_prefetch else {
            return SpO2Scale::Scale1;
        };
        // The service's own codes (any system), then the terminology's (system-scoped), each
        // compared without the dot: "J96.12" = "J9612".
        let matches = |system: Option<&str>, code: &str| {
            Terminology::same_condition(code, &opts.scale2_conditions)
                || terminology().is_scale2_condition(system, code)
        };
        let found = self
            .def
            .prefetch
            .iter()
            .zip(supplies)
            .filter(|(p, _)| &p.key == key)
            .any(|(_, supply)| match supply {
                Supply::Prefetched(v) => projection::has_active_condition(v, matches),
                Supply::Fetched(f) => f
                    .pages
                    .iter()
                    .any(|page| projection::has_active_condition(page, matches)),
                _ => false,
            });
        if found {
            tracing::debug!("NEWS2 on SpO2 scale 2");
            SpO2Scale::Scale2
        } else {
            SpO2Scale::Scale1
        }
    }
}

fn missing(p: &PrefetchSpec, want: &Want<'_>, why: String) -> ServiceError {
    ServiceError::PrefetchMissing {
        key: p.key.clone(),
        query: want
            .query
            .clone()
            .unwrap_or_else(|_| p.template.as_str().to_owned()),
        why,
    }
}
