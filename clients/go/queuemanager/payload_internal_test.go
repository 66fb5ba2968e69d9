package queuemanager

import (
	"encoding/json"
	"testing"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

func TestPayloadValueReadsAsThePythonClient(t *testing.T) {
	raw := func(body, contentType string) *pb.Payload {
		return &pb.Payload{Body: &pb.Payload_Raw{Raw: []byte(body)}, ContentType: contentType}
	}
	for _, contentType := range []string{ContentTypeJSON, "application/json; charset=utf-8"} {
		got, ok := payloadValue(raw(`{"a":1}`, contentType)).(json.RawMessage)
		if !ok || string(got) != `{"a":1}` {
			t.Errorf("%q data must read as JSON: %#v", contentType, payloadValue(raw(`{"a":1}`, contentType)))
		}
	}
	for _, contentType := range []string{ContentTypeBytes, "text/csv", ""} {
		got, ok := payloadValue(raw("a,b", contentType)).([]byte)
		if !ok || string(got) != "a,b" {
			t.Errorf("%q data must read as bytes: %#v", contentType, payloadValue(raw("a,b", contentType)))
		}
	}
	if payloadValue(nil) != nil {
		t.Error("no payload must read as nil")
	}
}
