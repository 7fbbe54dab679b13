//! Mints a login token for the email given as the only argument and prints
//! just the token on stdout.
//!
//!     TOKENSERVICE_ADDR=localhost:50051 cargo run -q --example mint -- someone@example.com
//!
//! Every call has a deadline (the endpoint's default timeout). UNAVAILABLE is
//! retried with exponential backoff; every other error (INVALID_ARGUMENT,
//! NOT_FOUND, ...) is final and printed with its ErrorInfo reason.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokenservice_client::tonic::transport::Endpoint;
use tokenservice_client::tonic::Code;
use tokenservice_client::tonic_types::StatusExt;
use tokenservice_client::v1::token_service_client::TokenServiceClient;
use tokenservice_client::v1::MintTokenRequest;

const DEADLINE: Duration = Duration::from_secs(5);
const MAX_ATTEMPTS: u32 = 5;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(email), None) = (args.next(), args.next()) else {
        eprintln!("usage: mint EMAIL");
        return ExitCode::from(2);
    };
    let addr = std::env::var("TOKENSERVICE_ADDR").unwrap_or_else(|_| "localhost:50051".into());
    let uri = if addr.contains("://") {
        addr
    } else {
        format!("http://{addr}")
    };
    let endpoint = match Endpoint::from_shared(uri) {
        Ok(endpoint) => endpoint.timeout(DEADLINE).connect_timeout(DEADLINE),
        Err(error) => {
            eprintln!("bad TOKENSERVICE_ADDR: {error}");
            return ExitCode::from(2);
        }
    };
    // connect_lazy: a server that is down surfaces as UNAVAILABLE on the call.
    let mut client = TokenServiceClient::new(endpoint.connect_lazy());
    let request = MintTokenRequest {
        email,
        ..Default::default()
    };

    let mut backoff = Duration::from_millis(200);
    for attempt in 1..=MAX_ATTEMPTS {
        match client.mint_token(request.clone()).await {
            Ok(response) => {
                println!("{}", response.into_inner().token);
                return ExitCode::SUCCESS;
            }
            Err(status) if status.code() == Code::Unavailable && attempt < MAX_ATTEMPTS => {
                let sleep = backoff + jitter(backoff / 2);
                eprintln!(
                    "MintToken: UNAVAILABLE (attempt {attempt}/{MAX_ATTEMPTS}), retrying in {} ms",
                    sleep.as_millis()
                );
                tokio::time::sleep(sleep).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(status) => {
                // The server's google.rpc.Status (grpc-status-details-bin) carries an ErrorInfo.
                let reason = status
                    .get_details_error_info()
                    .map(|info| info.reason)
                    .unwrap_or_else(|| "none".into());
                eprintln!(
                    "MintToken failed: {:?} {} (reason {reason})",
                    status.code(),
                    status.message()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// A pseudo-random duration in [0, max], good enough to spread retries.
fn jitter(max: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    max.mul_f64(f64::from(nanos % 1000) / 1000.0)
}
