//! Error classification shared by every crate: each error is either worth retrying
//! (the same call may succeed later) or permanent (it never will).

/// Whether an error can go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, timeouts, an unreachable service: retry, then report the record as failed
    /// so the event-source mapping redelivers it.
    Retryable,
    /// Bad input or bad configuration: retrying the same call cannot help.
    Permanent,
}

/// Implemented by every error type in the workspace.
pub trait Classify {
    fn class(&self) -> ErrorClass;

    fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }
}

/// The error a port (adapter trait) reports to the pipeline: a class and a message that
/// never contains payload text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PortError {
    pub class: ErrorClass,
    pub message: String,
    /// The call may have taken effect although it reported an error (a timeout, a dropped
    /// connection): the caller must not assume it did not happen.
    pub ambiguous: bool,
}

impl PortError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Retryable,
            message: message.into(),
            ambiguous: false,
        }
    }

    /// A retryable error after which the call's effect is unknown.
    pub fn ambiguous(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Retryable,
            message: message.into(),
            ambiguous: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Permanent,
            message: message.into(),
            ambiguous: false,
        }
    }
}

impl Classify for PortError {
    fn class(&self) -> ErrorClass {
        self.class
    }
}
