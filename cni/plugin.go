package cni

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/flatnet-io/flatnet/agent/agentclient"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
)

// SupportedVersions are the CNI specification versions the plugin speaks.
var SupportedVersions = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// Funcs returns the plugin's verbs for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus}
}

// podAddr is one address the agent gave the pod.
type podAddr struct {
	prefix  netip.Prefix // the pod's address as a host prefix
	gateway netip.Addr   // link-local
}

// agent is a connection to the node's flatnet agent.
type agent struct {
	*agentclient.Client
	conf *NetConf
}

func dialAgent(conf *NetConf) (*agent, error) {
	c, err := agentclient.Dial(conf.AgentSocket)
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "flatnet agent unavailable", err.Error())
	}
	return &agent{Client: c, conf: conf}, nil
}

func (a *agent) close() { _ = a.Close() }

func (a *agent) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), a.conf.timeout)
}

func cmdAdd(args *skel.CmdArgs) (err error) {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	namespace, pod, err := parseArgs(args.Args)
	if err != nil {
		return err
	}
	podNS, err := openPodNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	if err := ifNameFree(podNS, args.IfName); err != nil {
		return err
	}

	ag, err := dialAgent(conf)
	if err != nil {
		return err
	}
	defer ag.close()
	h := handle(args.ContainerID, args.IfName)
	ctx, cancel := ag.ctx()
	resp, err := ag.IPAM.Allocate(ctx, &ipampb.AllocateRequest{Handle: h, Attrs: &ipampb.Attributes{Namespace: namespace, Pod: pod}})
	cancel()
	if err != nil {
		return agentError("allocate", conf.AgentSocket, err)
	}
	defer func() {
		if err != nil { // a failed ADD holds no address
			ctx, cancel := ag.ctx()
			defer cancel()
			if _, rerr := ag.IPAM.Release(ctx, &ipampb.ReleaseRequest{Handle: h}); rerr != nil {
				err = withDetail(err, fmt.Sprintf("; releasing %s failed too (the agent's GC will reclaim it): %v", h, rerr))
			}
		}
	}()
	addrs, err := podAddrs(resp)
	if err != nil {
		return err
	}

	mtu := conf.MTU
	if mtu == 0 {
		mtu = uplinkMTU()
	}
	w, undo, err := wire(podNS, HostVethName(args.ContainerID, args.IfName), args.IfName, mtu, addrs)
	if err != nil {
		return err
	}
	result := newResult(conf, w, args.Netns, addrs)
	if err := types.PrintResult(result, conf.CNIVersion); err != nil {
		undo()
		return types.NewError(types.ErrIOFailure, "failed to print result", err.Error())
	}
	return nil
}

func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	// Interfaces and routes go first and whatever the agent says: a pod that is
	// gone must not keep a route. The agent's GC reclaims an address it could not
	// release now.
	unerr := unwire(HostVethName(args.ContainerID, args.IfName))

	ag, err := dialAgent(conf)
	if err != nil {
		return err
	}
	defer ag.close()
	ctx, cancel := ag.ctx()
	defer cancel()
	if _, err := ag.IPAM.Release(ctx, &ipampb.ReleaseRequest{Handle: handle(args.ContainerID, args.IfName)}); err != nil {
		return agentError("release", conf.AgentSocket, err)
	}
	if unerr != nil {
		return unerr
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.RawPrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid network configuration", "CHECK needs prevResult")
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "failed to decode prevResult", err.Error())
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "failed to convert prevResult", err.Error())
	}
	podNS, err := openPodNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()

	problems := checkWiring(podNS, HostVethName(args.ContainerID, args.IfName), args.IfName, prev)

	ag, err := dialAgent(conf)
	if err != nil {
		return err
	}
	defer ag.close()
	ctx, cancel := ag.ctx()
	defer cancel()
	list, err := ag.IPAM.List(ctx, &ipampb.ListRequest{Handle: handle(args.ContainerID, args.IfName)})
	if err != nil {
		return agentError("check", conf.AgentSocket, err)
	}
	held := map[string]bool{}
	for _, a := range list.GetAllocations() {
		held[a.GetAddress()] = true
	}
	for _, ip := range prev.IPs {
		if !held[ip.Address.IP.String()] {
			problems = append(problems, fmt.Sprintf("IPAM holds no allocation of %s for %s", ip.Address.IP, handle(args.ContainerID, args.IfName)))
		}
	}
	if len(problems) > 0 {
		return types.NewError(types.ErrInternal, "attachment does not match its result", strings.Join(problems, "; "))
	}
	return nil
}

