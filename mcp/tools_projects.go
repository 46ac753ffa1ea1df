package mcp

// projectTools are the projects of a tenant's workspace (being built).
func projectTools() []*Tool { return nil }
