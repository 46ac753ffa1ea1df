// Package deploy holds Gatehouse's container and platform files: the
// Dockerfile, docker-compose.yml, the Railway config and the Helm chart
// (fly.toml and render.yaml sit at the repository root, where Fly and Render
// look for them). It has no Go code of its own; its tests parse every one of
// those files and check them against the code (environment variables, ports,
// routes, commands, shutdown timing), so they cannot drift from it.
package deploy
