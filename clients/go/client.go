// Package tokenservice is the Go client of tokenservice.v1.TokenService,
// which mints Kustomer chat login tokens (HS256 JWTs).
//
// The generated stubs are in package tokenservicev1 (subdirectory
// tokenservice/v1). This package adds what every caller needs on top:
// a connection whose calls get a default deadline, and ReasonOf to read
// the google.rpc.ErrorInfo reason that the server attaches to every error as
// a tokenservicev1.ErrorReason, the proto's enum of every reason.
package tokenservice

import (
	"context"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	tokenservicev1 "github.com/tokenservice/tokenservice/clients/go/tokenservice/v1"
)

// DefaultTimeout is the deadline NewClient gives a call whose context has
// none.
const DefaultTimeout = 5 * time.Second

// ErrorDomain is the domain of every ErrorInfo the service returns.
const ErrorDomain = "tokenservice.v1"

// NewClient creates a connection to target ("host:port" or any gRPC target
// string) whose unary calls time out after DefaultTimeout unless the caller's
// context already has a deadline. Pass transport credentials in opts, e.g.
// grpc.WithTransportCredentials(insecure.NewCredentials()) inside a cluster.
func NewClient(target string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return NewClientWithTimeout(target, DefaultTimeout, opts...)
}

// NewClientWithTimeout is NewClient with a default deadline of d instead of
// DefaultTimeout.
func NewClientWithTimeout(target string, d time.Duration, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts = append([]grpc.DialOption{grpc.WithChainUnaryInterceptor(DefaultTimeoutInterceptor(d))}, opts...)
	return grpc.NewClient(target, opts...)
}

// DefaultTimeoutInterceptor gives every unary call without a deadline the
// deadline now+d.
func DefaultTimeoutInterceptor(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// ErrorInfo returns the google.rpc.ErrorInfo detail of a gRPC error returned
// by a TokenService call (read from the grpc-status-details-bin trailer), or
// nil when it has none (for example a deadline exceeded on the client side).
func ErrorInfo(err error) *errdetails.ErrorInfo {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

// ErrorReason returns the ErrorInfo reason of err as sent, such as
// "EMAIL_INVALID", or "" when err carries no ErrorInfo. For logs; branch on
// ReasonOf.
func ErrorReason(err error) string {
	if info := ErrorInfo(err); info != nil {
		return info.GetReason()
	}
	return ""
}

// ReasonOf returns the reason of err, the error of a TokenService call, to
// branch on:
//
//	if tokenservice.ReasonOf(err) == tokenservicev1.ErrorReason_EMAIL_INVALID { ... }
//
// For a failed MintTokens entry pass status.FromProto(result.GetError()).Err().
// It is ErrorReason_ERROR_REASON_UNSPECIFIED when err carries no ErrorInfo of
// domain ErrorDomain (for example a deadline exceeded on the client side) or
// a reason newer than this client: then act on status.Code(err) alone.
func ReasonOf(err error) tokenservicev1.ErrorReason {
	info := ErrorInfo(err)
	if info == nil || info.GetDomain() != ErrorDomain {
		return tokenservicev1.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	return ParseReason(info.GetReason())
}

// ParseReason returns the ErrorReason named name, as sent in ErrorInfo.reason
// or VerifyTokenResponse.reason, or ErrorReason_ERROR_REASON_UNSPECIFIED for
// "" or a name this client does not know. ErrorReason.String() is the name.
func ParseReason(name string) tokenservicev1.ErrorReason {
	return tokenservicev1.ErrorReason(tokenservicev1.ErrorReason_value[name])
}
