//! A model served elsewhere over the Open Inference Protocol (KServe v2): Triton, KServe, or
//! another bedside. Same manifest, same features; only the forward pass is remote.
//!
//! Every call is bounded by the hook's deadline and the manifest's `timeout`, whichever ends
//! first; at most `queue_capacity` calls are in flight (more are shed at once). A 5xx, a
//! timeout, or a response whose tensor is not `[samples, 1]` finite numbers is an error: the
//! service answers without this model's card.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;

use super::oip::{flatten_numbers, InferRequest, InferResponse, ModelMetadata, INPUT_NAME};
use super::InferenceError;
use crate::metrics::{inc, ModelMetrics};

/// Largest response accepted (bytes).
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// An OIP endpoint for one model version.
pub struct RemoteModel {
    http: reqwest::Client,
    /// `{base}/v2/models/{name}[/versions/{version}]`.
    model_url: String,
    bearer: Option<String>,
    timeout: Duration,
    in_flight: Semaphore,
    sample_shape: Vec<i64>,
}

impl RemoteModel {
    /// `base` is the server root (`http://triton:8000`).
    pub fn new(
        base: &str,
        name: &str,
        version: Option<&str>,
        bearer: Option<String>,
        timeout: Duration,
        max_in_flight: usize,
        sample_shape: Vec<i64>,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy() // connect directly, as every outbound client of the gateway does
            .connect_timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let mut model_url = format!("{}/v2/models/{name}", base.trim_end_matches('/'));
        if let Some(v) = version {
            model_url.push_str(&format!("/versions/{v}"));
        }
        Ok(Self {
            http,
            model_url,
            bearer,
            timeout,
            in_flight: Semaphore::new(max_in_flight),
            sample_shape,
        })
    }

    /// The model URL, for logs and `bedside check`.
    pub fn endpoint(&self) -> &str {
        &self.model_url
    }

    fn request(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.bearer {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Model metadata must list one input whose shape is `[-1, steps, channels]`.
    pub async fn check(&self, sample_shape: &[usize]) -> Result<(), String> {
        let response = self
            .request(self.http.get(&self.model_url))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.model_url))?;
        if !response.status().is_success() {
            return Err(format!("{}: HTTP {}", self.model_url, response.status()));
        }
        let meta: ModelMetadata = response
            .json()
            .await
            .map_err(|e| format!("{}: not OIP model metadata: {e}", self.model_url))?;
        let want: Vec<i64> = std::iter::once(-1)
            .chain(sample_shape.iter().map(|&d| d as i64))
            .collect();
        match meta.inputs.as_slice() {
            [input] if input.shape == want => Ok(()),
            _ => Err(format!(
                "{}: remote inputs {:?} do not match the manifest's {want:?}",
                self.model_url,
                meta.inputs.iter().map(|i| &i.shape).collect::<Vec<_>>()
            )),
        }
    }

    /// One inference call for `samples` samples.
    pub async fn score(
        &self,
        input: Vec<f32>,
        samples: usize,
        deadline: Instant,
        metrics: &ModelMetrics,
    ) -> Result<Vec<f32>, InferenceError> {
        let _permit = self
            .in_flight
            .try_acquire()
            .map_err(|_| InferenceError::Overloaded)?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            inc(&metrics.expired);
            return Err(InferenceError::DeadlineExceeded);
        }
        let started = Instant::now();
        let mut shape = vec![samples as i64];
        shape.extend(&self.sample_shape);
        let body = InferRequest {
            id: None,
            parameters: None,
            inputs: vec![super::oip::InferInput {
                name: INPUT_NAME.into(),
                shape,
                datatype: "FP32".into(),
                parameters: None,
                data: json!(input),
            }],
            outputs: None,
        };
        let limit = remaining.min(self.timeout);
        let call = async {
            let mut response = self
                .request(self.http.post(format!("{}/infer", self.model_url)))
                .json(&body)
                .send()
                .await
                .map_err(|e| InferenceError::Remote(format!("request failed: {e}")))?;
            if !response.status().is_success() {
                return Err(InferenceError::Remote(format!(
                    "HTTP {}",
                    response.status()
                )));
            }
            let mut bytes = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| InferenceError::Remote(format!("body: {e}")))?
            {
                if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(InferenceError::Remote("response too large".into()));
                }
                bytes.extend_from_slice(&chunk);
            }
            parse_scores(&bytes, samples)
        };
        let result = match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) if limit == remaining => Err(InferenceError::DeadlineExceeded),
            Err(_) => Err(InferenceError::Remote(format!(
                "no answer within {limit:?}"
            ))),
        };
        match &result {
            Ok(_) => metrics.observe_batch(1, samples, started.elapsed()),
            Err(InferenceError::DeadlineExceeded) => inc(&metrics.expired),
            Err(_) => inc(&metrics.failed),
        }
        result
    }
}

/// The first output must hold `samples` finite probabilities.
fn parse_scores(bytes: &[u8], samples: usize) -> Result<Vec<f32>, InferenceError> {
    let response: InferResponse = serde_json::from_slice(bytes)
        .map_err(|e| InferenceError::Remote(format!("not an OIP inference response: {e}")))?;
    let output = response
        .outputs
        .first()
        .ok_or_else(|| InferenceError::Remote("response has no outputs".into()))?;
    let mut values = Vec::with_capacity(samples);
    if !flatten_numbers(&output.data, &mut values) || values.len() != samples {
        return Err(InferenceError::Remote(format!(
            "output tensor is not {samples} finite numbers"
        )));
    }
    if values.iter().any(|v| !(0.0..=1.0).contains(v)) {
        return Err(InferenceError::Remote("output is not a probability".into()));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_tensors_are_errors() {
        let ok = br#"{"model_name":"m","outputs":[{"name":"OUTPUT__0","shape":[2,1],"datatype":"FP32","data":[0.1,0.9]}]}"#;
        assert_eq!(parse_scores(ok, 2).unwrap(), vec![0.1, 0.9]);
        assert!(parse_scores(ok, 3).is_err());
        for bad in [
            &br#"{"model_name":"m","outputs":[]}"#[..],
            br#"{"model_name":"m","outputs":[{"name":"o","shape":[1,1],"datatype":"FP32","data":["x"]}]}"#,
            br#"{"model_name":"m","outputs":[{"name":"o","shape":[1,1],"datatype":"FP32","data":[7.5]}]}"#,
            b"<html>502</html>",
        ] {
            assert!(parse_scores(bad, 1).is_err());
        }
    }
}