func cmdGC(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := make([]string, 0, len(conf.ValidAttachments))
	keep := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		valid = append(valid, handle(a.ContainerID, a.IfName))
		keep[HostVethName(a.ContainerID, a.IfName)] = true
	}
	linkErr := removeStaleVeths(keep)

	ag, err := dialAgent(conf)
	if err != nil {
		return err
	}
	defer ag.close()
	ctx, cancel := ag.ctx()
	defer cancel()
	if _, err := ag.IPAM.GC(ctx, &ipampb.GCRequest{ValidHandles: valid}); err != nil {
		return agentError("gc", conf.AgentSocket, err)
	}
	if linkErr != nil {
		return linkErr
	}
	return nil
}

// cmdStatus answers whether an ADD could succeed now: the agent must answer and
// every address family must have room.
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	ag, err := dialAgent(conf)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "flatnet agent unreachable", err.Error())
	}
	defer ag.close()
	ctx, cancel := ag.ctx()
	defer cancel()
	usage, err := ag.IPAM.Usage(ctx, &ipampb.UsageRequest{})
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "flatnet agent unreachable", fmt.Sprintf("agent socket %s: %v", conf.AgentSocket, err))
	}
	// The agent's allocator says which families have no room left.
	if full := usage.GetExhausted(); len(full) > 0 {
		names := make([]string, len(full))
		for i, f := range full {
			names[i] = familyName(f)
		}
		return types.NewError(types.ErrPluginNotAvailable, "pools exhausted", "no free address for a new pod in the "+strings.Join(names, " and ")+" pools")
	}
	return nil
}

func familyName(f ipampb.Family) string {
	switch f {
	case ipampb.Family_FAMILY_IPV4:
		return "IPv4"
	case ipampb.Family_FAMILY_IPV6:
		return "IPv6"
	}
	return f.String()
}

func podAddrs(resp *ipampb.AllocateResponse) ([]podAddr, error) {
	var out []podAddr
	for _, a := range resp.GetAddresses() {
		p, err := netip.ParsePrefix(a.GetAddress())
		if err != nil {
			return nil, types.NewError(types.ErrInternal, "agent returned a bad address", err.Error())
		}
		gw, err := netip.ParseAddr(a.GetGateway())
		if err != nil || !gw.IsLinkLocalUnicast() || gw.Is4() != p.Addr().Is4() {
			return nil, types.NewError(types.ErrInternal, "agent returned a bad gateway", fmt.Sprintf("gateway %q for %s", a.GetGateway(), p))
		}
		out = append(out, podAddr{prefix: p, gateway: gw})
	}
	if len(out) == 0 {
		return nil, types.NewError(types.ErrInternal, "agent returned no address", "")
	}
	return out, nil
}

func openPodNS(path string) (ns.NetNS, error) {
	podNS, err := ns.GetNS(path)
	if err != nil {
		var missing ns.NSPathNotExistErr
		if errors.As(err, &missing) {
			return nil, types.NewError(types.ErrUnknownContainer, "network namespace does not exist", err.Error())
		}
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is not a network namespace", err.Error())
	}
	return podNS, nil
}

// withDetail appends to a CNI error's details, keeping its code.
func withDetail(err error, detail string) error {
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		return types.NewError(cniErr.Code, cniErr.Msg, cniErr.Details+detail)
	}
	return fmt.Errorf("%w%s", err, detail)
}
