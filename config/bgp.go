package config

import (
	"math"

	"github.com/flatnet-io/flatnet/bgp"
)

// Speaker returns the speaker settings b describes. RouterID stays unset
// when b leaves it to the node's IPv4 address, and Pools are the
// allocator's: the agent fills both in.
func (b BGP) Speaker() bgp.Config {
	return bgp.Config{
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
}

// MeshTemplate is the settings every mesh session gets.
func (b BGP) MeshTemplate() bgp.Peer {
	return bgp.Peer{Password: b.MeshPassword, HoldTime: b.MeshHoldTime, KeepaliveInterval: b.MeshKeepaliveInterval, BFD: b.MeshBFD.bgp()}
}

// BGP returns the peer p describes. Its numbers must fit (Validate checks
// that they do).
func (p Peer) BGP() bgp.Peer {
	out := bgp.Peer{
		Name: p.Name, Address: p.Address, Port: uint16(p.Port), ASN: p.ASN, Password: p.Password,
		RRClient: p.RRClient, Multihop: uint8(p.Multihop), HoldTime: p.HoldTime, KeepaliveInterval: p.KeepaliveInterval,
		Passive: p.Passive, MaxPrefixes: p.MaxPrefixes,
		Import: bgp.ImportPolicy{Allow: p.Import.Allow, AllowDefault: p.Import.AllowDefault},
		BFD:    p.BFD.bgp(),
	}
	return out
}

// bgp is the speaker's BFD for f: nil when off. A negative multiplier is
// Validate's to report; here it is 0, the default.
func (f BFD) bgp() *bgp.BFD {
	if !f.Enabled {
		return nil
	}
	return &bgp.BFD{Interval: f.Interval, Multiplier: uint32(min(max(f.Multiplier, 0), math.MaxUint32))}
}
