//! The reason of a TokenService error as an [`ErrorReason`], the proto's
//! enum of every reason, to branch on:
//!
//! ```no_run
//! use tokenservice_client::reason::ErrorReasonExt;
//! use tokenservice_client::ErrorReason;
//!
//! # fn handle(status: tokenservice_client::tonic::Status) {
//! match status.error_reason() {
//!     ErrorReason::EmailInvalid => { /* ask for another email; never retry */ }
//!     ErrorReason::SecretUnavailable | ErrorReason::ShuttingDown => { /* retry with backoff */ }
//!     _ => { /* Unspecified: no ErrorInfo (e.g. a deadline) or a newer reason: act on status.code() */ }
//! }
//! # }
//! ```
//!
//! The server puts a `google.rpc.Status` in the `grpc-status-details-bin`
//! trailer whose details hold one `google.rpc.ErrorInfo` with domain
//! [`ERROR_DOMAIN`]; its `reason` is the name of an [`ErrorReason`] value
//! ([`ErrorReason::as_str_name`]).

use tonic_types::{pb, ErrorInfo, RpcStatusExt, StatusExt};

use crate::v1::ErrorReason;

/// The domain of every ErrorInfo the service returns.
pub const ERROR_DOMAIN: &str = "tokenservice.v1";

/// The [`ErrorReason`] of a failed call ([`tonic::Status`]) or of a failed
/// `MintTokens` entry ([`pb::Status`]): [`ErrorReason::Unspecified`] when it
/// carries no ErrorInfo of domain [`ERROR_DOMAIN`] (for example a deadline
/// exceeded on the client side) or a reason newer than this client.
pub trait ErrorReasonExt {
    /// See the trait.
    fn error_reason(&self) -> ErrorReason;
}

impl ErrorReasonExt for tonic::Status {
    fn error_reason(&self) -> ErrorReason {
        reason_in(StatusExt::get_details_error_info(self))
    }
}

impl ErrorReasonExt for pb::Status {
    fn error_reason(&self) -> ErrorReason {
        reason_in(RpcStatusExt::get_details_error_info(self))
    }
}

/// The [`ErrorReason`] named `name`, as sent in `ErrorInfo.reason` or
/// `VerifyTokenResponse.reason`; [`ErrorReason::Unspecified`] for "" or a
/// name this client does not know.
pub fn parse_reason(name: &str) -> ErrorReason {
    ErrorReason::from_str_name(name).unwrap_or(ErrorReason::Unspecified)
}

fn reason_in(info: Option<ErrorInfo>) -> ErrorReason {
    match info {
        Some(info) if info.domain == ERROR_DOMAIN => parse_reason(&info.reason),
        _ => ErrorReason::Unspecified,
    }
}
