package queuemanager

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The kinds of failed call, one per gRPC status the server answers with. Test for them with errors.Is:
//
//	if errors.Is(err, queuemanager.ErrNotFound) { … }
//
// and read the code and the server's message with errors.As on *Error.
var (
	// ErrNotFound: the queue, job, run or schedule does not exist (NOT_FOUND).
	ErrNotFound = errors.New("not found")
	// ErrInvalidArgument: the server rejected a field of the request; the message names it (INVALID_ARGUMENT).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrFailedPrecondition: the request is valid but the state does not allow it (FAILED_PRECONDITION).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrAlreadyExists: the object to create exists already (ALREADY_EXISTS; the current server never
	// sends it).
	ErrAlreadyExists = errors.New("already exists")
	// ErrUnavailable: the server or its Redis cannot be reached, or it is shutting down; retry later
	// (UNAVAILABLE).
	ErrUnavailable = errors.New("unavailable")
	// ErrResourceExhausted: an add found its queue full (QueueConfig.MaxSize: "queue 'q' is full: …") or its
	// group (GroupLimits.MaxSize: "group 'g' of queue 'q' is full: …"), and nothing was written; or Redis is
	// out of memory, or a message is over the gRPC limit (RESOURCE_EXHAUSTED).
	ErrResourceExhausted = errors.New("resource exhausted")
	// ErrUnauthenticated: the call carried no token, or one the server does not know (UNAUTHENTICATED).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: the token's roles or queue patterns do not cover the call (PERMISSION_DENIED).
	ErrPermissionDenied = errors.New("permission denied")
)

var sentinels = map[codes.Code]error{
	codes.NotFound:           ErrNotFound,
	codes.InvalidArgument:    ErrInvalidArgument,
	codes.FailedPrecondition: ErrFailedPrecondition,
	codes.AlreadyExists:      ErrAlreadyExists,
	codes.Unavailable:        ErrUnavailable,
	codes.ResourceExhausted:  ErrResourceExhausted,
	codes.Unauthenticated:    ErrUnauthenticated,
	codes.PermissionDenied:   ErrPermissionDenied,
}

// Error is a failed call: the gRPC status code and the server's message, meant for a person.
// errors.Is matches it against the Err… value of its code, and context.DeadlineExceeded or
// context.Canceled when the call's context ended it.
type Error struct {
	// Code is the gRPC status code the server (or the channel) answered with.
	Code codes.Code
	// Message is the status message.
	Message string
}

// Error reads "CODE: message", like the Python client's errors.
func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", codeName(e.Code), e.Message)
}

// Is reports whether target is the sentinel of e's code.
func (e *Error) Is(target error) bool {
	if sentinel, ok := sentinels[e.Code]; ok && sentinel == target {
		return true
	}
	switch e.Code {
	case codes.DeadlineExceeded:
		return target == context.DeadlineExceeded
	case codes.Canceled:
		return target == context.Canceled
	}
	return false
}

// GRPCStatus lets status.FromError and status.Code read the status back.
func (e *Error) GRPCStatus() *status.Status {
	return status.New(e.Code, e.Message)
}

// grpc-go's words for a connection whose TLS handshake failed name crypto/tls's reason, not the setting to
// change; each is followed by what the caller can do about it, as the Python client's errors.py says it. A
// connection the server closed at once reads differently by whether the client dialled with TLS: without,
// the server may want TLS; with, it may want a client certificate (it closes the connection on TLS 1.3
// after the client's side of the handshake is done, so the client sees only the close).
var tlsHints = []struct{ words, hint string }{
	{
		"first record does not look like a TLS handshake",
		"the server does not use TLS on this port: connect without TLS (unset QM_TLS_CA and QM_TLS)",
	},
	{
		"certificate signed by unknown authority",
		"the server's certificate is not signed by the CA bundle given (QM_TLS_CA, or WithTLSFiles' ca)",
	},
	{
		"certificate is valid for",
		"the server's certificate does not name the host dialled: dial a name it holds, or set " +
			"QM_TLS_SERVER_NAME (tls.Config.ServerName with WithTLS)",
	},
}

// closedWords are grpc-go's words for a connection the server closed before it answered (after a TLS alert,
// such as "certificate required", when the client read it first).
var closedWords = []string{
	"error reading server preface", "write: broken pipe", "connection reset by peer", "remote error: tls: ",
}

const (
	closedPlainHint = "if the server uses TLS, give the CA bundle that signed its certificate (QM_TLS_CA, or " +
		"WithTLSFiles); if it requires mutual TLS, also a client certificate its CA signed (QM_TLS_CERT and " +
		"QM_TLS_KEY)"
	closedTLSHint = "if the server requires mutual TLS, give a client certificate its CA signed (QM_TLS_CERT " +
		"and QM_TLS_KEY, or WithTLSFiles)"
)

// withTLSHint adds to an UNAVAILABLE status error the hint its message calls for, for a client that dialled
// with TLS (withTLS) or without; any other error is returned as it is.
func withTLSHint(err error, withTLS bool) error {
	s, ok := status.FromError(err)
	if !ok || s.Code() != codes.Unavailable {
		return err
	}
	message := s.Message()
	for _, h := range tlsHints {
		if strings.Contains(message, h.words) {
			return status.Error(codes.Unavailable, message+"; "+h.hint)
		}
	}
	for _, words := range closedWords {
		if !strings.Contains(message, words) {
			continue
		}
		if withTLS {
			return status.Error(codes.Unavailable, message+"; "+closedTLSHint)
		}
		return status.Error(codes.Unavailable, message+"; "+closedPlainHint)
	}
	return err
}

