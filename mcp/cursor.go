package mcp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// Pagination cursors are opaque to callers: a JSON position, sealed with an
// HMAC over the tenant, the list it pages and the position. A cursor from
// another tenant or another list, or an edited one, is refused (it could
// only ever page through the caller's own schema anyway, but it must not
// even be accepted).

type cursorKey []byte

func (k cursorKey) mac(tenantID, list string, payload []byte) []byte {
	m := hmac.New(sha256.New, k)
	m.Write([]byte(tenantID + "\x00" + list + "\x00"))
	m.Write(payload)
	return m.Sum(nil)[:16]
}

// Seal returns the cursor for position v of list, for this call's tenant.
func (c *Call) Seal(list string, v any) string {
	payload, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(payload) + "." +
		base64.RawURLEncoding.EncodeToString(c.cursors.mac(c.Tenant.ID, list, payload))
}

// Open decodes a cursor of list into v, or says it is not one of ours.
func (c *Call) Open(list, cursor string, v any) error {
	bad := invalidArgs("cursor is not one this tool returned; start again without a cursor")
	p, m, ok := strings.Cut(cursor, ".")
	payload, err1 := base64.RawURLEncoding.DecodeString(p)
	mac, err2 := base64.RawURLEncoding.DecodeString(m)
	if !ok || err1 != nil || err2 != nil || !hmac.Equal(mac, c.cursors.mac(c.Tenant.ID, list, payload)) {
		return bad
	}
	if json.Unmarshal(payload, v) != nil {
		return bad
	}
	return nil
}
