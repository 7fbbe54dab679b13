package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tokenservice "github.com/tokenservice/tokenservice/clients/go"
	pb "github.com/tokenservice/tokenservice/clients/go/tokenservice/v1"
)

// tracedLogin mints one token inside this program's span "e2e-login", through a
// connection instrumented with otelgrpc as the README's "Tracing" section shows,
// prints the span's ids on stdout and flushes every span before it returns.
func tracedLogin(addr, secret string) {
	ctx := context.Background()
	// The OTEL_EXPORTER_OTLP_* variables configure the exporter; OTEL_SERVICE_NAME,
	// OTEL_RESOURCE_ATTRIBUTES and OTEL_TRACES_SAMPLER the provider.
	exporter, err := otlptracegrpc.New(ctx)
	if err != nil {
		fatal("OTLP exporter: %v", err)
	}
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter))
	defer func() {
		flush, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := provider.Shutdown(flush); err != nil {
			fatal("flushing spans: %v", err)
		}
	}()
	// otelgrpc reads both globals; the propagator's default is a no-op, so name W3C trace context.
	otel.SetTracerProvider(provider)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))

	conn, err := tokenservice.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler()))
	if err != nil {
		fatal("connect: %v", err)
	}
	defer conn.Close()

	email := "go-traced@example.com"
	ctx, span := otel.Tracer("tokenservice-e2e").Start(ctx, "e2e-login")
	r, err := pb.NewTokenServiceClient(conn).MintToken(ctx, &pb.MintTokenRequest{Email: email})
	span.End()
	if err != nil {
		fatal("MintToken (traced): %v", err)
	}
	verify("traced", r.GetToken(), secret, map[string]string{"email": email})
	ids := span.SpanContext()
	fmt.Printf("e2e-login trace_id=%s span_id=%s\n", ids.TraceID(), ids.SpanID())
	if failures > 0 {
		fatal("traced login: %d checks failed", failures)
	}
	fmt.Fprintln(os.Stderr, "go client e2e: traced login OK")
}
