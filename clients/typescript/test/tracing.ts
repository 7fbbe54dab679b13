// OpenTelemetry for the e2e program's traced login, set up as the README's
// "Tracing" section shows. e2e.ts imports this module before anything that
// loads @grpc/grpc-js, so GrpcInstrumentation patches it before the client is
// built. Without OTEL_EXPORTER_OTLP_ENDPOINT it does nothing.
import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-grpc";
import { registerInstrumentations } from "@opentelemetry/instrumentation";
import { GrpcInstrumentation } from "@opentelemetry/instrumentation-grpc";
import { defaultResource, detectResources, envDetector } from "@opentelemetry/resources";
import { BatchSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";

function startTracing(): TracerProvider {
  const provider = new TracerProvider({
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    resource: defaultResource().merge(detectResources({ detectors: [envDetector] })),
    // OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT...
    spanProcessors: [new BatchSpanProcessor({ exporter: new OTLPTraceExporter() })],
  });
  // The API's defaults keep no context across awaits and propagate nothing.
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  registerInstrumentations({ instrumentations: [new GrpcInstrumentation()] });
  return provider;
}

export const tracerProvider: TracerProvider | undefined =
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT ? startTracing() : undefined;
