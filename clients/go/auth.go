package tokenservice

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"google.golang.org/grpc/credentials"
)

// TLSFiles names the PEM files for a TLS or mTLS connection to the service.
type TLSFiles struct {
	// CAFile is the CA bundle that verifies the server's certificate; empty
	// means the system's roots.
	CAFile string
	// CertFile and KeyFile are the client certificate (chain) and its
	// private key for mTLS: both or neither.
	CertFile string
	KeyFile  string
	// ServerName, if not empty, is the name checked in the server's
	// certificate instead of the host of the target (for connecting by IP
	// address or through a proxy).
	ServerName string
}

// TLSFileError is returned by TLSCredentials for a file that cannot be read
// or holds no PEM data of the expected kind.
type TLSFileError struct {
	Field string // "CAFile", "CertFile" or "KeyFile"
	Path  string
	Err   error
}

func (e *TLSFileError) Error() string { return fmt.Sprintf("%s %s: %v", e.Field, e.Path, e.Err) }
func (e *TLSFileError) Unwrap() error { return e.Err }

// TLSCredentials reads the files now and returns transport credentials for
// grpc.WithTransportCredentials: TLS 1.2 or later, the server verified with
// f.CAFile (or the system's roots), and a client certificate when f has
// one. Errors are *TLSFileError, except for a CertFile without a KeyFile or
// the other way round.
func TLSCredentials(f TLSFiles) (credentials.TransportCredentials, error) {
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, errors.New("tokenservice: CertFile and KeyFile go together: set both for mTLS, or neither")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CAFile != "" {
		pem, err := readPEM("CAFile", f.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, &TLSFileError{"CAFile", f.CAFile, errors.New("no PEM certificate in it")}
		}
	}
	if f.CertFile != "" {
		certPEM, err := readPEM("CertFile", f.CertFile)
		if err != nil {
			return nil, err
		}
		keyPEM, err := readPEM("KeyFile", f.KeyFile)
		if err != nil {
			return nil, err
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, &TLSFileError{"CertFile", f.CertFile, fmt.Errorf("with KeyFile %s: %w", f.KeyFile, err)}
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(cfg), nil
}

func readPEM(field, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pathErr *fs.PathError
		if errors.As(err, &pathErr) {
			err = pathErr.Err // the path is in TLSFileError already
		}
		return nil, &TLSFileError{field, path, fmt.Errorf("cannot read: %w", err)}
	}
	if !bytes.Contains(data, []byte("-----BEGIN ")) {
		return nil, &TLSFileError{field, path, errors.New("no PEM data in it")}
	}
	return data, nil
}

// APIKey returns per-RPC credentials for grpc.WithPerRPCCredentials that
// send "authorization: Bearer <key>" with every call. They require
// transport security: grpc.NewClient refuses them on a plaintext
// (insecure) connection, so the key is never sent in the clear.
func APIKey(key string) credentials.PerRPCCredentials {
	return apiKey{header: "Bearer " + key}
}

type apiKey struct{ header string }

func (k apiKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": k.header}, nil
}

func (apiKey) RequireTransportSecurity() bool { return true }

// String and GoString keep the key out of logs and %v / %#v output.
func (apiKey) String() string   { return "tokenservice.APIKey(<redacted>)" }
func (apiKey) GoString() string { return "tokenservice.APIKey(<redacted>)" }
