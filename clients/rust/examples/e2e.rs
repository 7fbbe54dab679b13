//! End-to-end check of the Rust client against a running TokenService.
//!
//!     TOKENSERVICE_ADDR=127.0.0.1:50051 TOKENSERVICE_TEST_SECRET=... cargo run --example e2e
//!
//! Mints by email, by external id and in a batch with one bad entry,
//! verifies every token with the jsonwebtoken crate and the org's secret,
//! and checks that a bad email fails with INVALID_ARGUMENT / ErrorInfo
//! EMAIL_INVALID. Exits 1 on the first failed check.
//!
//! With OTEL_EXPORTER_OTLP_ENDPOINT set it runs the traced login instead
//! (examples/support/otel.rs): one MintToken inside its own span "e2e-login",
//! whose ids it prints on stdout as `e2e-login trace_id=<32 hex> span_id=<16 hex>`.

#[path = "support/otel.rs"]
mod otel;

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use opentelemetry::trace::{FutureExt as _, TraceContextExt as _, Tracer as _};
use opentelemetry::{global, Context};
use serde_json::{json, Value};
use tokenservice_client::reason::{parse_reason, ErrorReasonExt};
use tokenservice_client::tonic::transport::{Channel, Endpoint};
use tokenservice_client::tonic::{Code, Status};
use tokenservice_client::tonic_types::{pb, RpcStatusExt, StatusExt};
use tokenservice_client::v1::mint_token_result::Outcome;
use tokenservice_client::v1::token_service_client::TokenServiceClient;
use tokenservice_client::v1::{
    Identity, MintTokenRequest, MintTokenResponse, MintTokensRequest, VerifyTokenRequest,
};
use tokenservice_client::ErrorReason;

const DOMAIN: &str = "tokenservice.v1";

type Result<T = ()> = std::result::Result<T, String>;

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

