//! The kubelet's error type.

/// Errors of the kubelet's own operations. Most are transient: the pod
/// worker logs them and retries on its next sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("API server: {0}")]
    Kube(#[from] kube::Error),
    /// The CRI runtime answered with an error status.
    #[error("CRI {op}: {status}")]
    Cri {
        op: &'static str,
        status: Box<tonic::Status>,
    },
    /// The CRI socket could not be reached.
    #[error("CRI connection to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    /// A pod's spec asks for something the kubelet cannot do (bad reference,
    /// missing ConfigMap key, ...). Shown in the container's waiting message.
    #[error("{0}")]
    Config(String),
    /// Local files (volumes, logs) could not be written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn cri(op: &'static str) -> impl FnOnce(tonic::Status) -> Error {
        move |status| Error::Cri {
            op,
            status: Box::new(status),
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// True when the API server answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 404)
    }

    /// True when the CRI answered NOT_FOUND.
    pub fn is_cri_not_found(&self) -> bool {
        matches!(self, Error::Cri { status, .. } if status.code() == tonic::Code::NotFound)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
