package com.tokenservice.example;

import com.auth0.jwt.JWT;
import com.auth0.jwt.algorithms.Algorithm;
import com.tokenservice.v1.MintTokenRequest;
import com.tokenservice.v1.MintTokenResponse;
import com.tokenservice.v1.TokenServiceGrpc;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.context.Scope;
import io.opentelemetry.instrumentation.grpc.v1_6.GrpcTelemetry;
import io.opentelemetry.sdk.OpenTelemetrySdk;
import io.opentelemetry.sdk.autoconfigure.AutoConfiguredOpenTelemetrySdk;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * The end-to-end check's traced login, set up as the README's "Tracing" section shows: the SDK
 * configured from the OTEL_* variables, a channel with GrpcTelemetry's client interceptor, and
 * one MintToken inside this program's own span "e2e-login", whose ids it prints on stdout as
 * {@code e2e-login trace_id=<32 hex> span_id=<16 hex>}. Spans are flushed before it returns.
 */
final class TracedLogin {
  private TracedLogin() {}

  static void run(String target, String secret) throws InterruptedException {
    // Traces only: metrics and logs stay off unless OTEL_METRICS_EXPORTER / OTEL_LOGS_EXPORTER say otherwise.
    OpenTelemetrySdk otel = AutoConfiguredOpenTelemetrySdk.builder()
        .addPropertiesSupplier(() -> Map.of("otel.metrics.exporter", "none", "otel.logs.exporter", "none"))
        .build()
        .getOpenTelemetrySdk();
    ManagedChannel channel = Grpc.newChannelBuilder(target, InsecureChannelCredentials.create())
        .intercept(GrpcTelemetry.create(otel).createClientInterceptor())
        .build();
    String email = "java-traced@example.com";
    Span span = otel.getTracer("tokenservice-e2e").spanBuilder("e2e-login").startSpan();
    try {
      MintTokenResponse response;
      try (Scope ignored = span.makeCurrent()) {
        response = TokenServiceGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS)
            .mintToken(MintTokenRequest.newBuilder().setEmail(email).build());
      } finally {
        span.end();
      }
      JWT.require(Algorithm.HMAC256(secret.getBytes(StandardCharsets.UTF_8)))
          .withClaim("email", email).build().verify(response.getToken());
      System.out.printf("e2e-login trace_id=%s span_id=%s%n",
          span.getSpanContext().getTraceId(), span.getSpanContext().getSpanId());
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
      otel.shutdown().join(10, TimeUnit.SECONDS);
    }
  }
}
