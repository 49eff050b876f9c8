package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flatnet-io/flatnet/agent/agentclient"
	"github.com/flatnet-io/flatnet/agent/agentpb"
	"github.com/flatnet-io/flatnet/lab/netns"
	"github.com/flatnet-io/flatnet/lab/router"
	"github.com/flatnet-io/flatnet/lab/topology"
)

// Report gathers the lab's state. With wait > 0 it repeats the connectivity
// checks until they all pass or wait has passed (BGP needs a moment).
func (l *Lab) Report(ctx context.Context, wait time.Duration) (*Report, error) {
	r := &Report{Routes: map[string][]string{}}
	deadline := time.Now().Add(wait)
	for {
		r.Checks, r.Err = l.Verify(ctx)
		if r.Err == nil && l.HasRealNodes() {
			var svc []Check
			svc, r.Err = l.ServiceChecks(ctx)
			r.Checks = append(r.Checks, svc...)
		}
		if r.OK() {
			r.Reachable = time.Now()
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.Sessions = l.Sessions(ctx)
	for _, n := range l.T.Nodes() {
		if routes := l.LearnedRoutes(n.Name); len(routes) > 0 {
			r.Routes[n.Name] = routes
		}
	}
	return r, nil
}

// routeProto is the kernel route protocol of the routes each role installs
// from BGP: flatnet's 75, FRR's zebra "bgp", BIRD's "bird".
var routeProto = map[topology.Role]string{topology.RoleFlatnet: "75", topology.RoleFRR: "bgp", topology.RoleBIRD: "bird"}

// LearnedRoutes lists the routes a node installed in its kernel from BGP, as
// `ip route` prints them, IPv4 then IPv6; for a flatnet node its blackholes
// over its own blocks too, but not the CNI plugin's pod routes.
func (l *Lab) LearnedRoutes(node string) []string {
	n := l.T.Topology.Nodes[node]
	if n == nil || routeProto[n.Role] == "" {
		return nil
	}
	var routes []string
	for _, fam := range []string{"-4", "-6"} {
		out, _ := l.Exec(l.NS(n.Name), "ip", fam, "route", "show", "proto", routeProto[n.Role])
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.Contains(line, " dev fln") { // pod routes are the CNI plugin's
				routes = append(routes, line)
			}
		}
	}
	return routes
}

// Sessions asks every router and agent for its BGP sessions.
func (l *Lab) Sessions(ctx context.Context) []Session {
	var out []Session
	for _, n := range l.T.Nodes() {
		switch n.Role {
		case topology.RoleFlatnet:
			st, err := l.AgentStatus(ctx, n.Name)
			if err != nil {
				out = append(out, Session{Node: n.Name, Peer: "-", State: "agent: " + err.Error()})
				continue
			}
			for _, p := range st.GetPeers() {
				out = append(out, Session{Node: n.Name, Peer: fmt.Sprintf("%s (%s AS%d)", p.GetName(), p.GetAddress(), p.GetAsn()),
					State: p.GetState(), Received: int64(p.GetAccepted())})
			}
		case topology.RoleFRR, topology.RoleBIRD:
			var sessions []router.Session
			var err error
			if n.Role == topology.RoleFRR {
				sessions, err = router.FRRSessions(l.frrDir(n.Name))
			} else {
				sessions, err = router.BIRDSessions(l.birdDir(n.Name))
			}
			if err != nil {
				out = append(out, Session{Node: n.Name, Peer: "-", State: err.Error()})
				continue
			}
			for _, s := range sessions {
				out = append(out, Session{Node: n.Name, Peer: s.Peer, State: s.State, Received: s.Received})
			}
		}
	}
	return out
}

// AgentStatus asks a flatnet node's agent for its status.
func (l *Lab) AgentStatus(ctx context.Context, node string) (*agentpb.StatusResponse, error) {
	c, err := agentclient.Dial(l.Socket(node))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return agentpb.NewAgentClient(c.Conn()).Status(ctx, &agentpb.StatusRequest{})
}

// endpoint is what `flatnetctl verify` reads.
type endpoint struct {
	Name  string       `json:"name"`
	Kind  string       `json:"kind"`
	Node  string       `json:"node"`
	NetNS string       `json:"netns"`
	Addrs []netip.Addr `json:"addrs"`
}

// Endpoints lists the lab's pods and flatnet nodes for verify.
func (l *Lab) Endpoints() ([]endpoint, error) {
	var eps []endpoint
	for _, n := range l.T.NodesOf(topology.RoleFlatnet) {
		addrs, err := l.globalAddrs(l.NS(n.Name))
		if err != nil {
			return nil, err
		}
		eps = append(eps, endpoint{Name: n.Name, Kind: "node", Node: n.Name, NetNS: l.NS(n.Name), Addrs: addrs})
	}
	pods, err := l.Pods()
	if err != nil {
		return nil, err
	}
	for _, p := range pods {
		eps = append(eps, endpoint{Name: p.Node + "/" + p.Name, Kind: "pod", Node: p.Node, NetNS: p.NS, Addrs: p.Addrs})
	}
	return eps, nil
}

// globalAddrs lists the global addresses in a namespace, of the device
// `ip addr show` is narrowed to by filter ("dev", "eth0"), or of all.
func (l *Lab) globalAddrs(ns string, filter ...string) ([]netip.Addr, error) {
	out, err := l.Exec(ns, append([]string{"ip", "-j", "addr", "show"}, filter...)...)
	if err != nil {
		return nil, err
	}
	var links []struct {
		AddrInfo []struct {
			Local string `json:"local"`
			Scope string `json:"scope"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	for _, li := range links {
		for _, a := range li.AddrInfo {
			if ip, err := netip.ParseAddr(a.Local); err == nil && a.Scope == "global" {
				addrs = append(addrs, ip)
			}
		}
	}
	return addrs, nil
}

// Verify runs `flatnetctl verify` over the lab's pods and nodes.
func (l *Lab) Verify(ctx context.Context) ([]Check, error) {
	eps, err := l.Endpoints()
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(eps)
	f := l.PodsFile()
	if err := os.WriteFile(f, b, 0o644); err != nil {
		return nil, err
	}
	out, _ := netns.Run(filepath.Join(l.Bin, "flatnetctl"), "verify", "--endpoints", f, "-o", "json")
	var checks []Check
	if i := strings.Index(out, "["); i >= 0 {
		if err := json.NewDecoder(strings.NewReader(out[i:])).Decode(&checks); err != nil {
			return nil, fmt.Errorf("flatnetctl verify: %w: %s", err, out)
		}
	}
	if len(checks) == 0 {
		return nil, fmt.Errorf("flatnetctl verify: no checks: %s", out)
	}
	return checks, nil
}
