package queuemanager

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// Version is this client library's version, sent in a worker's hello.
const Version = "0.1.0"

// maxMessageBytes matches the Python client: large enough for a 1 MiB payload limit several times over.
const maxMessageBytes = 16 << 20

// Client is the producer and admin API of one Queue Manager server (any server of a cluster): queues,
// jobs, metrics and workflows, plus NewWorker for the workers that share its connection. It is safe for
// concurrent use; Close it when done.
type Client struct {
	conn    *grpc.ClientConn
	queues  pb.QueueServiceClient
	workers pb.WorkerServiceClient

	tracerProvider trace.TracerProvider // WithTracerProvider; nil: the global one
	tracingOnce    sync.Once
	tracing        *tracing    // the adds' tracing, read at the first add; nil when it is off
	codecs         *codecChain // the payload codecs (codecs.go); nil: payloads go and come as they are
}

type settings struct {
	token     *string
	tls       *tls.Config
	tlsSet    bool
	dialOpts  []grpc.DialOption
	configErr error

	tracerProvider trace.TracerProvider
	codecs         *[]PayloadCodec // WithCodecs; nil: from the environment (CodecsFromEnv)
}

// Option configures New.
type Option func(*settings)

// WithToken sends "authorization: Bearer <token>" on every call (default: QM_TOKEN or QM_TOKEN_FILE).
func WithToken(token string) Option {
	return func(s *settings) { s.token = &token }
}

// WithTLS dials with TLS; a nil config means the system's CA pool (default: QM_TLS_* or plaintext).
func WithTLS(config *tls.Config) Option {
	return func(s *settings) {
		if config == nil {
			config = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		s.tls, s.tlsSet = config, true
	}
}

// WithTLSFiles dials with TLS from PEM files (see TLSConfigFromFiles).
func WithTLSFiles(ca, cert, key string) Option {
	return func(s *settings) {
		config, err := TLSConfigFromFiles(ca, cert, key)
		if err != nil {
			s.configErr = err
			return
		}
		s.tls, s.tlsSet = config, true
	}
}

// WithDialOptions adds gRPC dial options (interceptors, keepalive…) after the client's own.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(s *settings) { s.dialOpts = append(s.dialOpts, opts...) }
}

// New connects to a server at address ("host:port"). The connection is made lazily: a server that is
// down shows as ErrUnavailable on the first call, not here. New fails only on a bad address or option.
func New(address string, opts ...Option) (*Client, error) {
	if err := checkAddress(address); err != nil {
		return nil, err
	}
	var s settings
	for _, opt := range opts {
		opt(&s)
	}
	if s.configErr != nil {
		return nil, s.configErr
	}
	dial, err := s.dialOptions()
	if err != nil {
		return nil, err
	}
	codecs, err := s.codecChain()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(address, append(dial, codecs.dialOptions()...)...)
	if err != nil {
		return nil, fmt.Errorf("cannot make a connection to %s: %w", address, err)
	}
	return &Client{
		conn: conn, queues: pb.NewQueueServiceClient(conn), workers: pb.NewWorkerServiceClient(conn),
		tracerProvider: s.tracerProvider, codecs: codecs,
	}, nil
}

// codecChain is the client's payload codecs: WithCodecs', else the environment's; nil for none.
func (s *settings) codecChain() (*codecChain, error) {
	var codecs []PayloadCodec
	if s.codecs != nil {
		codecs = *s.codecs
	} else {
		var err error
		if codecs, err = CodecsFromEnv(); err != nil {
			return nil, err
		}
	}
	return newCodecChain(codecs)
}

// traced is the adds' tracing, nil when it is off: read at the first add, so that a client made before the
// application set its global tracer provider still traces.
func (c *Client) traced() *tracing {
	c.tracingOnce.Do(func() { c.tracing = newTracing(c.tracerProvider) })
	return c.tracing
}

func (s *settings) dialOptions() ([]grpc.DialOption, error) {
	if !s.tlsSet {
		config, err := tlsFromEnv()
		if err != nil {
			return nil, err
		}
		s.tls = config
	}
	transport := insecure.NewCredentials()
	if s.tls != nil {
		transport = credentials.NewTLS(s.tls)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
		// Pings every 20 s keep idle worker streams open through proxies and NATs and find a dead server
		// within ~30 s (the server permits them: its app's gRPC options).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: 20 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true,
		}),
		// gRPC's own reconnect backoff grows to 2 minutes by default, and calls fail at once meanwhile: a
		// worker whose server was down for a while would wait that long after it came back. Capped like
		// the worker's own backoff.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay: backoffFirst, Multiplier: 1.6, Jitter: 0.2, MaxDelay: backoffMax,
			},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	// A refused TLS handshake says which setting to change (errors.go), as the Python client's does.
	opts = append(opts, tlsHintInterceptors(s.tls != nil)...)
	token := ""
	if s.token != nil {
		token = *s.token
		if err := checkToken(token); err != nil {
			return nil, err
		}
	} else {
		var err error
		if token, err = tokenFromEnv(); err != nil {
			return nil, err
		}
		if token != "" {
			if err := checkToken(token); err != nil {
				return nil, err
			}
		}
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken{header: "Bearer " + token}))
	}
	return append(opts, s.dialOpts...), nil
}

func checkAddress(address string) error {
	host, port, err := net.SplitHostPort(address)
	if err != nil || host == "" {
		return fmt.Errorf("the server address must be host:port, not %q", address)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("the port of the server address %q must be a number from 1 to 65535", address)
	}
	return nil
}

// Close closes the connection; calls in flight end with an error.
func (c *Client) Close() error {
	if c == nil || c.conn == nil {
		return errors.New("queuemanager: Close of a client that New did not make")
	}
	return c.conn.Close()
}

// Conn is the client's gRPC connection, for calls this package does not wrap (schedules, for example)
// through the generated stubs in the gen/queue_manager/v1 package; it carries the client's token and TLS.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }
