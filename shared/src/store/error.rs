//! The store layer's one error type. DynamoDB failures are sorted into what a caller can act
//! on: retry (throttling, 5xx, timeouts, transaction conflicts) or not (a rejected request, an
//! item that does not parse, a tampered cursor). Losing a condition is never an error here: it
//! is a typed outcome of the operation.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB {op} throttled: {message}")]
    Throttled { op: &'static str, message: String },
    #[error("DynamoDB {op} timed out")]
    Timeout { op: &'static str },
    #[error("DynamoDB {op} conflicted with a concurrent transaction: {message}")]
    TransactionConflict { op: &'static str, message: String },
    #[error("DynamoDB {op} could not be reached: {message}")]
    Unreachable { op: &'static str, message: String },
    #[error("DynamoDB {op} failed on the service side ({code}): {message}")]
    Service {
        op: &'static str,
        code: String,
        message: String,
    },
    #[error("DynamoDB refused {op} ({code}): {message}")]
    Rejected {
        op: &'static str,
        code: String,
        message: String,
    },
    /// An item that does not parse: reported, never panicked on.
    #[error("malformed {entity} item {key}: {reason}")]
    Malformed {
        entity: &'static str,
        key: String,
        reason: String,
    },
    #[error("invalid pagination cursor: {0}")]
    BadCursor(String),
    /// The caller asked for something the store will not write (e.g. duplicate skus).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// Items that contradict each other (e.g. an order whose product vanished).
    #[error("inconsistent data: {0}")]
    Inconsistent(String),
    #[error("table setup failed: {0}")]
    Setup(String),
}

impl StoreError {
    /// True when the same call may succeed if repeated later (DESIGN 3: 503 / WeChat retry).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Throttled { .. }
                | StoreError::Timeout { .. }
                | StoreError::TransactionConflict { .. }
                | StoreError::Unreachable { .. }
                | StoreError::Service { .. }
        )
    }

    pub(crate) fn malformed(
        entity: &'static str,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        StoreError::Malformed {
            entity,
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Error codes DynamoDB uses for "too fast, slow down".
const THROTTLING: &[&str] = &[
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "ThrottlingError",
    "LimitExceededException",
];

/// Codes of a cancelled transaction's reasons that mean "try again", not "you lost".
pub(crate) fn reason_is_transient(code: &str) -> bool {
    matches!(
        code,
        "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
    )
}

/// Sorts an SDK failure of operation `op` by what the caller can do about it.
pub(crate) fn from_sdk<E>(op: &'static str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::TimeoutError(_) => StoreError::Timeout { op },
        SdkError::DispatchFailure(f) => {
            if f.is_timeout() {
                StoreError::Timeout { op }
            } else {
                StoreError::Unreachable {
                    op,
                    message: match f.as_connector_error() {
                        Some(e) => DisplayErrorContext(e).to_string(),
                        None => "dispatch failure".to_owned(),
                    },
                }
            }
        }
        SdkError::ResponseError(r) => StoreError::Unreachable {
            op,
            message: format!("unreadable response (HTTP {})", r.raw().status().as_u16()),
        },
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let err = ctx.err();
            let code = err.code().unwrap_or("Unknown").to_owned();
            let message = err.message().unwrap_or_default().to_owned();
            classify(op, status, code, message)
        }
        other @ SdkError::ConstructionFailure(_) => StoreError::Rejected {
            op,
            code: "ConstructionFailure".into(),
            message: DisplayErrorContext(&other).to_string(),
        },
        other => StoreError::Unreachable {
            op,
            message: DisplayErrorContext(&other).to_string(),
        },
    }
}

fn classify(op: &'static str, status: u16, code: String, message: String) -> StoreError {
    if THROTTLING.contains(&code.as_str()) {
        StoreError::Throttled { op, message }
    } else if code == "TransactionConflictException"
        || code == "TransactionInProgressException"
        // A transactional read cancelled by a write in flight (TransactGetItems; a write's
        // own cancellation is read apart, with its reasons).
        || code == "TransactionCanceledException"
    {
        StoreError::TransactionConflict { op, message }
    } else if status >= 500
        || code == "InternalServerError"
        || code == "ServiceUnavailable"
        || code == "RequestTimeout"
    {
        StoreError::Service { op, code, message }
    } else {
        StoreError::Rejected { op, code, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_decides_retryability() {
        let c = |status, code: &str| classify("PutItem", status, code.into(), String::new());
        assert!(c(400, "ThrottlingException").retryable());
        assert!(c(400, "ProvisionedThroughputExceededException").retryable());
        assert!(c(400, "TransactionConflictException").retryable());
        assert!(c(500, "InternalServerError").retryable());
        assert!(c(503, "Whatever").retryable());
        assert!(!c(400, "ValidationException").retryable());
        assert!(!c(400, "ResourceNotFoundException").retryable());
        assert!(StoreError::Timeout { op: "GetItem" }.retryable());
        assert!(!StoreError::BadCursor("x".into()).retryable());
        assert!(!StoreError::malformed("order", "k", "r").retryable());
        assert!(reason_is_transient("TransactionConflict"));
        assert!(!reason_is_transient("ConditionalCheckFailed"));
    }
}
