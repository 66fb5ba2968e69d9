package queuemanager

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestFromRPCMapsEachCode(t *testing.T) {
	for code, sentinel := range sentinels {
		err := fromRPC(status.Error(code, "why"))
		if !errors.Is(err, sentinel) {
			t.Errorf("%s: errors.Is(%v, its sentinel) is false", codeName(code), err)
		}
		for other, otherSentinel := range sentinels {
			if other != code && errors.Is(err, otherSentinel) {
				t.Errorf("%s also matches the sentinel of %s", codeName(code), codeName(other))
			}
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != code || e.Message != "why" || err.Error() != codeName(code)+": why" {
			t.Errorf("%s: %#v", codeName(code), err)
		}
	}
	if err := fromRPC(status.Error(codes.DeadlineExceeded, "")); !errors.Is(err, context.DeadlineExceeded) ||
		err.Error() != "DEADLINE_EXCEEDED: deadline exceeded" {
		t.Errorf("DEADLINE_EXCEEDED: %v", err)
	}
	if fromRPC(nil) != nil {
		t.Error("fromRPC(nil) must be nil")
	}
}
