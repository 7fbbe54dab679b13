//! Mints a login token for the email given as the only argument and prints
//! just the token on stdout.
//!
//!     TOKENSERVICE_ADDR=localhost:50051 cargo run -q --example mint -- someone@example.com
//!
//! Every call has a deadline (the endpoint's default timeout). UNAVAILABLE is
//! retried with exponential backoff; every other error (INVALID_ARGUMENT,
//! NOT_FOUND, UNAUTHENTICATED, ...) is final and printed with its ErrorInfo
//! reason.
//!
//! TLS and the API key come from the environment (the same variables in
//! every language's example):
//!
//!     TOKENSERVICE_CA_FILE          PEM CA bundle that verifies the server (turns TLS on)
//!     TOKENSERVICE_CERT_FILE        PEM client certificate for mTLS (with TOKENSERVICE_KEY_FILE;
//!     TOKENSERVICE_KEY_FILE         PEM client key                    both turn TLS on)
//!     TOKENSERVICE_TLS_SERVER_NAME  name to check in the server's certificate (turns TLS on)
//!     TOKENSERVICE_API_KEY          sent as `authorization: Bearer <key>`; needs TLS
//!
//! With none of the TLS variables set the connection is plaintext; with TLS
//! on and no CA file the system's roots verify the server. A bad setting or
//! an unreadable file exits with status 2.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokenservice_client::auth::{ApiKey, TlsFile, TlsFiles};
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
    let (endpoint, api_key) = match endpoint_from_env() {
        Ok(configured) => configured,
        Err(message) => {
            eprintln!("mint: {message}");
            return ExitCode::from(2);
        }
    };
    // connect_lazy: a server that is down surfaces as UNAVAILABLE on the call.
    let mut client = TokenServiceClient::with_interceptor(endpoint.connect_lazy(), api_key);
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
                    "MintToken: UNAVAILABLE (attempt {attempt}/{MAX_ATTEMPTS}), retrying in {} ms: {}",
                    sleep.as_millis(),
                    status.message()
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

/// The endpoint and API key interceptor that the environment asks for, or a
/// usage error (which never contains the API key).
fn endpoint_from_env() -> Result<(Endpoint, ApiKey), String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let tls = TlsFiles {
        ca_file: var("TOKENSERVICE_CA_FILE").map(Into::into),
        cert_file: var("TOKENSERVICE_CERT_FILE").map(Into::into),
        key_file: var("TOKENSERVICE_KEY_FILE").map(Into::into),
        server_name: var("TOKENSERVICE_TLS_SERVER_NAME"),
    };
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        return Err(
            "set both TOKENSERVICE_CERT_FILE and TOKENSERVICE_KEY_FILE (mTLS) or neither".into(),
        );
    }
    let api_key = match var("TOKENSERVICE_API_KEY") {
        None => ApiKey::none(),
        Some(_) if !tls.is_set() => {
            return Err(
                "TOKENSERVICE_API_KEY needs TLS, refusing to send it in plaintext: set \
                 TOKENSERVICE_CA_FILE (or TOKENSERVICE_CERT_FILE and TOKENSERVICE_KEY_FILE, \
                 or TOKENSERVICE_TLS_SERVER_NAME to use the system roots)"
                    .into(),
            )
        }
        Some(key) => ApiKey::new(&key).map_err(|e| format!("TOKENSERVICE_API_KEY: {e}"))?,
    };

    let addr = var("TOKENSERVICE_ADDR").unwrap_or_else(|| "localhost:50051".into());
    // tonic uses TLS only for https:// URIs.
    let scheme = if tls.is_set() { "https" } else { "http" };
    let uri = match addr.split_once("://") {
        None => format!("{scheme}://{addr}"),
        Some((given, _)) if tls.is_set() && given != "https" => {
            return Err(format!(
                "TOKENSERVICE_ADDR {addr}: TLS is on, so the scheme must be https (or none)"
            ))
        }
        Some(_) => addr,
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| format!("bad TOKENSERVICE_ADDR: {e}"))?
        .timeout(DEADLINE)
        .connect_timeout(DEADLINE);
    if tls.is_set() {
        let config = tls.client_tls_config().map_err(|e| {
            let name = match e.file {
                TlsFile::Ca => "TOKENSERVICE_CA_FILE",
                TlsFile::Cert => "TOKENSERVICE_CERT_FILE",
                TlsFile::Key => "TOKENSERVICE_KEY_FILE",
            };
            format!("{name}: {}: {}", e.path.display(), e.problem)
        })?;
        // Fails here if the key does not belong to the certificate.
        endpoint = endpoint.tls_config(config).map_err(|e| {
            // tonic's "transport error" says little: show its causes too.
            let mut message = format!("TLS configuration: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message += &format!(": {cause}");
                source = cause.source();
            }
            message
        })?;
    }
    Ok((endpoint, api_key))
}

/// A pseudo-random duration in [0, max], good enough to spread retries.
fn jitter(max: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    max.mul_f64(f64::from(nanos % 1000) / 1000.0)
}
