package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// A tenant's documents are also MCP resources, gatehouse://documents/{id}
// (text/markdown). resources/read and resources/list pass the same steps as
// a tool call: the caller needs role viewer and scope mcp:read, the read
// runs in the caller's tenant, and the decision is audited in the same
// transaction (as "resources/read" or "resources/list"). The SDK lists only
// statically registered resources, the same for everyone, so resources/list
// is answered by receiving middleware with the caller's own documents.

const (
	documentURIPrefix = "gatehouse://documents/"
	markdownMIMEType  = "text/markdown"
	resourcePageSize  = 100
)

func documentURI(id string) string { return documentURIPrefix + id }

// privateAnswer marks an answer as the caller's own: no shared cache may keep it.
var privateAnswer = sdk.Cacheable{TTLMs: 0, CacheScope: "private"}

// registerResources adds the MCP resources of a tenant's workspace.
func (s *Server) registerResources() {
	s.sdk.AddResourceTemplate(&sdk.ResourceTemplate{
		Name:        "document",
		Title:       "Document",
		URITemplate: documentURIPrefix + "{id}",
		MIMEType:    markdownMIMEType,
		Description: "A markdown document of your organisation's workspace, by id (see resources/list, list_documents or search_documents).",
	}, s.readDocument)
	s.sdk.AddReceivingMiddleware(s.listDocuments)
}

func (s *Server) readDocument(ctx context.Context, req *sdk.ReadResourceRequest) (*sdk.ReadResourceResult, error) {
	uri := req.Params.URI
	args, _ := json.Marshal(req.Params)
	var doc *store.Document
	err := s.resourceCall(ctx, req.Extra, "resources/read", args, uri, func(ctx context.Context, c *Call) error {
		id, _ := strings.CutPrefix(uri, documentURIPrefix)
		var err error
		doc, err = store.FindDocument(ctx, c.Tx, id)
		return documentError(err, id)
	})
	if err != nil {
		return nil, err
	}
	return &sdk.ReadResourceResult{
		Cacheable: privateAnswer,
		Contents:  []*sdk.ResourceContents{{URI: uri, MIMEType: markdownMIMEType, Text: doc.Body}},
	}, nil
}

// listDocuments is receiving middleware answering resources/list with the
// caller's documents, newest first, paged with sealed cursors.
func (s *Server) listDocuments(next sdk.MethodHandler) sdk.MethodHandler {
	return func(ctx context.Context, method string, req sdk.Request) (sdk.Result, error) {
		lr, ok := req.(*sdk.ListResourcesRequest)
		if method != "resources/list" || !ok {
			return next(ctx, method, req)
		}
		var cursor string
		if lr.Params != nil {
			cursor = lr.Params.Cursor
		}
		args, _ := json.Marshal(lr.Params)
		res := &sdk.ListResourcesResult{Cacheable: privateAnswer, Resources: []*sdk.Resource{}}
		err := s.resourceCall(ctx, lr.Extra, "resources/list", args, "", func(ctx context.Context, c *Call) error {
			f := store.DocumentFilter{Limit: resourcePageSize}
			if cursor != "" {
				var pos store.DocumentPosition
				if err := c.Open("resources/list", cursor, &pos); err != nil || !store.IsUUID(pos.ID) {
					return errCursorRefused
				}
				f.After = &pos
			}
			docs, more, err := store.ListDocuments(ctx, c.Tx, f)
			if err != nil {
				return err
			}
			for _, d := range docs {
				res.Resources = append(res.Resources, documentResource(d))
			}
			if more {
				last := docs[len(docs)-1]
				res.NextCursor = c.Seal("resources/list", store.DocumentPosition{CreatedAt: last.CreatedAt, ID: last.ID})
			}
			return nil
		})
		if errors.Is(err, errResourceDenied) {
			return res, nil // nothing to list for this caller
		}
		if err != nil {
			return nil, err
		}
		return res, nil
	}
}

func documentResource(d *store.DocumentInfo) *sdk.Resource {
	r := &sdk.Resource{URI: documentURI(d.ID), Name: d.Title, Title: d.Title, MIMEType: markdownMIMEType, Size: int64(d.Size)}
	if len(d.Tags) > 0 {
		r.Description = "Tags: " + strings.Join(d.Tags, ", ")
	}
	return r
}

var errResourceDenied = &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest,
	Message: fmt.Sprintf("ACCESS DENIED: reading resources needs role %s or higher and scope %s", tenancy.Viewer, identity.ScopeRead)}

// resourceCall runs fn for the caller of a resource request like a tool
// call (Server.call): authorized, within the tool time limit, in the
// caller's tenant, with its audit record in the same transaction, or in a
// fresh one when fn fails. The error returned is ready for the wire:
// errResourceDenied, resource not found (for uri), invalid params, or an
// internal error naming the request id.
func (s *Server) resourceCall(ctx context.Context, extra *sdk.RequestExtra, method string, args []byte, uri string,
	fn func(context.Context, *Call) error) error {
	c, err := s.callerOf(ctx, extra)
	if err != nil {
		return err
	}
	if extra == nil || extra.TokenInfo == nil {
		if err := s.limitStdio(ctx, c, method); err != nil {
			return err
		}
	}
	defer s.awayFromGroupCommit(c)() // its record goes in its own transaction
	rec := s.audit.base(c, method, args)
	err = s.db.WithTenant(ctx, c.Tenant, func(tx pgx.Tx) error {
		if !c.Role.Allows(tenancy.Viewer) || !c.Principal.HasScope(identity.ScopeRead) {
			rec.Decision, rec.Reason = store.Denied, fmt.Sprintf("needs role %s and scope %s; has role %s", tenancy.Viewer, identity.ScopeRead, c.Role)
		} else {
			tctx, cancel := context.WithTimeout(ctx, s.opts.ToolTimeout)
			defer cancel()
			if err := fn(tctx, &Call{Caller: c, Tx: tx, cursors: s.cursorKey}); err != nil {
				return err
			}
			rec.Decision = store.Allowed
		}
		return store.InsertAudit(ctx, tx, rec)
	})
	if err == nil {
		s.audit.written(c.Tenant, rec)
		if rec.Decision == store.Denied {
			return errResourceDenied
		}
		return nil
	}
	res, outcome, internal := toolFailure(c.RequestID, err)
	if internal {
		s.log.Error("resource request failed", "method", method, "request_id", c.RequestID, "tenant", c.Tenant.Key, "subject", c.Principal.Subject, "error", err)
	}
	rec.Decision, rec.Reason = store.Failed, outcome
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if aerr := s.db.WithTenant(rctx, c.Tenant, func(tx pgx.Tx) error { return store.InsertAudit(rctx, tx, rec) }); aerr != nil {
		rec.Reason += "; audit record not stored"
		s.log.Error("audit record not stored", "method", method, "request_id", c.RequestID, "tenant", c.Tenant.Key, "error", aerr)
	}
	s.audit.written(c.Tenant, rec)
	msg := res.Content[0].(*sdk.TextContent).Text
	switch {
	case outcome == "unavailable":
		return s.reportOutage(c, databaseOutage(err))
	case outcome == "not_found" && uri != "":
		return sdk.ResourceNotFoundError(uri)
	case outcome == "invalid_arguments":
		return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: msg}
	}
	return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: msg}
}
