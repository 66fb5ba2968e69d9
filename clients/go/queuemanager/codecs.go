package queuemanager

import (
	"bytes"
	"compress/gzip"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// Client-side payload codecs: job data and results compressed (gzip) and encrypted (AES-256-GCM) before they
// leave this process, and decoded when they come back; the server stores them byte for byte. A client made
// with codecs (WithCodecs, or QM_CODEC_KEYS) encodes every payload it sends (adds, workflow steps,
// schedules, retries, redrives, data updates; its workers' results, checkpoints and children) and decodes
// every payload it reads (jobs, results, parents' and children's outcomes, workflow steps). A payload that is
// not encoded passes through either way. The wire format is in payload_format.go and docs/security.md.

const (
	keySize   = 32 // AES-256
	nonceSize = 12 // 96 bits, GCM's own size: a random one per payload
	tagSize   = 16
	// DefaultMaxInflated is the most bytes a gzip body may inflate to (GzipCodec.MaxInflated): the server
	// caps a payload's size, but not what it inflates to.
	DefaultMaxInflated = 64 << 20
)

// ErrPayloadCodec: a payload cannot be decoded: under a key id this client does not hold, altered since it
// was encoded (authentication failed), or not a readable encoded payload. The *Error (code DATA_LOSS: this
// client cannot read what the server holds) names the key id.
var ErrPayloadCodec = errors.New("payload cannot be decoded")

func init() { sentinels[codes.DataLoss] = ErrPayloadCodec }

// codecError is the *Error of a payload that cannot be decoded.
func codecError(format string, args ...any) error {
	return &Error{Code: codes.DataLoss, Message: fmt.Sprintf(format, args...)}
}

// PayloadCodec is a codec of a chain: *GzipCodec and *AesGcmCodec, each at most once, gzip first.
type PayloadCodec interface {
	codecName() string
}

// GzipCodec compresses payloads of at least MinSize bytes with gzip, when that makes them smaller.
type GzipCodec struct {
	// MinSize is the smallest body compressed, in bytes; smaller ones go as they are.
	MinSize int
	// MaxInflated is the most bytes a body may inflate to when read; 0 means DefaultMaxInflated.
	MaxInflated int
}

// NewGzipCodec compresses bodies of at least minSize bytes (1024 is a good start).
func NewGzipCodec(minSize int) *GzipCodec { return &GzipCodec{MinSize: minSize} }

func (g *GzipCodec) codecName() string { return codecGzip }

// compress is the gzip of body, or nil when it is under the threshold or would not get smaller.
func (g *GzipCodec) compress(body []byte) []byte {
	if len(body) < g.MinSize {
		return nil
	}
	var out bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&out, 6) // a valid level: no error
	_, _ = zw.Write(body)                 // writes to a bytes.Buffer do not fail
	_ = zw.Close()
	if out.Len() >= len(body) {
		return nil
	}
	return out.Bytes()
}

// inflate is a gzip body's bytes, at most limit of them.
func inflate(body []byte, limit int) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, codecError("the payload's gzip body cannot be read: %v", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, int64(limit)+1))
	if err != nil {
		return nil, codecError("the payload's gzip body cannot be read: %v", err)
	}
	if len(out) > limit {
		return nil, codecError("the payload inflates to more than %s bytes; refused", thousands(limit))
	}
	return out, nil
}

// AesGcmCodec encrypts payloads with AES-256-GCM under the active key and decrypts them under any key it
// holds. Each payload gets a random 96-bit nonce; its content type (codecs, key id, inner type) is
// authenticated with it. Rotate keys by adding the new one and making it active: payloads under the old
// ids decode while their keys are listed.
type AesGcmCodec struct {
	active string
	ids    []string
	aeads  map[string]cipher.AEAD
}

