package identity

import (
	"encoding/base64"
	"encoding/json"
	"strings"
)

// PeekJWT reads the alg of a compact JWS's header and the iss of its payload
// without verifying anything. It is for routing a token to the one verifier
// that may check it; nothing it returns may be trusted.
func PeekJWT(token string) (alg, iss string, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return "", "", false
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	var payload struct {
		Iss string `json:"iss"`
	}
	h, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	p, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	if err1 != nil || err2 != nil || json.Unmarshal(h, &hdr) != nil || json.Unmarshal(p, &payload) != nil {
		return "", "", false
	}
	return hdr.Alg, payload.Iss, true
}
