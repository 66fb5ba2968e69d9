package queuemanager

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// The wire format of encoded payloads (compressed, encrypted or both), the same in the Python, TypeScript
// and Go clients (docs/security.md, "Compressing and encrypting payloads"). An encoded payload is raw bytes
// whose content type names what was done to them, in order, and what they were:
//
//	application/vnd.qm.encoded; v=1; codecs=gzip,aes-256-gcm; kid=k1; inner=application/json
//
// v is the format's version; codecs lists the codecs in the order they were applied (decoding undoes them
// from the last); kid names the key of the encryption, and is there only with one; inner is the content
// type before, always last, so that it may hold ";" and "=" itself.

const (
	// ContentTypeEncoded starts the content type of a payload encoded by a client's codecs.
	ContentTypeEncoded = "application/vnd.qm.encoded"
	formatVersion      = "1"
	codecGzip          = "gzip"
	codecAES256GCM     = "aes-256-gcm"
	// The server refuses a content type over 200 characters (its payload.content_type limit).
	maxContentType = 200
	encodedPrefix  = ContentTypeEncoded + ";"
	innerParam     = "; inner="
)

// Key ids travel in the content type: short, and free of the characters that separate its parameters.
var keyIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// EncodedInfo is what an encoded payload's content type says (EncodedPayloadInfo).
type EncodedInfo struct {
	// Codecs are the codecs applied, in order ("gzip", "aes-256-gcm").
	Codecs []string
	// KeyID is the key id of the encryption ("" when not encrypted).
	KeyID string
	// Inner is the content type before encoding.
	Inner string
}

// isEncoded reports whether a content type marks an encoded payload.
func isEncoded(contentType string) bool {
	return strings.HasPrefix(contentType, encodedPrefix)
}

// EncodedPayloadInfo reads the content type of a payload this client could not decode (Job.ContentType of
// a client without codecs): ok is false when it is not an encoded payload's.
func EncodedPayloadInfo(contentType string) (info EncodedInfo, ok bool) {
	info, err := parseContentType(contentType)
	return info, err == nil
}

// buildContentType is the content type of a payload encoded by codecs (in the order applied), under keyID
// if any; an error when it would be longer than the server takes.
func buildContentType(codecs []string, keyID, inner string) (string, error) {
	key := ""
	if keyID != "" {
		key = "; kid=" + keyID
	}
	contentType := fmt.Sprintf("%s; v=%s; codecs=%s%s%s%s", ContentTypeEncoded, formatVersion,
		strings.Join(codecs, ","), key, innerParam, inner)
	if len(contentType) > maxContentType {
		return "", fmt.Errorf("the encoded payload's content type would be %d characters, over the server's %d: "+
			"shorten the key id or the content type %q", len(contentType), maxContentType, inner)
	}
	return contentType, nil
}

// parseContentType reads an encoded payload's content type.
func parseContentType(contentType string) (EncodedInfo, error) {
	rest, found := strings.CutPrefix(contentType, encodedPrefix)
	head, inner, hasInner := strings.Cut(rest, innerParam)
	if !found || !hasInner {
		return EncodedInfo{}, fmt.Errorf("%q is not an encoded payload's content type (no inner=)", contentType)
	}
	params := map[string]string{}
	for _, part := range strings.Split(head, ";") {
		name, value, eq := strings.Cut(strings.TrimSpace(part), "=")
		if _, twice := params[name]; !eq || twice {
			return EncodedInfo{}, fmt.Errorf("the encoded payload's content type %q is malformed", contentType)
		}
		params[name] = value
	}
	if v := params["v"]; v != formatVersion {
		if v == "" {
			v = "?"
		}
		return EncodedInfo{}, fmt.Errorf("the payload is encoded in format v=%s; this client reads v=%s (upgrade it)",
			v, formatVersion)
	}
	codecs := strings.Split(params["codecs"], ",")
	for i, c := range codecs {
		if (c != codecGzip && c != codecAES256GCM) || slices.Contains(codecs[:i], c) {
			return EncodedInfo{}, fmt.Errorf("the payload names codecs this client does not know: %q", params["codecs"])
		}
	}
	keyID := params["kid"]
	if slices.Contains(codecs, codecAES256GCM) != (keyID != "") || (keyID != "" && !keyIDPattern.MatchString(keyID)) {
		return EncodedInfo{}, fmt.Errorf("the encoded payload's key id is missing or malformed in %q", contentType)
	}
	for name := range params {
		if name != "v" && name != "codecs" && name != "kid" {
			return EncodedInfo{}, fmt.Errorf("the encoded payload's content type %q has unknown parameters", contentType)
		}
	}
	return EncodedInfo{Codecs: codecs, KeyID: keyID, Inner: inner}, nil
}