// NewAesGcmCodec holds keys (key id, 1-64 of A-Z a-z 0-9 . _ -, to its 32 bytes: DecodeKey reads base64)
// and encrypts under the active one ("" with one key: that one).
func NewAesGcmCodec(keys map[string][]byte, active string) (*AesGcmCodec, error) {
	if len(keys) == 0 {
		return nil, errors.New("AesGcmCodec needs at least one key")
	}
	c := &AesGcmCodec{aeads: map[string]cipher.AEAD{}}
	for id, key := range keys {
		if !keyIDPattern.MatchString(id) {
			return nil, fmt.Errorf("key id %q must be 1-64 of A-Z a-z 0-9 . _ -", id)
		}
		if len(key) != keySize {
			return nil, fmt.Errorf("key '%s' must be %d bytes (AES-256), not %d", id, keySize, len(key))
		}
		block, _ := aes.NewCipher(key) // a 32-byte key: no error
		aead, _ := cipher.NewGCM(block)
		c.aeads[id] = aead
		c.ids = append(c.ids, id)
	}
	slices.Sort(c.ids)
	if active == "" {
		if len(keys) != 1 {
			return nil, fmt.Errorf("AesGcmCodec holds %d keys: say which is active", len(keys))
		}
		active = c.ids[0]
	}
	if c.aeads[active] == nil {
		return nil, fmt.Errorf("the active key id %q is not among the keys (%s)", active, strings.Join(c.ids, ", "))
	}
	c.active = active
	return c, nil
}

// DecodeKey reads a key given as base64 (standard or URL-safe, with its padding). Text that is not base64
// gets an error saying what a key is, wrapping base64's own, which named only a byte offset.
func DecodeKey(text string) ([]byte, error) {
	text = strings.NewReplacer("-", "+", "_", "/").Replace(strings.TrimSpace(text))
	key, err := base64.StdEncoding.Strict().DecodeString(text)
	if err != nil {
		return nil, fmt.Errorf("key is not valid base64: a key must be %d bytes (AES-256) written as base64, "+
			"standard or URL-safe, with its padding (%w)", keySize, err)
	}
	return key, nil
}

func (c *AesGcmCodec) codecName() string { return codecAES256GCM }

// Active is the id of the key new payloads are encrypted under.
func (c *AesGcmCodec) Active() string { return c.active }

// KeyIDs are the ids of the keys held, sorted.
func (c *AesGcmCodec) KeyIDs() []string { return slices.Clone(c.ids) }

// seal is the nonce, ciphertext and tag of body under the active key; contentType is the associated data.
func (c *AesGcmCodec) seal(body []byte, contentType string) []byte {
	nonce := make([]byte, nonceSize, nonceSize+len(body)+tagSize)
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails
	return c.aeads[c.active].Seal(nonce, nonce, body, []byte(contentType))
}

// open undoes seal under key keyID, checking that neither the bytes nor the content type changed.
func (c *AesGcmCodec) open(body []byte, keyID, contentType string) ([]byte, error) {
	aead := c.aeads[keyID]
	if aead == nil {
		return nil, codecError("the payload is encrypted under key id '%s', which this client does not hold (it holds '%s')",
			keyID, strings.Join(c.ids, "', '"))
	}
	if len(body) < nonceSize+tagSize {
		return nil, codecError("the payload under key id '%s' is too short to be AES-GCM", keyID)
	}
	plain, err := aead.Open(nil, body[:nonceSize], body[nonceSize:], []byte(contentType))
	if err != nil {
		return nil, codecError("the payload under key id '%s' failed authentication: it or its content type was "+
			"altered, or it was encrypted under another key with that id", keyID)
	}
	return plain, nil
}

// codecChain is the codecs of one client, applied to every Payload of the messages it sends and receives.
type codecChain struct {
	gzip   *GzipCodec
	aes    *AesGcmCodec
	codecs []PayloadCodec
}

// newCodecChain checks the order of codecs; nil when there are none.
func newCodecChain(codecs []PayloadCodec) (*codecChain, error) {
	chain := &codecChain{codecs: codecs}
	for _, codec := range codecs {
		switch c := codec.(type) {
		case *GzipCodec:
			if chain.gzip != nil || chain.aes != nil {
				return nil, errors.New("codecs: GzipCodec at most once, and before AesGcmCodec")
			}
			chain.gzip = c
		case *AesGcmCodec:
			if chain.aes != nil {
				return nil, errors.New("codecs: AesGcmCodec at most once")
			}
			chain.aes = c
		default:
			return nil, errors.New("codecs: expected a *GzipCodec or an *AesGcmCodec")
		}
	}
	if len(codecs) == 0 {
		return nil, nil
	}
	return chain, nil
}

