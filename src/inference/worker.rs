//! One OS thread per model: owns the `CModule`, runs jobs from a bounded queue.

use std::path::PathBuf;
use std::thread;
use std::time::Instant;

use tch::{CModule, Device, Kind, Tensor};
use tokio::sync::{mpsc, oneshot};

use super::{InferenceError, LoadError};

struct Job {
    input: Vec<f32>,
    batch: usize,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<f32>, InferenceError>>,
}

/// The async side of a model's inference thread; cheap to clone.
#[derive(Clone)]
pub struct ModelHandle {
    tx: mpsc::Sender<Job>,
    per_sample: usize,
    device: Device,
}

/// What the worker thread needs to load and warm up a model.
pub(super) struct WorkerSpec {
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    pub device: Device,
    /// `[steps, channels]` of one sample.
    pub sample_shape: Vec<i64>,
    pub queue_capacity: usize,
}

impl ModelHandle {
    /// Starts the thread, loads the model on it, runs one warm-up forward pass, and returns
    /// once the model answered with the declared output shape (or failed to).
    pub(super) fn spawn(spec: WorkerSpec) -> Result<Self, LoadError> {
        let (tx, rx) = mpsc::channel::<Job>(spec.queue_capacity);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let per_sample = spec.sample_shape.iter().product::<i64>() as usize;
        let device = spec.device;
        let torch_error = {
            let (name, version) = (spec.name.clone(), spec.version.clone());
            move |message: String| LoadError::Torch {
                name: name.clone(),
                version: version.clone(),
                message,
            }
        };
        let thread_error = torch_error.clone();
        thread::Builder::new()
            .name(format!("infer-{}", spec.name))
            .spawn(move || {
                // Bound to a name: `let _ =` would drop the guard at once and re-enable autograd.
                let _no_grad = tch::no_grad_guard();
                let module = match load_and_warm_up(&spec) {
                    Ok(module) => {
                        let _ = ready_tx.send(Ok(()));
                        module
                    }
                    Err(message) => {
                        let _ = ready_tx.send(Err(message));
                        return;
                    }
                };
                serve(module, rx, &spec);
            })
            .map_err(|e| thread_error(format!("cannot start inference thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                tx,
                per_sample,
                device,
            }),
            Ok(Err(message)) => Err(torch_error(message)),
            Err(_) => Err(torch_error("inference thread exited during load".into())),
        }
    }

    /// Scores `batch` samples laid out contiguously in `input`. Returns one probability per
    /// sample. A full queue fails at once ([`InferenceError::Overloaded`]): the hook's
    /// deadline is already running, so waiting for room would only make the answer late.
    pub async fn score(
        &self,
        input: Vec<f32>,
        batch: usize,
        deadline: Instant,
    ) -> Result<Vec<f32>, InferenceError> {
        if batch == 0 || input.len() != batch * self.per_sample {
            return Err(InferenceError::BadInput {
                expected: self.per_sample,
                got: input.len() / batch.max(1),
            });
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job {
                input,
                batch,
                deadline,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => InferenceError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => InferenceError::WorkerGone,
            })?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(InferenceError::WorkerGone),
            Err(_) => Err(InferenceError::DeadlineExceeded),
        }
    }

    /// Whether the inference thread still takes jobs.
    pub fn is_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    /// The device the model runs on, e.g. `cpu` or `cuda:0`.
    pub fn device(&self) -> String {
        match self.device {
            Device::Cpu => "cpu".to_owned(),
            Device::Cuda(i) => format!("cuda:{i}"),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

fn load_and_warm_up(spec: &WorkerSpec) -> Result<CModule, String> {
    let mut module = CModule::load_on_device(&spec.path, spec.device).map_err(|e| e.to_string())?;
    module.set_eval();
    // Warm-up doubles as the input-spec check: a model whose forward does not take
    // [1, steps, channels] or does not return [1, 1] fails here, at start-up.
    let mut shape = vec![1i64];
    shape.extend(&spec.sample_shape);
    let x =
        Tensor::f_zeros(shape.as_slice(), (Kind::Float, spec.device)).map_err(|e| e.to_string())?;
    let y = module
        .forward_ts(&[x])
        .map_err(|e| format!("forward on the declared input shape {shape:?} failed: {e}"))?;
    if y.size() != [1, 1] {
        return Err(format!(
            "output shape {:?} for one sample; the manifest declares [1]",
            y.size()
        ));
    }
    Ok(module)
}

fn serve(module: CModule, mut rx: mpsc::Receiver<Job>, spec: &WorkerSpec) {
    while let Some(job) = rx.blocking_recv() {
        if Instant::now() >= job.deadline {
            let _ = job.reply.send(Err(InferenceError::DeadlineExceeded));
            continue;
        }
        let result = forward(&module, &job, spec);
        // The caller may have given up (deadline); nothing to do then.
        let _ = job.reply.send(result);
    }
}

fn forward(module: &CModule, job: &Job, spec: &WorkerSpec) -> Result<Vec<f32>, InferenceError> {
    let torch = |e: tch::TchError| InferenceError::Torch(e.to_string());
    let mut shape = vec![job.batch as i64];
    shape.extend(&spec.sample_shape);
    let x = Tensor::from_slice(&job.input)
        .f_reshape(shape.as_slice())
        .map_err(torch)?
        .f_to_device(spec.device)
        .map_err(torch)?;
    let y = module.forward_ts(&[x]).map_err(torch)?;
    let y = y
        .f_to_device(Device::Cpu)
        .map_err(torch)?
        .f_to_kind(Kind::Float)
        .map_err(torch)?
        .f_reshape([-1])
        .map_err(torch)?;
    let out = Vec::<f32>::try_from(&y).map_err(torch)?;
    if out.len() != job.batch {
        return Err(InferenceError::Torch(format!(
            "model returned {} values for {} samples",
            out.len(),
            job.batch
        )));
    }
    Ok(out)
}
