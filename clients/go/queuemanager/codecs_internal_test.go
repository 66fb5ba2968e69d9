package queuemanager

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// codecVectors are the golden vectors all three clients decode (tests/codec_vectors.json).
type codecVectors struct {
	Keys   map[string]string `json:"keys"`
	Decode []struct {
		Name        string `json:"name"`
		ContentType string `json:"content_type"`
		Raw         string `json:"raw"`
		Inner       string `json:"inner"`
		Plain       string `json:"plain"`
	} `json:"decode"`
	Refuse []struct {
		Name        string `json:"name"`
		ContentType string `json:"content_type"`
		Raw         string `json:"raw"`
		Error       string `json:"error"`
	} `json:"refuse"`
}

func rawPayload(body []byte, contentType string) *pb.Payload {
	return &pb.Payload{Body: &pb.Payload_Raw{Raw: body}, ContentType: contentType}
}

func mustChain(t *testing.T, codecs ...PayloadCodec) *codecChain {
	t.Helper()
	chain, err := newCodecChain(codecs)
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

func TestCodecGoldenVectorsDecodeAndBadOnesAreRefusedNamingTheKey(t *testing.T) {
	text, err := os.ReadFile("../../../tests/codec_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v codecVectors
	if err := json.Unmarshal(text, &v); err != nil {
		t.Fatal(err)
	}
	keys := map[string][]byte{}
	for id, k := range v.Keys {
		if keys[id], err = DecodeKey(k); err != nil {
			t.Fatal(err)
		}
	}
	aes, err := NewAesGcmCodec(keys, "k1")
	if err != nil {
		t.Fatal(err)
	}
	chain := mustChain(t, aes)
	b64 := base64.StdEncoding.DecodeString
	for _, vec := range v.Decode {
		body, _ := b64(vec.Raw)
		p := rawPayload(body, vec.ContentType)
		if err := chain.decode(p); err != nil {
			t.Fatalf("%s: %v", vec.Name, err)
		}
		want, _ := b64(vec.Plain)
		if !bytes.Equal(p.GetRaw(), want) || p.GetContentType() != vec.Inner {
			t.Errorf("%s: decoded %q (%s), want %q (%s)", vec.Name, p.GetRaw(), p.GetContentType(), want, vec.Inner)
		}
	}
	for _, vec := range v.Refuse {
		body, _ := b64(vec.Raw)
		err := chain.decode(rawPayload(body, vec.ContentType))
		if !errors.Is(err, ErrPayloadCodec) || !strings.Contains(err.Error(), vec.Error) {
			t.Errorf("%s: got %v, want a payload codec error naming %q", vec.Name, err, vec.Error)
		}
	}
}

func TestCodecSealsWithAFreshNonceAndRefusesAFlippedByte(t *testing.T) {
	key := make([]byte, 32)
	aes, _ := NewAesGcmCodec(map[string][]byte{"k1": key}, "")
	chain := mustChain(t, aes)
	a, b := rawPayload([]byte(`{"a":1}`), ContentTypeJSON), rawPayload([]byte(`{"a":1}`), ContentTypeJSON)
	_ = chain.encode(a)
	_ = chain.encode(b)
	if want := "application/vnd.qm.encoded; v=1; codecs=aes-256-gcm; kid=k1; inner=application/json"; a.GetContentType() != want {
		t.Fatalf("content type %q, want %q", a.GetContentType(), want)
	}
	if bytes.Equal(a.GetRaw()[:12], b.GetRaw()[:12]) || len(a.GetRaw()) != 12+7+16 {
		t.Fatalf("two payloads share a nonce, or the body is not nonce+ciphertext+tag: %x", a.GetRaw())
	}
	flipped := bytes.Clone(a.GetRaw())
	flipped[15] ^= 1
	err := chain.decode(rawPayload(flipped, a.GetContentType()))
	if !errors.Is(err, ErrPayloadCodec) || !strings.Contains(err.Error(), "under key id 'k1' failed authentication") {
		t.Fatalf("a flipped byte: %v", err)
	}
	relabelled := strings.Replace(a.GetContentType(), "inner=application/json", "inner=text/plain", 1)
	if err := chain.decode(rawPayload(a.GetRaw(), relabelled)); !errors.Is(err, ErrPayloadCodec) {
		t.Fatalf("a swapped inner type: %v", err)
	}
	if err := chain.decode(a); err != nil || string(a.GetRaw()) != `{"a":1}` || a.GetContentType() != ContentTypeJSON {
		t.Fatalf("round trip: %v %q %s", err, a.GetRaw(), a.GetContentType())
	}
}

func TestCodecCompressesFromItsThresholdWhenThatSavesBytes(t *testing.T) {
	chain := mustChain(t, NewGzipCodec(100))
	noiseBody := make([]byte, 4000)
	_, _ = rand.Read(noiseBody)
	small := rawPayload(bytes.Repeat([]byte("x"), 99), ContentTypeJSON)
	big := rawPayload(bytes.Repeat([]byte("x"), 100), ContentTypeJSON)
	noise := rawPayload(noiseBody, "image/png")
	for _, p := range []*pb.Payload{small, big, noise} {
		if err := chain.encode(p); err != nil {
			t.Fatal(err)
		}
	}
	if small.GetContentType() != ContentTypeJSON || noise.GetContentType() != "image/png" {
		t.Fatalf("under the threshold or incompressible must go as they are: %s, %s", small.GetContentType(), noise.GetContentType())
	}
	if big.GetContentType() != "application/vnd.qm.encoded; v=1; codecs=gzip; inner=application/json" || len(big.GetRaw()) >= 100 {
		t.Fatalf("100 bytes must be compressed: %s, %d bytes", big.GetContentType(), len(big.GetRaw()))
	}
	if err := chain.decode(big); err != nil || string(big.GetRaw()) != strings.Repeat("x", 100) {
		t.Fatalf("round trip: %v", err)
	}
	bomb := rawPayload(make([]byte, 100_000), ContentTypeJSON)
	_ = mustChain(t, NewGzipCodec(0)).encode(bomb)
	err := mustChain(t, &GzipCodec{MaxInflated: 1000}).decode(bomb)
	if !errors.Is(err, ErrPayloadCodec) || !strings.Contains(err.Error(), "more than 1,000 bytes") {
		t.Fatalf("a gzip bomb: %v", err)
	}
}

func TestCodecSettingsAreCheckedWithWhatToFix(t *testing.T) {
	if _, err := NewAesGcmCodec(map[string][]byte{"k1": make([]byte, 5)}, ""); err == nil ||
		!strings.Contains(err.Error(), "key 'k1' must be 32 bytes") {
		t.Errorf("a short key: %v", err)
	}
	two := map[string][]byte{"k1": make([]byte, 32), "k2": make([]byte, 32)}
	if _, err := NewAesGcmCodec(two, ""); err == nil || !strings.Contains(err.Error(), "say which is active") {
		t.Errorf("two keys without an active one: %v", err)
	}
	aes, _ := NewAesGcmCodec(two, "k2")
	if _, err := newCodecChain([]PayloadCodec{aes, NewGzipCodec(1)}); err == nil {
		t.Error("gzip after encryption must be refused")
	}
	k := base64.StdEncoding.EncodeToString(make([]byte, 32))
	t.Setenv("QM_CODEC_KEYS", "k1:"+k+", k2:"+k)
	t.Setenv("QM_CODEC_ACTIVE_KEY", "k2")
	t.Setenv("QM_CODEC_GZIP_MIN_SIZE", "512")
	codecs, err := CodecsFromEnv()
	if err != nil || len(codecs) != 2 || codecs[0].(*GzipCodec).MinSize != 512 || codecs[1].(*AesGcmCodec).Active() != "k2" {
		t.Fatalf("from the environment: %v %#v", err, codecs)
	}
	t.Setenv("QM_CODEC_ACTIVE_KEY", "")
	if _, err := CodecsFromEnv(); err == nil || !strings.Contains(err.Error(), "QM_CODEC_KEYS / QM_CODEC_ACTIVE_KEY") {
		t.Errorf("two keys without an active one in the environment: %v", err)
	}
}

func TestCodecDecodesACopyAsAJSONValueAndAsLuaRewroteIt(t *testing.T) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	sealer, err := NewAesGcmCodec(map[string][]byte{"k1": key}, "")
	if err != nil {
		t.Fatal(err)
	}
	chain := mustChain(t, sealer)
	original := rawPayload([]byte(`{"x":1}`), ContentTypeJSON)
	if err := chain.encode(original); err != nil {
		t.Fatal(err)
	}
	copied, _ := json.Marshal(map[string]string{
		"original_queue": "q", "original_job_id": "1", "original_name": "n",
		"original_data":         base64.StdEncoding.EncodeToString(original.GetRaw()),
		"original_content_type": original.ContentType,
	})
	value, err := jsonValue(json.RawMessage(copied))
	if err != nil {
		t.Fatal(err)
	}
	asValue := &pb.Payload{Body: &pb.Payload_Json{Json: value}, ContentType: ContentTypeJSON}
	// Lua's cjson writes "/" as "\/": the copy a redrive rewrote still decodes.
	escaped := rawPayload(bytes.ReplaceAll(copied, []byte("/"), []byte(`\/`)), ContentTypeJSON)
	for _, p := range []*pb.Payload{asValue, escaped} {
		if err := chain.decode(p); err != nil {
			t.Fatal(err)
		}
		body, _ := decodePayload(p)
		var read struct {
			Data        json.RawMessage `json:"original_data"`
			ContentType string          `json:"original_content_type"`
		}
		if err := json.Unmarshal(body, &read); err != nil || string(read.Data) != `{"x":1}` || read.ContentType != ContentTypeJSON {
			t.Fatalf("the copy must read decoded: %s (%v)", body, err)
		}
	}
	other := rawPayload([]byte(`{"note":"vnd.qm.encoded"}`), ContentTypeJSON)
	if err := chain.decode(other); err != nil || string(other.GetRaw()) != `{"note":"vnd.qm.encoded"}` {
		t.Fatalf("a JSON body that is no copy must be left alone: %s (%v)", other.GetRaw(), err)
	}
	otherKey, err := NewAesGcmCodec(map[string][]byte{"k2": make([]byte, 32)}, "")
	if err != nil {
		t.Fatal(err)
	}
	err = mustChain(t, otherKey).decode(rawPayload(copied, ContentTypeJSON))
	if !errors.Is(err, ErrPayloadCodec) || !strings.Contains(err.Error(), "key id 'k1', which this client does not hold") {
		t.Fatalf("a copy under another key must be refused naming it: %v", err)
	}
}

func TestDecodeKeyRefusesTextThatIsNotBase64SayingWhatAKeyIs(t *testing.T) {
	for _, text := range []string{"!!", "abc", "a b="} {
		_, err := DecodeKey(text)
		want := "key is not valid base64: a key must be 32 bytes (AES-256) written as base64"
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("DecodeKey(%q): %v, want an error starting %q", text, err, want)
		}
		var corrupt base64.CorruptInputError
		if !errors.As(err, &corrupt) {
			t.Fatalf("DecodeKey(%q): %v does not wrap base64's error", text, err)
		}
	}
	key, err := DecodeKey(base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)))
	if err != nil || len(key) != 32 {
		t.Fatalf("a URL-safe key: %v, %d bytes", err, len(key))
	}
}
