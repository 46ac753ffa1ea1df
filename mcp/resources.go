package mcp

// registerResources adds the MCP resources of a tenant's workspace (being
// built: documents as gatehouse://documents/{id}).
func (s *Server) registerResources() {}
