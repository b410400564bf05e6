//! Inference failures: at load (start-up refuses) and at request time (the service answers
//! without that model's card).

/// A model could not be loaded; bedside refuses to start rather than serve without it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid manifest `{path}`: {message}")]
    Manifest { path: String, message: String },
    #[error("model {name} {version}: sha256 mismatch for `{path}`: manifest says {expected}, file has {actual}")]
    Sha256Mismatch {
        name: String,
        version: String,
        path: String,
        expected: String,
        actual: String,
    },
    #[error("model {name} {version}: feature spec: {message}")]
    Features {
        name: String,
        version: String,
        message: String,
    },
    #[error("model {name} {version}: {message}")]
    Incompatible {
        name: String,
        version: String,
        message: String,
    },
    #[error("model {name} {version}: LibTorch failed to load or run it: {message}")]
    Torch {
        name: String,
        version: String,
        message: String,
    },
    #[error("model {name} {version}: remote backend: {message}")]
    Remote {
        name: String,
        version: String,
        message: String,
    },
    #[error("model {name} {version}: signature refused: {message}")]
    Signature {
        name: String,
        version: String,
        message: String,
    },
    #[error("model {name} {version} is configured twice")]
    Duplicate { name: String, version: String },
}

/// A scoring request that produced no score. Services branch on these, never on strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferenceError {
    #[error("deadline passed before the model ran")]
    DeadlineExceeded,
    #[error("model queue is full")]
    Overloaded,
    #[error("inference thread is gone")]
    WorkerGone,
    #[error("input has {got} values, the model takes {expected} per sample")]
    BadInput { expected: usize, got: usize },
    #[error("LibTorch error: {0}")]
    Torch(String),
    #[error("remote model: {0}")]
    Remote(String),
}