// tlsHintInterceptors add the hints to the errors of every call of a client (withTLS: it dials with TLS).
// A stream's failed handshake shows when the stream is opened, as a unary call's does.
func tlsHintInterceptors(withTLS bool) []grpc.DialOption {
	unary := func(
		ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker,
		opts ...grpc.CallOption,
	) error {
		return withTLSHint(invoker(ctx, method, req, reply, cc, opts...), withTLS)
	}
	stream := func(
		ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer,
		opts ...grpc.CallOption,
	) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		return s, withTLSHint(err, withTLS)
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream)}
}

// fromRPC is the one place where a gRPC call's error becomes an *Error (nil stays nil; an error that is
// no status, such as io.EOF from a stream, passes through unchanged).
func fromRPC(err error) error {
	if err == nil {
		return nil
	}
	var own *Error
	if errors.As(err, &own) {
		return err
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	code, message := s.Code(), s.Message()
	if message == "" {
		message = strings.ToLower(strings.ReplaceAll(codeName(code), "_", " "))
	}
	return &Error{Code: code, Message: message}
}

// fromStatus is the *Error of a refused part of a call (an AddJobBatch item): its code and message.
func fromStatus(code int32, message string) error {
	c := codes.Code(uint32(code))
	if message == "" {
		message = strings.ToLower(strings.ReplaceAll(codeName(c), "_", " "))
	}
	return &Error{Code: c, Message: message}
}

// codeName is the code's name as the gRPC specification spells it (NOT_FOUND, not NotFound).
func codeName(c codes.Code) string {
	if name, ok := codeNames[c]; ok {
		return name
	}
	return fmt.Sprintf("CODE_%d", uint32(c))
}

var codeNames = map[codes.Code]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

// UnrecoverableError, returned by a handler (directly or wrapped), fails the job for good, skipping the
// attempts left. Make one with Unrecoverable.
type UnrecoverableError struct{ Err error }

func (e *UnrecoverableError) Error() string { return e.Err.Error() }
func (e *UnrecoverableError) Unwrap() error { return e.Err }

// Unrecoverable marks err so that the job fails for good, with no retry.
func Unrecoverable(err error) error {
	if err == nil {
		err = errors.New("unrecoverable error")
	}
	return &UnrecoverableError{Err: err}
}

// RateLimitedError, returned by a handler, says downstream told it to slow down (an HTTP 429, say): the
// job goes back to wait RetryAfter without using an attempt, and its queue starts no job for that long,
// on every worker. Make one with RateLimited.
type RateLimitedError struct {
	// RetryAfter is how long the job and its queue wait.
	RetryAfter time.Duration
	// Message is kept as the job's failure reason.
	Message string
}

func (e *RateLimitedError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("rate limited: retry after %s", e.RetryAfter)
}

// RateLimited makes a RateLimitedError; a negative retryAfter counts as 0.
func RateLimited(retryAfter time.Duration, message string) error {
	return &RateLimitedError{RetryAfter: max(retryAfter, 0), Message: message}
}

// WaitingForChildrenError is what Job.WaitForChildren returns once the server has added the children and
// ended the run: the handler returns it (or any error: the run is over, and whatever the handler returns
// afterwards is not reported), and the job runs again when its children have all finished.
type WaitingForChildrenError struct {
	// Children are the children added, in the order given.
	Children []JobRef
	// Pending is how many of the job's children had not finished when the run ended.
	Pending int
}

func (e *WaitingForChildrenError) Error() string {
	return fmt.Sprintf("waiting for %d of %d children", e.Pending, len(e.Children))
}

// WaitingForEventError is what Job.WaitForEvent returns once the server has parked the job and ended the
// run: the handler returns it (as WaitingForChildrenError), and the job runs again when an event of one of
// its keys is pushed or the wait times out.
type WaitingForEventError struct {
	// Keys are the event keys the job waits for.
	Keys []string
	// Until is when the wait times out; zero for a wait with no timeout.
	Until time.Time
}

func (e *WaitingForEventError) Error() string {
	if e.Until.IsZero() {
		return fmt.Sprintf("waiting for event %s", strings.Join(e.Keys, ", "))
	}
	return fmt.Sprintf("waiting for event %s until %s", strings.Join(e.Keys, ", "), e.Until.Format(time.RFC3339))
}

// DelayedError, returned by a handler, runs its job again later without using an attempt: a durable sleep
// between the steps of a long job (BullMQ's moveToDelayed + DelayedError). The run ends, the job waits
// Delay in delayed (by the server's clock; the worker's slot and its group's are free meanwhile) and runs
// again with no attempt used and no redelivery flag. With HasData, the job's data becomes Data in the same
// step (a checkpoint the next run resumes from); data the server cannot store fails the attempt instead.
// Make one with Delayed or DelayedWithData.
type DelayedError struct {
	// Delay is how long the job waits, 0 to 10 years.
	Delay time.Duration
	// Data replaces the job's data when HasData is set ([]byte as raw bytes, anything else as JSON).
	Data    any
	HasData bool
}

func (e *DelayedError) Error() string {
	return fmt.Sprintf("run again in %s", e.Delay)
}

// Delayed makes a DelayedError that keeps the job's data; a negative delay counts as 0.
func Delayed(delay time.Duration) error {
	return &DelayedError{Delay: max(delay, 0)}
}

// DelayedWithData makes a DelayedError that replaces the job's data in the same step.
func DelayedWithData(delay time.Duration, data any) error {
	return &DelayedError{Delay: max(delay, 0), Data: data, HasData: true}
}
