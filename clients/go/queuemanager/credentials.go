package queuemanager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode"
)

// Environment read when New is given no token or no TLS option, as the Python client and `qm` do
// (docs/security.md):
//
//   - QM_TOKEN: the bearer token sent as "authorization: Bearer <token>" on every call; QM_TOKEN_FILE: a
//     file holding it.
//   - QM_TLS_CA: PEM bundle of the CA that signed the server's certificate (turns TLS on); QM_TLS=1: TLS
//     with the system's CA pool instead.
//   - QM_TLS_CERT and QM_TLS_KEY: this client's certificate and key, for servers that require mutual TLS.
//   - QM_TLS_SERVER_NAME: the name to expect in the server's certificate when it differs from the host.

// bearerToken adds the token to every call's metadata. It does not require transport security: a
// loopback or private-network server may run without TLS, as the Python client allows.
type bearerToken struct{ header string }

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": b.header}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return false }

func checkToken(token string) error {
	if token == "" {
		return errors.New("the token is empty")
	}
	for _, r := range token {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return errors.New("the token must be one printable word (check WithToken / QM_TOKEN / QM_TOKEN_FILE)")
		}
	}
	return nil
}

// tokenFromEnv is QM_TOKEN, else the content of QM_TOKEN_FILE, else "".
func tokenFromEnv() (string, error) {
	if token := os.Getenv("QM_TOKEN"); token != "" {
		return token, nil
	}
	path := os.Getenv("QM_TOKEN_FILE")
	if path == "" {
		return "", nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the token file (QM_TOKEN_FILE) %s: %w", path, err)
	}
	return strings.TrimSpace(string(data)), nil
}

// TLSConfigFromFiles builds a client TLS configuration from PEM files: ca is the bundle that signed the
// server's certificate ("" for the system's pool); cert and key are this client's, for mutual TLS (both or
// neither).
func TLSConfigFromFiles(ca, cert, key string) (*tls.Config, error) {
	if (cert == "") != (key == "") {
		return nil, errors.New("a client certificate and its key go together (QM_TLS_CERT and QM_TLS_KEY)")
	}
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("cannot read the CA bundle %s: %w", ca, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("the CA bundle %s holds no PEM certificate", ca)
		}
		config.RootCAs = pool
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("cannot load the client certificate %s and key %s: %w", cert, key, err)
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return config, nil
}

// tlsFromEnv is the TLS configuration QM_TLS_* asks for, or nil for plaintext.
func tlsFromEnv() (*tls.Config, error) {
	ca, cert, key := os.Getenv("QM_TLS_CA"), os.Getenv("QM_TLS_CERT"), os.Getenv("QM_TLS_KEY")
	switch strings.ToLower(strings.TrimSpace(os.Getenv("QM_TLS"))) {
	case "1", "true", "yes", "on":
	default:
		if ca == "" && cert == "" {
			return nil, nil
		}
	}
	config, err := TLSConfigFromFiles(ca, cert, key)
	if err != nil {
		return nil, err
	}
	config.ServerName = os.Getenv("QM_TLS_SERVER_NAME")
	return config, nil
}