// encode encodes a Payload in place; one already encoded, or unset, is left as it is.
func (c *codecChain) encode(p *pb.Payload) error {
	if p == nil || p.Body == nil || isEncoded(p.GetContentType()) {
		return nil
	}
	var body []byte
	var inner string
	switch b := p.Body.(type) {
	case *pb.Payload_Json:
		body, inner = valueJSON(b.Json), ContentTypeJSON
	case *pb.Payload_Raw:
		body, inner = b.Raw, p.GetContentType()
		if inner == "" {
			inner = ContentTypeBytes
		}
	}
	var applied []string
	if c.gzip != nil {
		if packed := c.gzip.compress(body); packed != nil {
			body, applied = packed, append(applied, codecGzip)
		}
	}
	keyID := ""
	if c.aes != nil {
		applied, keyID = append(applied, codecAES256GCM), c.aes.active
	}
	if len(applied) == 0 {
		return nil
	}
	contentType, err := buildContentType(applied, keyID, inner)
	if err != nil {
		return err
	}
	if c.aes != nil {
		body = c.aes.seal(body, contentType)
	}
	p.Body, p.ContentType = &pb.Payload_Raw{Raw: body}, contentType
	return nil
}

// decode decodes a Payload in place; one not encoded is left as it is. A dead-letter copy's JSON holding an
// encoded original (see decodeCopy) is rewritten with the original decoded.
func (c *codecChain) decode(p *pb.Payload) error {
	raw, isRaw := p.GetBody().(*pb.Payload_Raw)
	contentType := p.GetContentType()
	if _, isValue := p.GetBody().(*pb.Payload_Json); isValue || (isRaw && isJSON(contentType)) {
		return c.decodeCopy(p)
	}
	if !isRaw || !isEncoded(contentType) {
		return nil
	}
	info, err := parseContentType(contentType)
	if err != nil {
		return codecError("%s", err.Error())
	}
	body := raw.Raw
	for i := len(info.Codecs) - 1; i >= 0; i-- {
		if info.Codecs[i] == codecAES256GCM {
			if c.aes == nil {
				return codecError("the payload is encrypted under key id '%s'; this client has no AesGcmCodec", info.KeyID)
			}
			if body, err = c.aes.open(body, info.KeyID, contentType); err != nil {
				return err
			}
			continue
		}
		limit := DefaultMaxInflated
		if c.gzip != nil && c.gzip.MaxInflated > 0 {
			limit = c.gzip.MaxInflated
		}
		if body, err = inflate(body, limit); err != nil {
			return err
		}
	}
	p.Body, p.ContentType = &pb.Payload_Raw{Raw: body}, info.Inner
	return nil
}

// encodedMark is in every JSON body holding an encoded payload's content type (the server's JSON of a
// dead-letter copy writes it whole, a Lua rewrite of the copy as "application\/vnd..."): a cheap test that
// spares the parse of every other JSON payload read.
var encodedMark = []byte("vnd.qm.encoded")

// decodeCopy decodes the original inside a dead-letter copy's JSON, in place. The server copies a job that
// failed for good as JSON it writes itself: the original's bytes as base64 text in original_data, its content
// type in original_content_type; so an encoded original stays encoded inside a copy whose own payload is plain
// JSON. Every read of the copy (GetJob, WaitForJob, retries, searches, listings, a worker of the dead-letter
// queue) meets it here, so the copy reads as that of a plain original: the data decoded (JSON as JSON, other
// types as base64 again) under its inner content type. Anything else is left as it is.
func (c *codecChain) decodeCopy(p *pb.Payload) error {
	var text []byte
	switch body := p.GetBody().(type) {
	case *pb.Payload_Json:
		field := body.Json.GetStructValue().GetFields()["original_content_type"]
		if !isEncoded(field.GetStringValue()) {
			return nil
		}
		text = valueJSON(body.Json)
	case *pb.Payload_Raw:
		if !bytes.Contains(body.Raw, encodedMark) {
			return nil
		}
		text = body.Raw
	}
	decoded, err := c.decodedCopy(text)
	if decoded == nil || err != nil {
		return err
	}
	if _, isValue := p.GetBody().(*pb.Payload_Json); isValue {
		value := &structpb.Value{}
		if err := protojson.Unmarshal(decoded, value); err != nil {
			return codecError("the dead-letter copy cannot be read back as a JSON value: %s", err.Error())
		}
		p.Body = &pb.Payload_Json{Json: value}
		return nil
	}
	p.Body = &pb.Payload_Raw{Raw: decoded}
	return nil
}

