package queuemanager

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// Where a client's codecs meet its calls: interceptors on its connection encode every payload of every
// QueueService request (a copy of it: the caller's own keeps its data) and decode every payload of every
// answer, so that no call can send a payload in clear. The worker stream is the worker's own business
// (worker_runs.go): it decodes each delivered job on its own, to fail just that job when it cannot.

// queueServicePrefix starts the full method names of the calls the interceptors encode and decode.
const queueServicePrefix = "/queue_manager.v1.QueueService/"

// WithCodecs encodes the payloads the client and its workers send, and decodes those they read, with
// these codecs: WithCodecs(NewGzipCodec(1024), aesCodec). Without this option the client takes them from
// the environment (CodecsFromEnv); WithCodecs() with none turns that off.
func WithCodecs(codecs ...PayloadCodec) Option {
	return func(s *settings) { s.codecs = &codecs }
}

// codecDialOptions are the interceptors of a chain (none without one).
func (c *codecChain) dialOptions() []grpc.DialOption {
	if c == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(c.unary), grpc.WithChainStreamInterceptor(c.stream)}
}

// encodedCopy is a copy of a request with its payloads encoded; ExecuteWorkflow's is also checked for
// conditions on results.
func (c *codecChain) encodedCopy(method string, req any) (any, error) {
	msg, ok := req.(proto.Message)
	if !ok {
		return req, nil
	}
	msg = proto.Clone(msg)
	if err := c.encodeMessage(msg); err != nil {
		return nil, err
	}
	if run, ok := msg.(*pb.ExecuteWorkflowRequest); ok && method == pb.QueueService_ExecuteWorkflow_FullMethodName {
		if err := refuseResultConditions(run.GetWorkflow().GetSteps()); err != nil {
			return nil, err
		}
	}
	return msg, nil
}

func (c *codecChain) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption,
) error {
	if !strings.HasPrefix(method, queueServicePrefix) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	encoded, err := c.encodedCopy(method, req)
	if err != nil {
		return err
	}
	if err := invoker(ctx, method, encoded, reply, cc, opts...); err != nil {
		return err
	}
	if msg, ok := reply.(proto.Message); ok {
		return c.decodeMessage(msg)
	}
	return nil
}

func (c *codecChain) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
	streamer grpc.Streamer, opts ...grpc.CallOption,
) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || !strings.HasPrefix(method, queueServicePrefix) {
		return s, err
	}
	return &codecStream{ClientStream: s, chain: c, method: method}, nil
}

// codecStream encodes what a QueueService stream sends and decodes what it receives.
type codecStream struct {
	grpc.ClientStream
	chain  *codecChain
	method string
}

func (s *codecStream) SendMsg(m any) error {
	encoded, err := s.chain.encodedCopy(s.method, m)
	if err != nil {
		return err
	}
	return s.ClientStream.SendMsg(encoded)
}

func (s *codecStream) RecvMsg(m any) error {
	if err := s.ClientStream.RecvMsg(m); err != nil {
		return err
	}
	if msg, ok := m.(proto.Message); ok {
		return s.chain.decodeMessage(msg)
	}
	return nil
}
