//! One OS thread per local model: owns the `CModule`, batches jobs from a bounded queue.
//!
//! Dynamic batching as Triton does it: the first job of a batch waits up to `max_wait` for
//! more; jobs are added while the batch stays within `max_batch` samples; jobs whose deadline
//! passed while queued are answered `DeadlineExceeded` without being computed. One forward
//! pass serves every job in the batch; each gets its own slice of the output back.
//!
//! Attribution jobs (a shown card's explanation, for models whose manifest declares
//! `explanation = "attribute"`) batch only with each other: one `attribute` call over the batch
//! (the caller already has the risk), with autograd enabled for that call alone.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tch::{CModule, Device, Kind, Tensor};
use tokio::sync::oneshot;

use super::{InferenceError, LoadError};
use crate::metrics::ModelMetrics;

/// What a job asks of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JobKind {
    /// One probability per sample.
    Score,
    /// Per sample: `steps × channels` per-cell logit contributions.
    Attribute,
}

struct Job {
    kind: JobKind,
    input: Vec<f32>,
    samples: usize,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<f32>, InferenceError>>,
}

/// The async side of a model's inference thread; cheap to clone.
#[derive(Clone)]
pub(super) struct LocalWorker {
    tx: SyncSender<Job>,
    device: Device,
    alive: Arc<AtomicBool>,
}

/// What the worker thread needs to load, warm up and batch a model.
pub(super) struct WorkerSpec {
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    pub device: Device,
    /// `[steps, channels]` of one sample.
    pub sample_shape: Vec<i64>,
    pub queue_capacity: usize,
    /// Most samples per forward pass.
    pub max_batch: usize,
    pub max_wait: Duration,
    /// The module exports `attribute` (checked at warm-up).
    pub attribute: bool,
    /// A shadow version: its thread runs at the lowest scheduling priority, so it only gets
    /// CPU time the active models and the HTTP workers leave.
    pub background: bool,
    /// LibTorch intra-op threads for this thread's forward passes (0: LibTorch's default).
    /// OpenMP keeps the count per thread, so the process-wide setting made on the main thread
    /// does not reach this one: without it every inference thread starts its own pool of one
    /// thread per core, which spin-waits between the small forward passes.
    pub intra_op_threads: usize,
}

/// Marks the handle dead when the thread ends, however it ends (also the foundation model's).
pub(super) struct AliveGuard(pub(super) Arc<AtomicBool>);
impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl LocalWorker {
    /// Starts the thread, loads the model on it, runs one warm-up forward pass, and returns
    /// once the model answered with the declared output shape (or failed to).
    pub(super) fn spawn(spec: WorkerSpec, metrics: Arc<ModelMetrics>) -> Result<Self, LoadError> {
        let (tx, rx) = mpsc::sync_channel::<Job>(spec.queue_capacity);
        let (ready_tx, ready_rx) = mpsc::channel();
        let device = spec.device;
        let alive = Arc::new(AtomicBool::new(true));
        let torch_error = {
            let (name, version) = (spec.name.clone(), spec.version.clone());
            move |message: String| LoadError::Torch {
                name: name.clone(),
                version: version.clone(),
                message,
            }
        };
        let thread_error = torch_error.clone();
        let guard = AliveGuard(alive.clone());
        let thread_metrics = metrics.clone();
        thread::Builder::new()
            .name(format!("infer-{}", spec.name))
            .spawn(move || {
                let _alive = guard;
                if spec.background {
                    lower_this_threads_priority();
                }
                if let Ok(n) = i32::try_from(spec.intra_op_threads) {
                    if n > 0 {
                        tch::set_num_threads(n);
                    }
                }
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
                serve(&module, &rx, &spec, &thread_metrics);
            })
            .map_err(|e| thread_error(format!("cannot start inference thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { tx, device, alive }),
            Ok(Err(message)) => Err(torch_error(message)),
            Err(_) => Err(torch_error("inference thread exited during load".into())),
        }
    }

    /// Queues a job; the reply arrives on the returned receiver. A full queue fails at once
    /// ([`InferenceError::Overloaded`]): the hook's deadline is already running, so waiting
    /// for room would only make the answer late.
    pub(super) fn submit(
        &self,
        kind: JobKind,
        input: Vec<f32>,
        samples: usize,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Result<Vec<f32>, InferenceError>>, InferenceError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            kind,
            input,
            samples,
            deadline,
            reply,
        };
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => InferenceError::Overloaded,
            TrySendError::Disconnected(_) => InferenceError::WorkerGone,
        })?;
        Ok(rx)
    }

    /// Whether the inference thread still takes jobs.
    pub(super) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    pub(super) fn device(&self) -> Device {
        self.device
    }
}

/// Gives the calling thread the lowest CPU priority (nice 19). Linux schedules threads, not
/// processes, so this leaves the gateway's other threads as they are. Failing is harmless.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; setpriority on our own thread id only changes our
    // own scheduling weight.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, 19) != 0 {
            tracing::debug!("could not lower a shadow model thread's priority");
        }
    }
}

fn load_and_warm_up(spec: &WorkerSpec) -> Result<CModule, String> {
    let mut module = CModule::load_on_device(&spec.path, spec.device).map_err(|e| e.to_string())?;
    module.set_eval();
    // Warm-up doubles as the input-spec check: a model whose forward does not take
    // [n, steps, channels] or does not return [n, 1] fails here, at start-up. Two batch sizes,
    // so a model that only works for batch 1 is caught too, and the first CUDA/JIT call is
    // paid before the first clinician.
    for n in [1i64, 2] {
        let mut shape = vec![n];
        shape.extend(&spec.sample_shape);
        let x = Tensor::f_zeros(shape.as_slice(), (Kind::Float, spec.device))
            .map_err(|e| e.to_string())?;
        let y = module
            .forward_ts(&[x.shallow_clone()])
            .map_err(|e| format!("forward on the declared input shape {shape:?} failed: {e}"))?;
        if y.size() != [n, 1] {
            return Err(format!(
                "output shape {:?} for {n} sample(s); the manifest declares [1] per sample",
                y.size()
            ));
        }
        if spec.attribute {
            let a = tch::with_grad(|| module.method_ts("attribute", &[x.shallow_clone()]))
                .map_err(|e| {
                    format!("the manifest declares explanation = \"attribute\", but attribute() failed: {e}")
                })?;
            if a.size() != shape {
                return Err(format!(
                    "attribute() returned shape {:?} for input {shape:?}; it must match the input",
                    a.size()
                ));
            }
        }
    }
    Ok(module)
}

/// Collects the next batch: blocks for a first job, then gathers more for up to `max_wait`
/// while the batch stays within `max_batch` samples. A job that does not fit is carried over.
fn next_batch(
    rx: &mpsc::Receiver<Job>,
    carried: &mut Option<Job>,
    spec: &WorkerSpec,
) -> Option<Vec<Job>> {
    let first = match carried.take() {
        Some(job) => job,
        None => rx.recv().ok()?,
    };
    let mut samples = first.samples;
    let mut jobs = vec![first];
    let close_at = Instant::now() + spec.max_wait;
    while samples < spec.max_batch {
        let next = match rx.try_recv() {
            Ok(job) => Ok(job),
            Err(_) => {
                let now = Instant::now();
                if now >= close_at {
                    break;
                }
                rx.recv_timeout(close_at - now)
            }
        };
        match next {
            Ok(job) if job.kind == jobs[0].kind && samples + job.samples <= spec.max_batch => {
                samples += job.samples;
                jobs.push(job);
            }
            Ok(job) => {
                *carried = Some(job);
                break;
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(jobs)
}

fn serve(module: &CModule, rx: &mpsc::Receiver<Job>, spec: &WorkerSpec, metrics: &ModelMetrics) {
    let mut carried = None;
    while let Some(batch) = next_batch(rx, &mut carried, spec) {
        let now = Instant::now();
        let (live, expired): (Vec<Job>, Vec<Job>) =
            batch.into_iter().partition(|j| j.deadline > now);
        for job in expired {
            crate::metrics::inc(&metrics.expired);
            // The caller may have given up already; nothing to do then.
            let _ = job.reply.send(Err(InferenceError::DeadlineExceeded));
        }
        if live.is_empty() {
            continue;
        }
        let samples: usize = live.iter().map(|j| j.samples).sum();
        let started = Instant::now();
        let kind = live[0].kind;
        match run(module, kind, &live, samples, spec) {
            Ok(out) => {
                metrics.observe_batch(live.len(), samples, started.elapsed());
                let per_sample = out.len() / samples.max(1);
                let mut offset = 0;
                for job in live {
                    let len = job.samples * per_sample;
                    let part = out[offset..offset + len].to_vec();
                    offset += len;
                    let _ = job.reply.send(Ok(part));
                }
            }
            Err(e) => {
                for job in live {
                    crate::metrics::inc(&metrics.failed);
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One batch of one kind: probabilities, or per sample its per-cell attributions (the caller
/// already has the sample's risk: it is not computed again).
fn run(
    module: &CModule,
    kind: JobKind,
    jobs: &[Job],
    samples: usize,
    spec: &WorkerSpec,
) -> Result<Vec<f32>, InferenceError> {
    let torch = |e: tch::TchError| InferenceError::Torch(e.to_string());
    let mut shape = vec![samples as i64];
    shape.extend(&spec.sample_shape);
    let x = if let [only] = jobs {
        Tensor::from_slice(&only.input)
    } else {
        let mut all = Vec::with_capacity(jobs.iter().map(|j| j.input.len()).sum());
        for job in jobs {
            all.extend_from_slice(&job.input);
        }
        Tensor::from_slice(&all)
    };
    let x = x
        .f_reshape(shape.as_slice())
        .map_err(torch)?
        .f_to_device(spec.device)
        .map_err(torch)?;
    let y = match kind {
        JobKind::Score => module.forward_ts(&[x]).map_err(torch)?,
        JobKind::Attribute => {
            if !spec.attribute {
                return Err(InferenceError::Torch(
                    "this model does not export attribute()".into(),
                ));
            }
            tch::with_grad(|| module.method_ts("attribute", &[x])).map_err(torch)?
        }
    };
    let y = y
        .f_to_device(Device::Cpu)
        .map_err(torch)?
        .f_to_kind(Kind::Float)
        .map_err(torch)?;
    let y = y.f_reshape([-1]).map_err(torch)?;
    let out = Vec::<f32>::try_from(&y).map_err(torch)?;
    let per_sample = match kind {
        JobKind::Score => 1,
        JobKind::Attribute => spec.sample_shape.iter().product::<i64>() as usize,
    };
    if out.len() != samples * per_sample {
        return Err(InferenceError::Torch(format!(
            "model returned {} values for {samples} samples",
            out.len()
        )));
    }
    Ok(out)
}