struct Check {
    client: TokenServiceClient<Channel>,
    key: DecodingKey,
    checks: u32,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (Ok(addr), Ok(secret)) = (
        std::env::var("TOKENSERVICE_ADDR"),
        std::env::var("TOKENSERVICE_TEST_SECRET"),
    ) else {
        eprintln!("TOKENSERVICE_ADDR and TOKENSERVICE_TEST_SECRET must be set");
        return ExitCode::from(2);
    };
    let uri = if addr.contains("://") {
        addr
    } else {
        format!("http://{addr}")
    };
    let endpoint = match Endpoint::from_shared(uri) {
        // Every call gets a 10 s deadline (grpc-timeout) unless it sets its own.
        Ok(endpoint) => endpoint.timeout(Duration::from_secs(10)),
        Err(error) => {
            eprintln!("bad TOKENSERVICE_ADDR: {error}");
            return ExitCode::from(2);
        }
    };
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some_and(|value| !value.is_empty()) {
        return match traced_login(&endpoint, &secret).await {
            Ok(()) => {
                eprintln!("rust client e2e: traced login OK");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("FAILED: {message}");
                ExitCode::FAILURE
            }
        };
    }
    let channel = endpoint.connect_lazy();
    let mut test = Check {
        client: TokenServiceClient::new(channel),
        key: DecodingKey::from_secret(secret.as_bytes()),
        checks: 0,
    };
    match test.run().await {
        Ok(()) => {
            println!("rust client end-to-end: {} checks passed", test.checks);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

/// One MintToken inside the span "e2e-login", through a client that sends the
/// trace context, in a CLIENT span; every span is flushed before it returns.
async fn traced_login(endpoint: &Endpoint, secret: &str) -> Result {
    let provider = otel::init()?;
    let server = otel::Server {
        address: endpoint.uri().host().unwrap_or_default().to_owned(),
        port: endpoint.uri().port_u16().unwrap_or(80),
    };
    let mut client =
        TokenServiceClient::with_interceptor(endpoint.connect_lazy(), otel::send_trace_context);
    let email = "rust-traced@example.com";
    let login = Context::current_with_span(global::tracer("tokenservice-e2e").start("e2e-login"));
    let minted = otel::client_span(
        &server,
        "tokenservice.v1.TokenService",
        "MintToken",
        client.mint_token(mint_request(email, "")),
    )
    .with_context(login.clone())
    .await;
    login.span().end();
    let ids = login.span().span_context().clone();
    // shutdown blocks until the batch is exported, over a channel that this
    // (current-thread) runtime drives: so it runs on a blocking thread.
    let flushed = tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .map_err(|error| format!("flushing spans: {error}"))?;
    flushed.map_err(|error| format!("flushing spans: {error}"))?;
    let token = minted
        .map_err(|status| rpc_error("MintToken (traced)", status))?
        .into_inner()
        .token;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims::<&str>(&[]);
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<Value>(
        &token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|error| format!("traced: jsonwebtoken rejected the token: {error}"))?;
    check!(
        data.claims["email"] == email,
        "traced: claims {}",
        data.claims
    );
    println!(
        "e2e-login trace_id={} span_id={}",
        ids.trace_id(),
        ids.span_id()
    );
    Ok(())
}

fn mint_request(email: &str, external_id: &str) -> MintTokenRequest {
    MintTokenRequest {
        email: email.into(),
        external_id: external_id.into(),
        ..Default::default()
    }
}

fn rpc_error(what: &str, status: Status) -> String {
    let reason = status.get_details_error_info().map(|info| info.reason);
    format!(
        "{what}: unexpected RPC error {:?} {} (reason {reason:?})",
        status.code(),
        status.message()
    )
}

impl Check {
    async fn run(&mut self) -> Result {
        // By email.
        let email = "rust.client+e2e@example.com";
        let by_email = self
            .client
            .mint_token(mint_request(email, ""))
            .await
            .map_err(|s| rpc_error("MintToken(email)", s))?
            .into_inner();
        self.check_token(
            "MintToken(email)",
            &by_email,
            &[("email", email)],
            Identity::Email,
        )
        .await?;

        // By external id.
        let by_id = self
            .client
            .mint_token(mint_request("", "rust-customer-42"))
            .await
            .map_err(|s| rpc_error("MintToken(external_id)", s))?
            .into_inner();
        self.check_token(
            "MintToken(external_id)",
            &by_id,
            &[("externalId", "rust-customer-42")],
            Identity::ExternalId,
        )
        .await?;

        // A batch, with one bad entry that must come back as an error entry.
        let batch = vec![
            mint_request("batch.one@example.com", ""),
            mint_request("", "batch-two"),
            mint_request("not-an-email", ""),
            mint_request("four@example.com", "batch-four"),
        ];
        let n = batch.len();
        let results = self
            .client
            .mint_tokens(MintTokensRequest { requests: batch })
            .await
            .map_err(|s| rpc_error("MintTokens", s))?
            .into_inner()
            .results;
        check!(
            results.len() == n,
            "MintTokens returned {} results for {n}",
            results.len()
        );
        let mut outcomes = results.into_iter().map(|r| r.outcome);
        let token = |what: &str, outcome: Option<Outcome>| match outcome {
            Some(Outcome::Token(token)) => Ok(token),
            other => Err(format!("{what} should be a token, got {other:?}")),
        };
        let t0 = token("batch[0]", outcomes.next().flatten())?;
        let t1 = token("batch[1]", outcomes.next().flatten())?;
        let e2 = outcomes.next().flatten();
        let t3 = token("batch[3]", outcomes.next().flatten())?;
        self.check_token(
            "batch[0]",
            &t0,
            &[("email", "batch.one@example.com")],
            Identity::Email,
        )
        .await?;
        self.check_token(
            "batch[1]",
            &t1,
            &[("externalId", "batch-two")],
            Identity::ExternalId,
        )
        .await?;
        let Some(Outcome::Error(entry_error)) = e2 else {
            return Err(format!(
                "batch[2] (not-an-email) should be an error, got {e2:?}"
            ));
        };
        check!(
            entry_error.code == Code::InvalidArgument as i32,
            "batch[2]: code {}, want INVALID_ARGUMENT",
            entry_error.code
        );
        self.check_error_info("batch[2]", &entry_error, "EMAIL_INVALID")?;
        check!(
            entry_error.error_reason() == ErrorReason::EmailInvalid,
            "batch[2]: error_reason {:?}",
            entry_error.error_reason()
        );
        self.check_token(
            "batch[3]",
            &t3,
            &[("email", "four@example.com"), ("externalId", "batch-four")],
            Identity::Email,
        )
        .await?;

        // Errors of a single call: tonic::Status, with the google.rpc.Status
        // (and its ErrorInfo) decoded from the grpc-status-details-bin trailer.
        self.expect_error(
            "MintToken(not-an-email)",
            mint_request("not-an-email", ""),
            Code::InvalidArgument,
            "EMAIL_INVALID",
        )
        .await?;
        self.expect_error(
            "MintToken(no identity)",
            MintTokenRequest::default(),
            Code::InvalidArgument,
            "IDENTITY_MISSING",
        )
        .await?;
        self.expect_error(
            "MintToken(unknown org)",
            MintTokenRequest {
                org: "no-such-org".into(),
                ..mint_request(email, "")
            },
            Code::NotFound,
            "ORG_UNKNOWN",
        )
        .await?;

        let garbage = self
            .client
            .verify_token(VerifyTokenRequest {
                token: "not.a.token".into(),
                ..Default::default()
            })
            .await
            .map_err(|s| rpc_error("VerifyToken(garbage)", s))?
            .into_inner();
        check!(
            !garbage.valid && parse_reason(&garbage.reason) == ErrorReason::TokenMalformed,
            "VerifyToken(garbage): {garbage:?}"
        );
        check!(
            Status::deadline_exceeded("client side").error_reason() == ErrorReason::Unspecified,
            "error_reason(no ErrorInfo)"
        );
        self.checks += 1;
        Ok(())
    }

    async fn check_token(
        &mut self,
        what: &str,
        response: &MintTokenResponse,
        identity: &[(&str, &str)],
        identity_used: Identity,
    ) -> Result {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let token = &response.token;
        let parts: Vec<&str> = token.split('.').collect();
        check!(
            parts.len() == 3,
            "{what}: token is not a compact JWS: {token}"
        );

        // Header: exactly {"alg":"HS256","typ":"JWT"}.
        let header: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| format!("{what}: header is not base64url JSON: {}", parts[0]))?;
        check!(
            header == json!({"alg": "HS256", "typ": "JWT"}),
            "{what}: header is {header}"
        );

        // Signature with the jsonwebtoken crate. Kustomer tokens have no
        // exp, so no claim is required by the library; iat is checked below.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims::<&str>(&[]);
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(token, &self.key, &validation)
            .map_err(|e| format!("{what}: jsonwebtoken rejected the token: {e}"))?;
        check!(
            data.header.alg == Algorithm::HS256,
            "{what}: alg {:?}",
            data.header.alg
        );

        // Claims: exactly the identity asked for, plus an integer iat.
        let claims = data
            .claims
            .as_object()
            .ok_or(format!("{what}: claims are not an object"))?;
        let names: BTreeSet<&str> = claims.keys().map(String::as_str).collect();
        let want: BTreeSet<&str> = identity.iter().map(|(k, _)| *k).chain(["iat"]).collect();
        check!(names == want, "{what}: claims {names:?}, want {want:?}");
        for (name, value) in identity {
            check!(
                claims[*name] == json!(value),
                "{what}: claim {name} is {}, want {value:?}",
                claims[*name]
            );
        }
        let iat = claims["iat"]
            .as_i64()
            .ok_or(format!("{what}: iat is not an integer: {}", claims["iat"]))?;
        check!(
            (now - 60..=now + 1).contains(&iat),
            "{what}: iat {iat} not within [now-60s, now+1s], now={now}"
        );

        // The response describes the token.
        let issued = response.issued_at.map(|t| t.seconds);
        let until = response.valid_until.map(|t| t.seconds);
        check!(
            issued == Some(iat),
            "{what}: issued_at {issued:?} != iat {iat}"
        );
        check!(
            until == Some(iat + 15 * 60),
            "{what}: valid_until {until:?} is not iat + 15 min"
        );
        check!(
            response.identity_used() == identity_used,
            "{what}: identity_used {:?}, want {identity_used:?}",
            response.identity_used()
        );

        // And the service itself accepts it.
        let verified = self
            .client
            .verify_token(VerifyTokenRequest {
                token: token.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| rpc_error(what, s))?
            .into_inner();
        check!(
            verified.valid,
            "{what}: VerifyToken says {} {}",
            verified.reason,
            verified.detail
        );
        self.checks += 1;
        Ok(())
    }

    async fn expect_error(
        &mut self,
        what: &str,
        request: MintTokenRequest,
        code: Code,
        reason: &str,
    ) -> Result {
        let status = match self.client.mint_token(request).await {
            Ok(response) => {
                return Err(format!(
                    "{what}: expected {code:?} {reason}, got a token {}",
                    response.into_inner().token
                ))
            }
            Err(status) => status,
        };
        check!(
            status.code() == code,
            "{what}: code {:?}, want {code:?}",
            status.code()
        );
        let details = status
            .check_error_details()
            .map_err(|e| format!("{what}: grpc-status-details-bin does not decode: {e}"))?;
        let info = details
            .error_info()
            .ok_or(format!("{what}: no ErrorInfo in grpc-status-details-bin"))?;
        check!(
            info.domain == DOMAIN,
            "{what}: ErrorInfo domain {}",
            info.domain
        );
        check!(
            info.reason == reason,
            "{what}: ErrorInfo reason {}, want {reason}",
            info.reason
        );
        check!(
            status.error_reason().as_str_name() == reason,
            "{what}: error_reason {:?}, want {reason}",
            status.error_reason()
        );
        self.checks += 1;
        Ok(())
    }

    fn check_error_info(&mut self, what: &str, status: &pb::Status, reason: &str) -> Result {
        let info = status.get_details_error_info().ok_or(format!(
            "{what}: no ErrorInfo among details {:?}",
            status.details
        ))?;
        check!(
            info.domain == DOMAIN,
            "{what}: ErrorInfo domain {}",
            info.domain
        );
        check!(
            info.reason == reason,
            "{what}: ErrorInfo reason {}, want {reason}",
            info.reason
        );
        self.checks += 1;
        Ok(())
    }
}
