// Package agentpb is the agent's own status API on its unix socket
// (flatnet.agent.v1.Agent), generated from agent.proto by `make generate`.
// Edit agent.proto, not the generated files.
package agentpb
