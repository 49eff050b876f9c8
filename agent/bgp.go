package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/gobgp"
	"github.com/flatnet-io/flatnet/bgp/mesh"
	"github.com/flatnet-io/flatnet/config"
	"github.com/flatnet-io/flatnet/dataplane"
	"github.com/flatnet-io/flatnet/ipam"
)

// routingStack is the node's BGP speaker, route reconciler and mesh registry,
// started together and stopped together.
type routingStack struct {
	self     mesh.Node
	routerID netip.Addr
	speaker  *gobgp.Speaker
	table    *dataplane.Reconciler
	registry mesh.Registry
	marker   string // file whose presence says the last stop was a planned restart
	log      *slog.Logger
}

// startRouting starts BGP and the dataplane for the node. alloc is IPAM,
// changed fires when IPAM wrote; ds has the mesh's registry and explicit
// peers besides the config file's. Kernel routes go into netns; nil is the
// agent's own namespace.
func startRouting(ctx context.Context, cfg config.Config, ds *datastore, alloc *ipam.Allocator, changed <-chan struct{}, adverts *advertLog, netns ns.NetNS, log *slog.Logger) (*routingStack, error) {
	self, err := nodeIdentity(cfg)
	if err != nil {
		return nil, err
	}
	st := &routingStack{self: self, log: log, marker: filepath.Join(filepath.Dir(cfg.API.Socket), "bgp-planned-restart")}
	bcfg := speakerConfig(cfg, self, alloc.Pools())
	st.routerID = bcfg.RouterID
	if restartedAt, err := readMarker(st.marker); err == nil && time.Since(restartedAt) < bcfg.GracefulRestart.RestartTime {
		bcfg.GracefulRestart.Restarting = bcfg.GracefulRestart.Enabled
		log.Info("planned restart: peers hold our routes; ours are sent after theirs", "stopped", time.Since(restartedAt).Round(time.Millisecond))
	}
	_ = os.Remove(st.marker)

	if st.speaker, err = gobgp.New(bcfg, gobgp.Options{Logger: log.With("component", "bgp")}); err != nil {
		return nil, err
	}
	if st.table, err = dataplane.New(dataplane.Options{NetNS: netns, Log: log.With("component", "dataplane")}); err != nil {
		return nil, err
	}
	peers := make([]bgp.Peer, 0, len(cfg.BGP.Peers))
	for _, p := range cfg.BGP.Peers {
		peers = append(peers, peerConfig(p))
	}
	if err := bgp.ValidatePeers(bcfg, peers); err != nil {
		st.table.Close()
		return nil, fmt.Errorf("bgp.peers: %w", err)
	}
	if cfg.BGP.Mesh {
		if err := ds.registry.Register(ctx, self); err != nil {
			st.table.Close()
			return nil, err
		}
		st.registry = ds.registry
	}
	if err := st.speaker.Start(ctx); err != nil {
		st.table.Close()
		return nil, err
	}
	go func() {
		if err := st.table.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("route reconciler stopped", "err", err)
		}
	}()
	rlog := log.With("component", "routing")
	template := bgp.Peer{Password: cfg.BGP.MeshPassword, HoldTime: cfg.BGP.MeshHoldTime, KeepaliveInterval: cfg.BGP.MeshKeepaliveInterval, BFD: bfdConfig(cfg.BGP.MeshBFD)}
	r := &routing{
		self: self, speaker: st.speaker, table: st.table, blocks: alloc, registry: st.registry,
		peers:   newPeerSet(st.speaker, self, template, peers, ds.peers == nil, rlog),
		changed: changed, resync: 30 * time.Second, settle: settleTime, log: rlog, adverts: adverts,
	}
	go r.run(ctx)
	if ds.peers != nil {
		go ds.peers.Watch(ctx, bcfg, peers, func(p []bgp.Peer) { r.peers.setExplicit(ctx, p) })
	}
	log.Info("bgp started", "asn", self.ASN, "ipv4", self.IPv4, "ipv6", self.IPv6, "mesh", cfg.BGP.Mesh, "peers", len(peers))
	return st, nil
}

// stop ends BGP as a planned restart: no NOTIFICATION, so peers that
// negotiated graceful restart keep our routes; the kernel keeps theirs.
func (st *routingStack) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := os.WriteFile(st.marker, []byte(time.Now().UTC().Format(time.RFC3339Nano)), 0o600); err != nil {
		st.log.Warn("cannot record the planned restart; the next start will not ask peers to keep routes", "err", err)
	}
	if err := st.speaker.Stop(ctx, true); err != nil {
		st.log.Warn("stop bgp", "err", err)
	}
	st.table.Close() // routes stay in the kernel
}

