package queuemanager

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// Payload conventions (the same as the Python client's): a value travels as UTF-8 JSON in Payload.raw with
// content type application/json; []byte travels as it is with application/octet-stream; json.RawMessage
// is sent as the JSON text it holds. On the way back, data and results are bytes plus their content type
// (Job.Data, Job.ContentType): JSON text for JSON, decoded with Job.Decode.

const (
	// ContentTypeJSON marks JSON data and results.
	ContentTypeJSON = "application/json"
	// ContentTypeBytes marks opaque bytes.
	ContentTypeBytes = "application/octet-stream"
)

// encodePayload turns a job's data or a handler's result into a Payload; nil means none (JSON null).
func encodePayload(value any) (*pb.Payload, error) {
	switch v := value.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		if !json.Valid(v) {
			return nil, fmt.Errorf("the json.RawMessage is not valid JSON")
		}
		return &pb.Payload{Body: &pb.Payload_Raw{Raw: v}, ContentType: ContentTypeJSON}, nil
	case []byte:
		return &pb.Payload{Body: &pb.Payload_Raw{Raw: v}, ContentType: ContentTypeBytes}, nil
	default:
		text, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("the value cannot be sent as JSON: %w", err)
		}
		return &pb.Payload{Body: &pb.Payload_Raw{Raw: text}, ContentType: ContentTypeJSON}, nil
	}
}

// decodePayload returns a Payload's bytes and content type: JSON text for a json body.
func decodePayload(p *pb.Payload) ([]byte, string) {
	if p == nil {
		return nil, ""
	}
	switch body := p.Body.(type) {
	case *pb.Payload_Json:
		return valueJSON(body.Json), ContentTypeJSON
	case *pb.Payload_Raw:
		contentType := p.ContentType
		if contentType == "" {
			contentType = ContentTypeBytes
		}
		return body.Raw, contentType
	}
	return nil, ""
}

// isJSON reports whether a content type marks JSON: application/json, with or without parameters
// ("application/json; charset=utf-8"), as the Python client reads it.
func isJSON(contentType string) bool {
	return strings.HasPrefix(contentType, ContentTypeJSON)
}

// payloadValue is a Payload as a value that encodePayload sends back as JSON or bytes: json.RawMessage for
// JSON (any isJSON content type), []byte for any other content type (as the Python client's bytes; sent
// again, they go as application/octet-stream), nil for none.
func payloadValue(p *pb.Payload) any {
	body, contentType := decodePayload(p)
	if body == nil {
		return nil
	}
	if isJSON(contentType) {
		return json.RawMessage(body)
	}
	return body
}

// valueJSON is a protobuf Value as compact JSON text (nil stays nil).
func valueJSON(v *structpb.Value) []byte {
	if v == nil {
		return nil
	}
	text, err := protojson.Marshal(v)
	if err != nil {
		return nil
	}
	// protojson may add spaces at random (to keep people from depending on its output); compact it.
	var compact bytes.Buffer
	if json.Compact(&compact, text) != nil {
		return text
	}
	return compact.Bytes()
}

// jsonValue turns a Go value into a protobuf Value through its JSON encoding.
func jsonValue(v any) (*structpb.Value, error) {
	text, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("the value cannot be sent as JSON: %w", err)
	}
	value := &structpb.Value{}
	if err := protojson.Unmarshal(text, value); err != nil {
		return nil, fmt.Errorf("the value cannot be sent as JSON: %w", err)
	}
	return value, nil
}
