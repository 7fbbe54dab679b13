//! OpenTelemetry for the e2e check's traced login, as the README's "Tracing"
//! section shows: the SDK exporting over OTLP/gRPC (the OTEL_* variables
//! configure it), a tonic `Interceptor` that sends the current span as the W3C
//! `traceparent`, and a CLIENT span per call that follows the OpenTelemetry
//! RPC conventions.

use std::future::Future;

use opentelemetry::propagation::Injector;
use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{global, Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokenservice_client::tonic;
use tokenservice_client::tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

/// Sets the global tracer provider and propagator; call it inside the tokio
/// runtime (the exporter's channel runs on it) and `shutdown` the provider at
/// exit, off the runtime's threads (`spawn_blocking`), to flush the spans.
pub fn init() -> Result<SdkTracerProvider, String> {
    // OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT; the provider
    // reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|error| format!("OTLP exporter: {error}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());
    Ok(provider)
}

/// A tonic interceptor (`TokenServiceClient::with_interceptor(channel,
/// send_trace_context)`): the current span goes out as traceparent/tracestate.
pub fn send_trace_context(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let cx = Context::current();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut MetadataInjector(request.metadata_mut()))
    });
    Ok(request)
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Where the calls go, for the spans' server.address and server.port.
#[derive(Clone, Debug)]
pub struct Server {
    pub address: String,
    pub port: u16,
}

/// Runs `call` (a call of the client made with `send_trace_context`) in a
/// CLIENT span named `service/method`, ended with the call's gRPC status code;
/// the codes that say the server failed make it an error.
pub async fn client_span<T>(
    server: &Server,
    service: &'static str,
    method: &'static str,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let tracer = global::tracer("tokenservice-client");
    let span = tracer
        .span_builder(format!("{service}/{method}"))
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", service),
            KeyValue::new("rpc.method", method),
            KeyValue::new("server.address", server.address.clone()),
            KeyValue::new("server.port", i64::from(server.port)),
        ])
        .start(&tracer);
    let cx = Context::current_with_span(span);
    let result = call.with_context(cx.clone()).await;
    let code = result
        .as_ref()
        .map_or_else(tonic::Status::code, |_| tonic::Code::Ok);
    let span = cx.span();
    span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
    if matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    ) {
        span.set_status(Status::error(format!("{code:?}")));
    }
    span.end();
    result
}