func readMarker(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	return time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
}

// nodeIdentity is the node as its peers see it: its name, ASN, and its
// addresses from config or, when unset, found from its routes.
func nodeIdentity(cfg config.Config) (mesh.Node, error) {
	n := mesh.Node{Name: cfg.NodeName, ASN: cfg.BGP.ASN, IPv4: cfg.BGP.NodeIPv4, IPv6: cfg.BGP.NodeIPv6}
	if !n.IPv4.IsValid() {
		n.IPv4 = detectAddr(netlink.FAMILY_V4)
	}
	if !n.IPv6.IsValid() {
		n.IPv6 = detectAddr(netlink.FAMILY_V6)
	}
	if !n.IPv4.IsValid() && !cfg.BGP.RouterID.IsValid() {
		return n, errors.New("bgp: no IPv4 address for the router ID: set bgp.nodeIPv4 or bgp.routerID")
	}
	if !n.IPv4.IsValid() && !n.IPv6.IsValid() {
		return n, errors.New("bgp: the node has no address to announce as next hop: set bgp.nodeIPv4 or bgp.nodeIPv6")
	}
	return n, nil
}

// detectAddr returns the node's address of a family: the source address of
// its default route, else its first global address outside pod veths.
func detectAddr(family int) netip.Addr {
	routes, err := netlinksafe.RouteListFiltered(family, &netlink.Route{Dst: nil}, netlink.RT_FILTER_DST)
	if err == nil {
		for _, r := range routes {
			if r.Src != nil {
				if a, ok := netip.AddrFromSlice(r.Src); ok {
					return a.Unmap()
				}
			}
			if r.LinkIndex > 0 {
				if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
					if a := firstGlobal(l, family); a.IsValid() {
						return a
					}
				}
			}
		}
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return netip.Addr{}
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "fln") {
			continue
		}
		if a := firstGlobal(l, family); a.IsValid() {
			return a
		}
	}
	return netip.Addr{}
}

func firstGlobal(l netlink.Link, family int) netip.Addr {
	addrs, err := netlinksafe.AddrList(l, family)
	if err != nil {
		return netip.Addr{}
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && ip.Unmap().IsGlobalUnicast() && a.Scope == int(netlink.SCOPE_UNIVERSE) {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// speakerConfig turns the agent's config into the speaker's; pools are the
// allocator's.
func speakerConfig(cfg config.Config, self mesh.Node, pools []ipam.Pool) bgp.Config {
	b := cfg.BGP
	c := bgp.Config{
		ASN:             b.ASN,
		RouterID:        b.RouterID,
		ListenAddresses: b.ListenAddresses,
		ListenPort:      int32(b.ListenPort),
		Multipath:       b.Multipath,
		ConvergeTimeout: b.ConvergeTimeout,
		APIListen:       b.APIListen,
		RouteReflector:  bgp.RouteReflector{Enabled: b.RouteReflector.Enabled, ClusterID: b.RouteReflector.ClusterID},
		GracefulRestart: bgp.GracefulRestart{Enabled: b.GracefulRestart.Enabled, RestartTime: b.GracefulRestart.RestartTime},
	}
	if !c.RouterID.IsValid() {
		c.RouterID = self.IPv4
	}
	if c.GracefulRestart.RestartTime == 0 {
		c.GracefulRestart.RestartTime = bgp.DefaultRestartTime
	}
	for _, p := range pools {
		c.Pools = append(c.Pools, p.CIDR)
	}
	return c
}

func peerConfig(p config.Peer) bgp.Peer {
	out := bgp.Peer{
		Name: p.Name, Address: p.Address, Port: uint16(p.Port), ASN: p.ASN, Password: p.Password,
		RRClient: p.RRClient, Multihop: uint8(p.Multihop), HoldTime: p.HoldTime, KeepaliveInterval: p.KeepaliveInterval,
		Passive: p.Passive, MaxPrefixes: p.MaxPrefixes,
		Import: bgp.ImportPolicy{Allow: p.Import.Allow, AllowDefault: p.Import.AllowDefault},
		BFD:    bfdConfig(p.BFD),
	}
	return out
}

// bfdConfig is the speaker's BFD for b: nil when off.
func bfdConfig(b config.BFD) *bgp.BFD {
	if !b.Enabled {
		return nil
	}
	return &bgp.BFD{Interval: b.Interval, Multiplier: uint32(b.Multiplier)}
}
