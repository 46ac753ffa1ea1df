package mcp

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// Allowed networks (issue 16 §3). An API key or a certificate map entry
// may name the source networks it may be used from
// (identity.Principal.AllowedNetworks); a request from any other client
// address is refused with HTTP 403 and a JSON-RPC error (codeNetworkDenied)
// and audited as DENIED with the address.
//
// The client address is the one every other rule uses (httpx.IPExtractor:
// the connection's peer, or the nearest untrusted X-Forwarded-For hop when
// the peer is in GATEHOUSE_TRUSTED_PROXIES), so a forwarded header from
// anyone else grants nothing.
//
// Where in the pipeline: after authentication and tenant placement (the
// networks are the credential's, and the refusal is recorded in the
// credential's tenant, where its admins look), before the rate limits and
// admission. A refused request must not consume the key's rate limit:
// whoever holds a copy of the key elsewhere could otherwise exhaust the
// allowance of the key's real user with requests that are refused anyway.
// What it costs is charged to the refused address instead, as a failed
// authentication (GATEHOUSE_AUTH_FAILURE_RATE), so a flood from one
// address is soon answered 429 before its credential is even looked at;
// and its audit records are aggregated per principal, tool and address
// each second, as rate-limited requests are, so a flood does not write a
// row per request. The check runs on every request, the validation
// cache's principals included (they carry the networks), so a change of a
// key's networks applies on its next call once the cache forgets the key
// (every replica, within a second: the store's invalidation notice).
//
// The answer is not a token problem: no WWW-Authenticate challenge (a
// client must not discard a good credential or start a sign-in), and it
// names the caller's own address but never the allowed networks, which
// would tell the holder of a stolen key where to use it from.
//
// Over stdio there is no network: the client is a process on this machine,
// so a restricted key is accepted there only if its networks include the
// loopback address (127.0.0.1 or ::1).

// codeNetworkDenied is the JSON-RPC error code of a request whose
// credential may not be used from the client's address (in the
// implementation-defined server range, next to the other refusals).
const codeNetworkDenied = -32032

// networkDeniedReason is the audit record's reason for such a request.
const networkDeniedReason = "the credential is not allowed from this network"

// networkAllowed reports whether caller's credential may be used from its
// client address.
func networkAllowed(caller *Caller) bool {
	return caller.Principal.AllowedNetworks.AllowsIP(caller.ClientIP)
}

// refuseNetwork answers a request whose credential may not be used from
// its client address: 403 with a JSON-RPC error for the request's id,
// counted (metrics, the address's failed authentications) and audited.
func (s *Server) refuseNetwork(c echo.Context, caller *Caller) error {
	what := peekRequest(c).what
	s.metrics.authFailures.WithLabelValues("network_not_allowed").Inc()
	s.chargeAuthFailure(c)
	s.audit.networkDenied(caller, what, networkDeniedReason)
	s.log.Info("request refused: the credential is not allowed from this network", "request_id", caller.RequestID,
		"subject", caller.Principal.Subject, "tenant", caller.Tenant.Key, "client_ip", caller.ClientIP)
	msg := networkDeniedMessage(caller.Principal, caller.ClientIP)
	w := c.Response()
	h := w.Header()
	h["Cache-Control"] = []string{"no-store"}
	h["Content-Type"] = []string{echo.MIMEApplicationJSON}
	b := make([]byte, 0, 256)
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = append(b, peekRequest(c).id...)
	b = append(b, `,"error":{"code":`...)
	b = strconv.AppendInt(b, codeNetworkDenied, 10)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, `,"data":{"client_ip":`...)
	b = appendJSONString(b, caller.ClientIP)
	b = append(b, "}}}\n"...)
	w.WriteHeader(http.StatusForbidden)
	_, err := w.Write(b)
	return err
}

// networkDeniedMessage says who may not call from where, in words a
// person can act on (never the credential, never the allowed networks).
func networkDeniedMessage(p *identity.Principal, ip string) string {
	who := "this credential"
	switch {
	case p.APIKeyID != "":
		who = "API key " + p.APIKeyID
	case p.Provider == "mtls":
		who = "the client certificate's service " + p.Name
	}
	return fmt.Sprintf("%s is not allowed from this network (your address is %s): it may be used only from the networks set for it; "+
		"call from one of them, or ask an admin of your organisation to add yours", who, ip)
}
