package agent

// Version is the agent's version as flatnet_build_info reports it;
// cmd/flatnet-agent sets it from what the build stamped.
var Version = "dev"
