// Command mint mints a Kustomer chat login token for one email address and
// prints only the token. It reads the server address from TOKENSERVICE_ADDR
// (default localhost:50051) and retries UNAVAILABLE with backoff; any other
// error (INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED, ...) fails at once.
//
//	go run ./examples/mint someone@example.com
//
// TLS and the API key come from the environment (the same variables in every
// language's example):
//
//	TOKENSERVICE_CA_FILE          PEM CA bundle that verifies the server (turns TLS on)
//	TOKENSERVICE_CERT_FILE        PEM client certificate for mTLS (with TOKENSERVICE_KEY_FILE;
//	TOKENSERVICE_KEY_FILE         PEM client key                    both turn TLS on)
//	TOKENSERVICE_TLS_SERVER_NAME  name to check in the server's certificate (turns TLS on)
//	TOKENSERVICE_API_KEY          sent as "authorization: Bearer <key>"; needs TLS
//
// With none of the TLS variables set the connection is plaintext; with TLS on
// and no CA file the system's roots verify the server. A bad setting or an
// unreadable file exits with status 2.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	tokenservice "github.com/tokenservice/tokenservice/clients/go"
	tokenservicev1 "github.com/tokenservice/tokenservice/clients/go/tokenservice/v1"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mint EMAIL")
		os.Exit(2)
	}
	addr := os.Getenv("TOKENSERVICE_ADDR")
	if addr == "" {
		addr = "localhost:50051"
	}
	opts, err := dialOptions()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mint:", err)
		os.Exit(2)
	}
	conn, err := tokenservice.NewClient(addr, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mint:", err)
		os.Exit(1)
	}
	defer conn.Close()
	client := tokenservicev1.NewTokenServiceClient(conn)

	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		// Each attempt has its own deadline.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		resp, err := client.MintToken(ctx, &tokenservicev1.MintTokenRequest{Email: os.Args[1]})
		cancel()
		if err == nil {
			fmt.Println(resp.GetToken())
			return
		}
		if status.Code(err) == codes.Unavailable && attempt < 5 {
			fmt.Fprintf(os.Stderr, "mint: attempt %d: %v (reason %q); retrying in %v\n",
				attempt, err, tokenservice.ErrorReason(err), backoff)
			time.Sleep(backoff)
			backoff *= 2
			continue
		}
		fmt.Fprintf(os.Stderr, "mint: %s (reason %q): %s\n",
			status.Code(err), tokenservice.ErrorReason(err), status.Convert(err).Message())
		os.Exit(1)
	}
}

// tlsEnv maps each tokenservice.TLSFiles field to its environment variable.
var tlsEnv = map[string]string{
	"CAFile":   "TOKENSERVICE_CA_FILE",
	"CertFile": "TOKENSERVICE_CERT_FILE",
	"KeyFile":  "TOKENSERVICE_KEY_FILE",
}

// dialOptions reads the TLS and API key variables. Its errors are usage
// errors (exit status 2); they never contain the API key.
func dialOptions() ([]grpc.DialOption, error) {
	files := tokenservice.TLSFiles{
		CAFile:     os.Getenv("TOKENSERVICE_CA_FILE"),
		CertFile:   os.Getenv("TOKENSERVICE_CERT_FILE"),
		KeyFile:    os.Getenv("TOKENSERVICE_KEY_FILE"),
		ServerName: os.Getenv("TOKENSERVICE_TLS_SERVER_NAME"),
	}
	key := os.Getenv("TOKENSERVICE_API_KEY")
	if (files.CertFile == "") != (files.KeyFile == "") {
		return nil, errors.New("set both TOKENSERVICE_CERT_FILE and TOKENSERVICE_KEY_FILE (mTLS) or neither")
	}
	if files == (tokenservice.TLSFiles{}) {
		if key != "" {
			return nil, errors.New("TOKENSERVICE_API_KEY needs TLS, refusing to send it in plaintext: set " +
				"TOKENSERVICE_CA_FILE (or TOKENSERVICE_CERT_FILE and TOKENSERVICE_KEY_FILE, or " +
				"TOKENSERVICE_TLS_SERVER_NAME to use the system roots)")
		}
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	creds, err := tokenservice.TLSCredentials(files)
	if err != nil {
		var fileErr *tokenservice.TLSFileError
		if errors.As(err, &fileErr) {
			return nil, fmt.Errorf("%s: %s: %v", tlsEnv[fileErr.Field], fileErr.Path, fileErr.Err)
		}
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if key != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenservice.APIKey(key)))
	}
	return opts, nil
}
