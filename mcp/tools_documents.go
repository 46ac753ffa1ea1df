package mcp

// documentTools are the documents of a tenant's workspace (being built).
func documentTools() []*Tool { return nil }
