//! The one place where domain errors become gRPC statuses.
//!
//! Every status carries a `google.rpc.ErrorInfo` detail whose `reason` is an
//! `agentd.v1.ErrorReason` name (without its prefix) and whose domain is
//! [`ERROR_DOMAIN`], so clients can branch on a stable code instead of parsing
//! messages. Invalid input also carries a `google.rpc.BadRequest` listing each
//! field and what is wrong with it.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::Error;
use crate::pb::v1::ErrorReason;

/// The `domain` of every ErrorInfo detail agentd sends.
pub const ERROR_DOMAIN: &str = "agentd.dev";

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        let mut details = ErrorDetails::new();
        let mut metadata = HashMap::new();
        let (code, reason) = match err {
            Error::InvalidArgument(violations) => {
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                (Code::InvalidArgument, ErrorReason::InvalidField)
            }
            Error::NotFound { kind, name } => {
                metadata.insert("kind".to_owned(), kind.to_owned());
                metadata.insert("name".to_owned(), name);
                (Code::NotFound, ErrorReason::NotFound)
            }
            Error::AlreadyExists { kind, name } => {
                metadata.insert("kind".to_owned(), kind.to_owned());
                metadata.insert("name".to_owned(), name);
                (Code::AlreadyExists, ErrorReason::AlreadyExists)
            }
            Error::VersionConflict { expected, actual } => {
                metadata.insert("expected_version".to_owned(), expected.to_string());
                metadata.insert("actual_version".to_owned(), actual.to_string());
                (Code::Aborted, ErrorReason::VersionConflict)
            }
            Error::WrongState(_) => (Code::FailedPrecondition, ErrorReason::WrongState),
            Error::Malformed { field, description } => {
                details.add_bad_request_violation(field, description);
                (Code::InvalidArgument, ErrorReason::MalformedMessage)
            }
            Error::Overloaded(_) => (Code::ResourceExhausted, ErrorReason::Overloaded),
            Error::Unauthenticated(_) => (Code::Unauthenticated, ErrorReason::Unauthenticated),
            Error::PermissionDenied(_) => (Code::PermissionDenied, ErrorReason::PermissionDenied),
            Error::RateLimited { retry_after, .. } => {
                if let Some(delay) = retry_after {
                    details.set_retry_info(Some(delay));
                }
                (Code::ResourceExhausted, ErrorReason::RateLimited)
            }
            Error::BudgetExceeded(_) => (Code::ResourceExhausted, ErrorReason::BudgetExceeded),
            Error::StorageFull(_) => (Code::ResourceExhausted, ErrorReason::StorageFull),
            Error::MemoryLimit(_) => (Code::ResourceExhausted, ErrorReason::MemoryLimit),
            Error::StorageUnavailable(_) => (Code::Unavailable, ErrorReason::StorageUnavailable),
            Error::NotReady(_) => (Code::Unavailable, ErrorReason::NotReady),
            Error::Provider(_) => (Code::Unavailable, ErrorReason::ProviderError),
            Error::Timeout(_) => (Code::DeadlineExceeded, ErrorReason::Timeout),
            Error::WorkerFailed(_) => (Code::Aborted, ErrorReason::WorkerFailed),
            Error::LeaseLost(_) => (Code::Unavailable, ErrorReason::LeaseLost),
            Error::Superseded(_) => (Code::Aborted, ErrorReason::Superseded),
            Error::DependencyFailed(_) => (Code::FailedPrecondition, ErrorReason::DependencyFailed),
            Error::Internal(_) => (Code::Internal, ErrorReason::Internal),
        };
        details.set_error_info(reason_name(reason), ERROR_DOMAIN, metadata);
        Status::with_error_details(code, message, details)
    }
}

/// The same mapping for an error carried inside a stream message, for streams
/// that report one failed item without ending.
pub fn stream_error(err: Error) -> crate::pb::v1::StreamError {
    let status = Status::from(err);
    let details = status.get_error_details();
    crate::pb::v1::StreamError {
        code: status.code() as i32,
        message: status.message().to_owned(),
        reason: details
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_default(),
        field_violations: details
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| crate::pb::v1::FieldViolation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The ErrorInfo reason for `reason`: its proto name without `ERROR_REASON_`.
pub fn reason_name(reason: ErrorReason) -> &'static str {
    let full = reason.as_str_name();
    full.strip_prefix("ERROR_REASON_").unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FieldViolation;

    #[test]
    fn invalid_argument_carries_field_violations_and_reason() {
        let status = Status::from(Error::InvalidArgument(vec![FieldViolation::new(
            "inputs",
            "must hold 1 to 256 items, got 0",
        )]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("BadRequest detail");
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "inputs");
        assert_eq!(
            bad.field_violations[0].description,
            "must hold 1 to 256 items, got 0"
        );
        let info = details.error_info().expect("ErrorInfo detail");
        assert_eq!(info.reason, "INVALID_FIELD");
        assert_eq!(info.domain, ERROR_DOMAIN);
    }

    #[test]
    fn each_kind_maps_to_its_code() {
        let cases = [
            (
                Error::NotFound {
                    kind: "model",
                    name: "x".into(),
                },
                Code::NotFound,
                "NOT_FOUND",
            ),
            (
                Error::VersionConflict {
                    expected: 1,
                    actual: 2,
                },
                Code::Aborted,
                "VERSION_CONFLICT",
            ),
            (
                Error::Overloaded("queue full".into()),
                Code::ResourceExhausted,
                "OVERLOADED",
            ),
            (
                Error::NotReady("loading".into()),
                Code::Unavailable,
                "NOT_READY",
            ),
            (
                Error::StorageFull("disk full".into()),
                Code::ResourceExhausted,
                "STORAGE_FULL",
            ),
            (
                Error::MemoryLimit("index too large".into()),
                Code::ResourceExhausted,
                "MEMORY_LIMIT",
            ),
            (
                Error::StorageUnavailable("disk I/O error".into()),
                Code::Unavailable,
                "STORAGE_UNAVAILABLE",
            ),
            (
                Error::Malformed {
                    field: "collection".into(),
                    description: "invalid string value: data is not UTF-8 encoded".into(),
                },
                Code::InvalidArgument,
                "MALFORMED_MESSAGE",
            ),
            (
                Error::WrongState("running".into()),
                Code::FailedPrecondition,
                "WRONG_STATE",
            ),
        ];
        for (err, code, reason) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{status:?}");
            let info = status.get_error_details().error_info().cloned().unwrap();
            assert_eq!(info.reason, reason);
        }
    }
}
