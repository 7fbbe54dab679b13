// Command reference-go is a benchmark reference: the MintToken RPC of
// tokenservice.v1.TokenService written with grpc-go and golang-jwt, signing
// the same claims as TokenService (HS256, header {"alg":"HS256","typ":"JWT"},
// externalId and/or email plus an integer iat) with the secret in
// $KUSTOMER_SECRET (its UTF-8 bytes, as TokenService uses its Vault secret).
//
// It is not a second implementation of the service: no Vault, no metrics
// beyond two counters, no validation beyond "an identity is present". It
// shows what the same work costs in Go, as a yardstick.
//
// It listens on 127.0.0.1 only: gRPC on $GRPC_PORT and a tiny stats endpoint
// (GET /stats: {"ok":N,"errors":M}, counting finished MintToken calls by
// status) on $STATS_PORT; 0 or unset means a free port. Once listening it
// prints one JSON line {"grpc_port":N,"stats_port":M} on stdout.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	tokenservicev1 "github.com/tokenservice/tokenservice/clients/go/tokenservice/v1"
)

const tokenLifetime = 15 * 60

type server struct {
	tokenservicev1.UnimplementedTokenServiceServer
	key []byte
}

func (s *server) MintToken(_ context.Context, req *tokenservicev1.MintTokenRequest) (*tokenservicev1.MintTokenResponse, error) {
	if req.GetExternalId() == "" && req.GetEmail() == "" {
		return nil, status.Error(codes.InvalidArgument, "email or external_id: at least one is required")
	}
	iat := time.Now().Unix()
	claims := jwt.MapClaims{"iat": iat}
	identity := tokenservicev1.Identity_IDENTITY_EXTERNAL_ID
	if req.GetExternalId() != "" {
		claims["externalId"] = req.GetExternalId()
	}
	if req.GetEmail() != "" {
		claims["email"] = req.GetEmail()
		identity = tokenservicev1.Identity_IDENTITY_EMAIL
	}
	// NewWithClaims sets the header {"alg":"HS256","typ":"JWT"}.
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.key)
	if err != nil {
		return nil, status.Error(codes.Internal, "signing failed")
	}
	return &tokenservicev1.MintTokenResponse{
		Token:         token,
		IssuedAt:      &timestamppb.Timestamp{Seconds: iat},
		ValidUntil:    &timestamppb.Timestamp{Seconds: iat + tokenLifetime},
		SecretVersion: 1,
		IdentityUsed:  identity,
	}, nil
}

func listen(envName string) (net.Listener, error) {
	port := 0
	if value := os.Getenv(envName); value != "" {
		parsed, err := strconv.Atoi(value)
		if err != nil {
			return nil, fmt.Errorf("%s: not a port number: %q", envName, value)
		}
		port = parsed
	}
	return net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
}

func main() {
	secret := os.Getenv("KUSTOMER_SECRET")
	if secret == "" {
		fmt.Fprintln(os.Stderr, "reference-go: set KUSTOMER_SECRET to the HMAC signing secret")
		os.Exit(2)
	}
	grpcListener, err := listen("GRPC_PORT")
	if err != nil {
		fmt.Fprintln(os.Stderr, "reference-go:", err)
		os.Exit(1)
	}
	statsListener, err := listen("STATS_PORT")
	if err != nil {
		fmt.Fprintln(os.Stderr, "reference-go:", err)
		os.Exit(1)
	}

	var ok, failed atomic.Int64
	count := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			failed.Add(1)
		} else {
			ok.Add(1)
		}
		return resp, err
	}
	grpcServer := grpc.NewServer(grpc.UnaryInterceptor(count))
	tokenservicev1.RegisterTokenServiceServer(grpcServer, &server{key: []byte(secret)})

	mux := http.NewServeMux()
	mux.HandleFunc("/stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int64{"ok": ok.Load(), "errors": failed.Load()})
	})
	statsServer := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	go func() { _ = statsServer.Serve(statsListener) }()
	go func() {
		if err := grpcServer.Serve(grpcListener); err != nil {
			fmt.Fprintln(os.Stderr, "reference-go:", err)
			os.Exit(1)
		}
	}()
	ready, _ := json.Marshal(map[string]int{
		"grpc_port":  grpcListener.Addr().(*net.TCPAddr).Port,
		"stats_port": statsListener.Addr().(*net.TCPAddr).Port,
	})
	fmt.Println(string(ready))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	grpcServer.Stop()
	_ = statsServer.Close()
}
