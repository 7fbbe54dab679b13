// Command e2e checks the Go client against a running TokenService.
//
// Env: TOKENSERVICE_ADDR (host:port), TOKENSERVICE_TEST_SECRET (the org's
// signing secret, to verify tokens with github.com/golang-jwt/jwt/v5).
// Exits 0 when every check passes, 1 otherwise; says what failed on stderr.
//
// With OTEL_EXPORTER_OTLP_ENDPOINT set it runs the traced login instead
// (tracing.go): one MintToken inside its own span "e2e-login", whose ids it
// prints on stdout as `e2e-login trace_id=<32 hex> span_id=<16 hex>`.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	tokenservice "github.com/tokenservice/tokenservice/clients/go"
	pb "github.com/tokenservice/tokenservice/clients/go/tokenservice/v1"
)

var failures int

func check(ok bool, format string, args ...any) {
	if !ok {
		failures++
		fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	}
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

// verify checks token with golang-jwt against secret and returns its claims.
func verify(label, token, secret string, want map[string]string) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		check(false, "%s: token has %d segments", label, len(parts))
		return
	}
	header, err := base64.RawURLEncoding.DecodeString(parts[0])
	check(err == nil, "%s: header is not base64url: %v", label, err)
	check(bytes.Equal(header, []byte(`{"alg":"HS256","typ":"JWT"}`)), "%s: header is %s", label, header)

	parsed, err := jwt.Parse(token, func(t *jwt.Token) (any, error) { return []byte(secret), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithJSONNumber(), jwt.WithIssuedAt())
	if err != nil {
		check(false, "%s: golang-jwt rejects the token: %v", label, err)
		return
	}
	check(len(parsed.Header) == 2 && parsed.Header["alg"] == "HS256" && parsed.Header["typ"] == "JWT",
		"%s: header fields %v", label, parsed.Header)
	claims := parsed.Claims.(jwt.MapClaims)
	var keys []string
	for k := range claims {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var wantKeys []string
	for k := range want {
		wantKeys = append(wantKeys, k)
	}
	wantKeys = append(wantKeys, "iat")
	sort.Strings(wantKeys)
	check(fmt.Sprint(keys) == fmt.Sprint(wantKeys), "%s: claims %v, want keys %v", label, claims, wantKeys)
	for k, v := range want {
		check(claims[k] == v, "%s: claim %s = %v, want %q", label, k, claims[k], v)
	}
	n, ok := claims["iat"].(json.Number)
	if !ok {
		check(false, "%s: iat %v is not a number", label, claims["iat"])
		return
	}
	iat, err := n.Int64()
	check(err == nil, "%s: iat %s is not an integer", label, n)
	now := time.Now().Unix()
	check(iat >= now-60 && iat <= now+1, "%s: iat %d not within [now-60s, now+1s] (now %d)", label, iat, now)
}

func checkResponse(label string, r *pb.MintTokenResponse, identity pb.Identity) {
	check(r.GetToken() != "", "%s: empty token", label)
	check(r.GetIdentityUsed() == identity, "%s: identity_used %v, want %v", label, r.GetIdentityUsed(), identity)
	check(r.GetSecretVersion() >= 1, "%s: secret_version %d", label, r.GetSecretVersion())
	check(r.GetValidUntil().GetSeconds()-r.GetIssuedAt().GetSeconds() == 900,
		"%s: valid_until - issued_at = %d s", label, r.GetValidUntil().GetSeconds()-r.GetIssuedAt().GetSeconds())
}

func reasonOf(st *status.Status) (string, string) {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetDomain(), info.GetReason()
		}
	}
	return "", ""
}

