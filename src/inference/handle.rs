//! What services hold to score with a model, wherever it runs: a local inference thread or a
//! remote Open Inference Protocol server (Triton, KServe, another bedside).

use std::sync::Arc;
use std::time::Instant;

use tch::Device;

use super::remote::RemoteModel;
use super::worker::{JobKind, LocalWorker};
use super::InferenceError;
use crate::metrics::{inc, ModelMetrics};

#[derive(Clone)]
enum Backend {
    Local(LocalWorker),
    Remote(Arc<RemoteModel>),
}

/// A model to score with; cheap to clone.
#[derive(Clone)]
pub struct ModelHandle {
    backend: Backend,
    per_sample: usize,
    /// The local module exports `attribute` (the manifest says so and warm-up checked it).
    attribute: bool,
    metrics: Arc<ModelMetrics>,
}

impl ModelHandle {
    pub(super) fn local(
        worker: LocalWorker,
        per_sample: usize,
        attribute: bool,
        metrics: Arc<ModelMetrics>,
    ) -> Self {
        Self {
            backend: Backend::Local(worker),
            per_sample,
            attribute,
            metrics,
        }
    }

    pub(super) fn remote(
        remote: RemoteModel,
        per_sample: usize,
        metrics: Arc<ModelMetrics>,
    ) -> Self {
        Self {
            backend: Backend::Remote(Arc::new(remote)),
            per_sample,
            attribute: false,
            metrics,
        }
    }

    /// Scores `samples` samples laid out contiguously in `input`; one probability per sample,
    /// or an error no later than `deadline`.
    pub async fn score(
        &self,
        input: Vec<f32>,
        samples: usize,
        deadline: Instant,
    ) -> Result<Vec<f32>, InferenceError> {
        if samples == 0 || input.len() != samples * self.per_sample {
            return Err(InferenceError::BadInput {
                expected: self.per_sample,
                got: input.len() / samples.max(1),
            });
        }
        let result = match &self.backend {
            Backend::Local(worker) => {
                Self::local_job(worker, JobKind::Score, input, samples, deadline).await
            }
            Backend::Remote(remote) => remote.score(input, samples, deadline, &self.metrics).await,
        };
        if matches!(result, Err(InferenceError::Overloaded)) {
            inc(&self.metrics.shed);
        }
        result
    }

    /// Whether [`Self::attribute`] is available: a local model whose manifest declares
    /// `explanation = "attribute"`. Others are explained by occlusion.
    pub fn can_attribute(&self) -> bool {
        self.attribute && matches!(self.backend, Backend::Local(_))
    }

    /// Each input cell's contribution to one sample's logit (`steps × channels`, row-major),
    /// in one pass of the model's `attribute` method; an error for models that cannot (see
    /// [`Self::can_attribute`]).
    pub async fn attribute(
        &self,
        input: Vec<f32>,
        deadline: Instant,
    ) -> Result<Vec<f32>, InferenceError> {
        if input.len() != self.per_sample {
            return Err(InferenceError::BadInput {
                expected: self.per_sample,
                got: input.len(),
            });
        }
        let Backend::Local(worker) = &self.backend else {
            return Err(InferenceError::Torch(
                "remote models are explained by occlusion".into(),
            ));
        };
        if !self.attribute {
            return Err(InferenceError::Torch(
                "this model does not export attribute()".into(),
            ));
        }
        let result = Self::local_job(worker, JobKind::Attribute, input, 1, deadline).await;
        if matches!(result, Err(InferenceError::Overloaded)) {
            inc(&self.metrics.shed);
        }
        let cells = result?;
        if cells.len() != self.per_sample {
            return Err(InferenceError::Torch(format!(
                "attribute returned {} values, expected {}",
                cells.len(),
                self.per_sample
            )));
        }
        Ok(cells)
    }

    async fn local_job(
        worker: &LocalWorker,
        kind: JobKind,
        input: Vec<f32>,
        samples: usize,
        deadline: Instant,
    ) -> Result<Vec<f32>, InferenceError> {
        let rx = worker.submit(kind, input, samples, deadline)?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(InferenceError::WorkerGone),
            Err(_) => Err(InferenceError::DeadlineExceeded),
        }
    }

    /// Whether the model can take jobs (its thread is alive; remote models are assumed up,
    /// their failures show per call).
    pub fn is_alive(&self) -> bool {
        match &self.backend {
            Backend::Local(worker) => worker.is_alive(),
            Backend::Remote(_) => true,
        }
    }

    /// Counters of this model.
    pub fn metrics(&self) -> &ModelMetrics {
        &self.metrics
    }

    /// Values per sample (`steps × channels`).
    pub fn per_sample(&self) -> usize {
        self.per_sample
    }

    /// Where the model runs: `cpu`, `cuda:0`, or `remote <url>`.
    pub fn device(&self) -> String {
        match &self.backend {
            Backend::Local(worker) => match worker.device() {
                Device::Cpu => "cpu".to_owned(),
                Device::Cuda(i) => format!("cuda:{i}"),
                other => format!("{other:?}").to_lowercase(),
            },
            Backend::Remote(remote) => format!("remote {}", remote.endpoint()),
        }
    }

    /// For remote models: checks at start-up that the server has the model with the declared
    /// input shape. Local models were checked by their warm-up pass.
    pub async fn check_remote(&self, sample_shape: &[usize]) -> Result<(), String> {
        match &self.backend {
            Backend::Local(_) => Ok(()),
            Backend::Remote(remote) => remote.check(sample_shape).await,
        }
    }
}
