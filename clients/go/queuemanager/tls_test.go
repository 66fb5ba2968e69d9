package queuemanager_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// The mutual-TLS server of TestMutualTLS: tests/test_client_go.py starts one that requires a client
// certificate signed by the CA of QM_TEST_TLS_CA (tests/security_kit.py makes them all) and names the
// files here; QM_TEST_TLS_ROGUE_* is a client certificate of another CA.
const (
	tlsAddressEnv = "QM_TEST_TLS_ADDRESS"
)

func TestMutualTLS(t *testing.T) {
	address := os.Getenv(tlsAddressEnv)
	if address == "" {
		t.Skipf("%s is not set: tests/test_client_go.py runs this test with a mutual-TLS server", tlsAddressEnv)
	}
	pki := func(name string) string { return os.Getenv("QM_TEST_TLS_" + name) }
	refused := func(what string, opts ...qm.Option) {
		t.Helper()
		c := dial(t, address, opts...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.ListQueues(ctx); !errors.Is(err, qm.ErrUnavailable) {
			t.Fatalf("%s must be refused as ErrUnavailable, got %v", what, err)
		}
	}
	refused("plaintext")
	refused("a server certificate of an unknown CA", qm.WithTLSFiles(pki("OTHER_CA"), pki("CERT"), pki("KEY")))
	refused("no client certificate", qm.WithTLSFiles(pki("CA"), "", ""))
	refused("a client certificate of another CA", qm.WithTLSFiles(pki("CA"), pki("ROGUE_CERT"), pki("ROGUE_KEY")))
	if _, err := qm.New(address, qm.WithTLSFiles(pki("CA"), pki("CERT"), "")); err == nil {
		t.Fatal("a client certificate without its key must be refused by New")
	}

	// By options, then by QM_TLS_* as the Python client reads them: a worker runs a job over mutual TLS.
	byOptions := dial(t, address, qm.WithTLSFiles(pki("CA"), pki("CERT"), pki("KEY")))
	t.Setenv("QM_TLS_CA", pki("CA"))
	t.Setenv("QM_TLS_CERT", pki("CERT"))
	t.Setenv("QM_TLS_KEY", pki("KEY"))
	t.Setenv("QM_TLS_SERVER_NAME", "localhost")
	byEnv := dial(t, address)
	queue := newQueue(t, byOptions, nil)
	startWorker(t, byEnv, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(_ context.Context, job *qm.Job) (any, error) { return "over mTLS: " + job.Name, nil },
	}})
	job := add(t, byOptions, queue, "secure", nil, nil)
	if done := waitFinished(t, byEnv, queue, job.ID); done.State != qm.StateCompleted ||
		string(done.Result) != `"over mTLS: secure"` {
		t.Fatalf("the job must run over mutual TLS: %+v", done)
	}
}

func TestRefusedTLSHandshakesSayWhatToChange(t *testing.T) {
	address, plaintext := os.Getenv(tlsAddressEnv), os.Getenv(addressEnv)
	if address == "" || plaintext == "" {
		t.Skipf("%s is not set: tests/test_client_go.py runs this test with a mutual-TLS server", tlsAddressEnv)
	}
	pki := func(name string) string { return os.Getenv("QM_TEST_TLS_" + name) }
	// grpc-go's own words name crypto/tls's reason ("error reading server preface: EOF", "x509: certificate
	// signed by unknown authority"), not the setting to change: each refusal now says which one.
	refusal := func(what, address, says string, opts ...qm.Option) {
		t.Helper()
		c := dial(t, address, opts...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.ListQueues(ctx)
		if !errors.Is(err, qm.ErrUnavailable) || !strings.Contains(err.Error(), says) {
			t.Fatalf("%s: want ErrUnavailable saying %q, got %v", what, says, err)
		}
	}
	refusal("plaintext to a TLS port", address, "give the CA bundle that signed its certificate (QM_TLS_CA")
	refusal("a server certificate of another CA", address, "not signed by the CA bundle given (QM_TLS_CA",
		qm.WithTLSFiles(pki("OTHER_CA"), pki("CERT"), pki("KEY")))
	named, err := qm.TLSConfigFromFiles(pki("CA"), pki("CERT"), pki("KEY"))
	if err != nil {
		t.Fatal(err)
	}
	named.ServerName = "elsewhere.example"
	refusal("a name the certificate does not hold", address, "or set QM_TLS_SERVER_NAME", qm.WithTLS(named))
	for _, client := range [][2]string{{"", ""}, {pki("ROGUE_CERT"), pki("ROGUE_KEY")}} {
		refusal("mutual TLS without a client certificate of its CA", address,
			"give a client certificate its CA signed (QM_TLS_CERT and QM_TLS_KEY", qm.WithTLSFiles(pki("CA"), client[0], client[1]))
	}
	refusal("TLS to a plaintext port", plaintext, "the server does not use TLS on this port",
		qm.WithTLSFiles(pki("CA"), "", ""))
}
