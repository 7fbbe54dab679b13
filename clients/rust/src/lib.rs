//! Generated gRPC client for `tokenservice.v1.TokenService`, which mints
//! Kustomer chat login tokens (HS256 JWTs).
//!
//! The code under `src/gen/` is written by `clients/generate` (buf with
//! protoc-gen-prost, protoc-gen-tonic and protoc-gen-prost-crate); do not
//! edit it. `google.rpc.Status` is [`tonic_types::pb::Status`], so the
//! error of a failed `MintTokens` entry and the details of a failed call
//! decode with the same `tonic_types` helpers. [`auth`] has TLS/mTLS from
//! PEM files and an interceptor that sends an API key; [`reason`] reads an
//! error's reason as an [`ErrorReason`], the proto's enum of every reason.
//!
//! ```no_run
//! use std::time::Duration;
//! use tokenservice_client::v1::{token_service_client::TokenServiceClient, MintTokenRequest};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = tokenservice_client::tonic::transport::Endpoint::from_static("http://localhost:50051")
//!     .timeout(Duration::from_secs(5)) // default deadline of every call
//!     .connect()
//!     .await?;
//! let mut client = TokenServiceClient::new(channel);
//! let request = MintTokenRequest { email: "someone@example.com".into(), ..Default::default() };
//! let token = client.mint_token(request).await?.into_inner().token;
//! # Ok(()) }
//! ```

#[allow(clippy::all, missing_docs, rustdoc::all)]
#[rustfmt::skip]
mod gen;

pub mod auth;
pub mod reason;

/// The `tokenservice.v1` package: messages, the `Identity` enum,
/// `token_service_client::TokenServiceClient` and
/// `token_service_server` (for tests and fakes).
pub use gen::tokenservice::v1;

/// Every reason the service sends (`tokenservice.v1.ErrorReason`), to branch
/// on with [`reason::ErrorReasonExt`].
pub use gen::tokenservice::v1::ErrorReason;

/// Re-exported so that callers use the exact versions the generated code
/// was built against.
pub use {prost, prost_types, tonic, tonic_types};
