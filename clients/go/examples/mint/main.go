// Command mint mints a Kustomer chat login token for one email address and
// prints only the token. It reads the server address from TOKENSERVICE_ADDR
// (default localhost:50051) and retries UNAVAILABLE with backoff; any other
// error (INVALID_ARGUMENT, NOT_FOUND, ...) fails at once.
//
//	go run ./examples/mint someone@example.com
package main

import (
	"context"
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
	conn, err := tokenservice.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
