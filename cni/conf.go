package cni

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/flatnet-io/flatnet/wellknown"
)

// NetConf is flatnet's entry in a network configuration list.
type NetConf struct {
	types.PluginConf
	// AgentSocket is the node agent's API socket.
	AgentSocket string `json:"agentSocket,omitempty"`
	// AgentTimeout bounds each call to the agent, as a Go duration ("10s").
	AgentTimeout string `json:"agentTimeout,omitempty"`
	// MTU of both ends of the veth; 0 means the MTU of the node's uplink (the
	// device of its default route), or 1500 when it has none.
	MTU int `json:"mtu,omitempty"`

	timeout time.Duration
}

// Defaults for what a configuration leaves out.
const (
	DefaultAgentTimeout = 10 * time.Second
)

// Plugin-specific CNI error codes (100 and up are a plugin's own).
const (
	// ErrPoolExhausted: no address is left for the pod in the pools.
	ErrPoolExhausted = 101
)

// parseConf decodes and checks stdin. Its errors are CNI errors: 6 when stdin is
// not JSON, 7 when a value is wrong.
func parseConf(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "failed to decode network configuration", err.Error())
	}
	bad := func(format string, args ...any) error {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid network configuration", fmt.Sprintf(format, args...))
	}
	if conf.IPAM.Type != "" {
		return nil, bad("ipam: flatnet allocates through its node agent; remove the %q ipam section", conf.IPAM.Type)
	}
	if conf.AgentSocket == "" {
		conf.AgentSocket = wellknown.AgentSocket
	}
	if !filepath.IsAbs(conf.AgentSocket) {
		return nil, bad("agentSocket %q: must be an absolute path", conf.AgentSocket)
	}
	conf.timeout = DefaultAgentTimeout
	if conf.AgentTimeout != "" {
		d, err := time.ParseDuration(conf.AgentTimeout)
		if err != nil || d <= 0 {
			return nil, bad("agentTimeout %q: want a positive duration such as \"10s\"", conf.AgentTimeout)
		}
		conf.timeout = d
	}
	if conf.MTU < 0 || conf.MTU > 65535 {
		return nil, bad("mtu %d: want 0 (the uplink's) up to 65535", conf.MTU)
	}
	return conf, nil
}

// podArgs are the CNI_ARGS a Kubernetes runtime passes.
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive // the name is the wire key
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive
}

func parseArgs(args string) (namespace, pod string, err error) {
	a := podArgs{}
	a.IgnoreUnknown = true
	if err := types.LoadArgs(args, &a); err != nil {
		return "", "", types.NewError(types.ErrInvalidEnvironmentVariables, "invalid CNI_ARGS", err.Error())
	}
	return string(a.K8S_POD_NAMESPACE), string(a.K8S_POD_NAME), nil
}