func main() {
	addr := os.Getenv("TOKENSERVICE_ADDR")
	secret := os.Getenv("TOKENSERVICE_TEST_SECRET")
	if addr == "" || secret == "" {
		fatal("TOKENSERVICE_ADDR and TOKENSERVICE_TEST_SECRET must be set")
	}
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" {
		tracedLogin(addr, secret)
		return
	}
	conn, err := tokenservice.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fatal("connect: %v", err)
	}
	defer conn.Close()
	client := pb.NewTokenServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	tokens := map[string]map[string]string{} // token -> expected claims

	email := "go-e2e@example.com"
	r, err := client.MintToken(ctx, &pb.MintTokenRequest{Email: email})
	if err != nil {
		fatal("MintToken(email): %v", err)
	}
	checkResponse("by email", r, pb.Identity_IDENTITY_EMAIL)
	verify("by email", r.GetToken(), secret, map[string]string{"email": email})
	tokens[r.GetToken()] = map[string]string{"email": email}

	// No deadline on this context: the client's default deadline applies.
	r, err = client.MintToken(context.Background(), &pb.MintTokenRequest{ExternalId: "go-customer-42"})
	if err != nil {
		fatal("MintToken(external id): %v", err)
	}
	checkResponse("by external id", r, pb.Identity_IDENTITY_EXTERNAL_ID)
	verify("by external id", r.GetToken(), secret, map[string]string{"externalId": "go-customer-42"})
	tokens[r.GetToken()] = map[string]string{"externalId": "go-customer-42"}

	batch, err := client.MintTokens(ctx, &pb.MintTokensRequest{Requests: []*pb.MintTokenRequest{
		{Email: "go-batch@example.com"},
		{Email: "not-an-email"},
		{ExternalId: "go-batch-7"},
		{ExternalId: "go-batch-8", Email: "go-both@example.com"},
	}})
	if err != nil {
		fatal("MintTokens: %v", err)
	}
	results := batch.GetResults()
	if len(results) != 4 {
		fatal("MintTokens: %d results, want 4", len(results))
	}
	type want struct {
		claims   map[string]string
		identity pb.Identity
	}
	wants := map[int]want{
		0: {map[string]string{"email": "go-batch@example.com"}, pb.Identity_IDENTITY_EMAIL},
		2: {map[string]string{"externalId": "go-batch-7"}, pb.Identity_IDENTITY_EXTERNAL_ID},
		3: {map[string]string{"externalId": "go-batch-8", "email": "go-both@example.com"}, pb.Identity_IDENTITY_EMAIL},
	}
	for i, w := range wants {
		label := fmt.Sprintf("batch[%d]", i)
		if results[i].GetToken() == nil {
			check(false, "%s: no token: %v", label, results[i].GetError())
			continue
		}
		checkResponse(label, results[i].GetToken(), w.identity)
		verify(label, results[i].GetToken().GetToken(), secret, w.claims)
		tokens[results[i].GetToken().GetToken()] = w.claims
	}
	if e := results[1].GetError(); e == nil {
		check(false, "batch[1]: bad email minted a token")
	} else {
		st := status.FromProto(e)
		domain, reason := reasonOf(st)
		check(st.Code() == codes.InvalidArgument && reason == "EMAIL_INVALID" && domain == "tokenservice.v1",
			"batch[1]: got %s %s/%s, want InvalidArgument tokenservice.v1/EMAIL_INVALID", st.Code(), domain, reason)
		check(tokenservice.ReasonOf(st.Err()) == pb.ErrorReason_EMAIL_INVALID, "batch[1]: ReasonOf %s", tokenservice.ReasonOf(st.Err()))
	}

	for token, claims := range tokens {
		v, err := client.VerifyToken(ctx, &pb.VerifyTokenRequest{Token: token})
		if err != nil {
			check(false, "VerifyToken: %v", err)
			continue
		}
		check(v.GetValid() && v.GetReason() == "", "VerifyToken: valid=%v reason=%q", v.GetValid(), v.GetReason())
		check(v.GetEmail() == claims["email"] && v.GetExternalId() == claims["externalId"],
			"VerifyToken: email %q external_id %q, want %v", v.GetEmail(), v.GetExternalId(), claims)
	}
	v, err := client.VerifyToken(ctx, &pb.VerifyTokenRequest{Token: "not.a.token"})
	check(err == nil && !v.GetValid() && tokenservice.ParseReason(v.GetReason()) == pb.ErrorReason_TOKEN_MALFORMED,
		"VerifyToken(garbage): %v %v", v, err)

	_, err = client.MintToken(ctx, &pb.MintTokenRequest{Email: "not-an-email"})
	st, ok := status.FromError(err)
	check(err != nil && ok, "MintToken(not-an-email): err %v", err)
	domain, reason := reasonOf(st)
	check(st.Code() == codes.InvalidArgument, "MintToken(not-an-email): code %s", st.Code())
	check(reason == "EMAIL_INVALID" && domain == "tokenservice.v1", "MintToken(not-an-email): ErrorInfo %s/%s", domain, reason)
	check(tokenservice.ErrorReason(err) == "EMAIL_INVALID", "ErrorReason: %q", tokenservice.ErrorReason(err))
	check(tokenservice.ReasonOf(err) == pb.ErrorReason_EMAIL_INVALID, "ReasonOf: %s", tokenservice.ReasonOf(err))
	check(tokenservice.ReasonOf(context.DeadlineExceeded) == pb.ErrorReason_ERROR_REASON_UNSPECIFIED, "ReasonOf(no ErrorInfo)")

	// Calls without a deadline get the client's default deadline: an
	// interceptor after NewClient's own sees it on the context.
	var seen time.Duration
	probe := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if deadline, ok := ctx.Deadline(); ok {
			seen = time.Until(deadline)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	probed, err := tokenservice.NewClientWithTimeout(addr, 7*time.Second,
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithChainUnaryInterceptor(probe))
	if err != nil {
		fatal("connect: %v", err)
	}
	defer probed.Close()
	_, err = pb.NewTokenServiceClient(probed).MintToken(context.Background(), &pb.MintTokenRequest{Email: email})
	check(err == nil && seen > 5*time.Second && seen <= 7*time.Second, "default deadline: %v left, err %v", seen, err)

	if failures > 0 {
		fmt.Fprintf(os.Stderr, "go client e2e: %d checks failed\n", failures)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "go client e2e: OK (%d tokens verified with golang-jwt)\n", len(tokens))
}