// decodedCopy is a copy's JSON with its encoded original decoded; nil when it holds no encoded original.
func (c *codecChain) decodedCopy(text []byte) ([]byte, error) {
	var copyFields map[string]json.RawMessage
	if json.Unmarshal(text, &copyFields) != nil {
		return nil, nil
	}
	var contentType, data string
	if json.Unmarshal(copyFields["original_content_type"], &contentType) != nil || !isEncoded(contentType) ||
		json.Unmarshal(copyFields["original_data"], &data) != nil {
		return nil, nil
	}
	body, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		return nil, nil
	}
	original := &pb.Payload{Body: &pb.Payload_Raw{Raw: body}, ContentType: contentType}
	if err := c.decode(original); err != nil {
		return nil, err
	}
	plain := original.GetRaw()
	if !isJSON(original.ContentType) {
		plain, _ = json.Marshal(base64.StdEncoding.EncodeToString(plain))
	} else if !json.Valid(plain) {
		return nil, codecError("the dead-letter copy's original data decodes to bytes that are not the %s it names",
			original.ContentType)
	}
	inner, _ := json.Marshal(original.ContentType)
	copyFields["original_data"], copyFields["original_content_type"] = plain, inner
	return json.Marshal(copyFields)
}

func (c *codecChain) encodeMessage(m proto.Message) error { return walk(m.ProtoReflect(), c.encode) }
func (c *codecChain) decodeMessage(m proto.Message) error { return walk(m.ProtoReflect(), c.decode) }

// refuseResultConditions refuses a workflow whose RunIf reads a step's result when the client has codecs:
// its workers encode results the same way, and the server, which cannot read them, would judge the
// condition on the encoded bytes and skip or run the step wrongly, silently. Conditions on an error are fine.
func refuseResultConditions(steps []*pb.WorkflowStep) error {
	for _, step := range steps {
		for _, c := range step.GetRunIf() {
			if c.GetSource() != pb.ConditionSource_CONDITION_SOURCE_ERROR {
				key := step.GetKey()
				if key == "" {
					key = step.GetJobName()
				}
				return fmt.Errorf("workflow step '%s': RunIf on a result cannot work with payload codecs (the server "+
					"cannot read encoded results); decide in the step's handler instead, or use a client without codecs", key)
			}
		}
		if err := refuseResultConditions(step.GetOnSuccess()); err != nil {
			return err
		}
		if err := refuseResultConditions(step.GetOnFailure()); err != nil {
			return err
		}
	}
	return nil
}

// CodecsFromEnv is the codecs the environment configures: QM_CODEC_KEYS="k1:BASE64,k2:BASE64" gives an
// AesGcmCodec whose active key is QM_CODEC_ACTIVE_KEY (may be left out with one key);
// QM_CODEC_GZIP_MIN_SIZE=1024 a GzipCodec before it. Neither set: none. A client without WithCodecs uses these.
func CodecsFromEnv() ([]PayloadCodec, error) {
	var out []PayloadCodec
	if minSize := strings.TrimSpace(os.Getenv("QM_CODEC_GZIP_MIN_SIZE")); minSize != "" {
		n, err := strconv.Atoi(minSize)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("QM_CODEC_GZIP_MIN_SIZE must be a number of bytes, not %q", minSize)
		}
		out = append(out, NewGzipCodec(n))
	}
	spec := strings.TrimSpace(os.Getenv("QM_CODEC_KEYS"))
	active := strings.TrimSpace(os.Getenv("QM_CODEC_ACTIVE_KEY"))
	if spec == "" {
		if active != "" {
			return nil, errors.New("QM_CODEC_ACTIVE_KEY is set without QM_CODEC_KEYS")
		}
		return out, nil
	}
	keys := map[string][]byte{}
	for _, item := range strings.Split(spec, ",") {
		id, text, ok := strings.Cut(strings.TrimSpace(item), ":")
		if _, twice := keys[id]; !ok || twice {
			return nil, errors.New("QM_CODEC_KEYS must be 'id:BASE64,id:BASE64', each id once")
		}
		key, err := DecodeKey(text)
		if err != nil {
			return nil, fmt.Errorf("QM_CODEC_KEYS: key '%s' is not valid base64", id)
		}
		keys[id] = key
	}
	codec, err := NewAesGcmCodec(keys, active)
	if err != nil {
		return nil, fmt.Errorf("QM_CODEC_KEYS / QM_CODEC_ACTIVE_KEY: %w", err)
	}
	return append(out, codec), nil
}

// thousands writes n with commas, as the other clients' messages do ("1,000").
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
