package v1alpha1

import (
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/ipam"
)

// Pool returns the pool p describes, checked by ipam.NewPool; a zero block
// size becomes the family's default (ipam.DefaultBlockSize). Errors name the object.
func (p *IPPool) Pool() (ipam.Pool, error) {
	cidr, err := netip.ParsePrefix(p.Spec.CIDR)
	if err != nil {
		return ipam.Pool{}, fmt.Errorf("ippool %s: spec.cidr: %w: %w", p.Name, ipam.ErrInvalid, err)
	}
	size := p.Spec.BlockSize
	if size == 0 {
		size = ipam.DefaultBlockSize(ipam.FamilyOf(cidr.Addr()))
	}
	pool, err := ipam.NewPool(p.Name, cidr, size)
	if err != nil {
		return ipam.Pool{}, fmt.Errorf("ippool %s: %w", p.Name, err)
	}
	return pool, nil
}

// AppliesTo tells whether node, with its labels, peers with p: the node
// Spec.Node names, or every node Spec.NodeSelector matches, or every node.
func (p *BGPPeer) AppliesTo(node string, nodeLabels map[string]string) (bool, error) {
	if p.Spec.Node != "" && p.Spec.Node != node {
		return false, nil
	}
	if p.Spec.NodeSelector == nil {
		return true, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(p.Spec.NodeSelector)
	if err != nil {
		return false, fmt.Errorf("bgppeer %s: nodeSelector: %w", p.Name, err)
	}
	return sel.Matches(labels.Set(nodeLabels)), nil
}

// Peer returns the session p describes, named "peer-<name>". secret reads a
// key of the flatnet-bgp-passwords Secret (the agent reads its mounted file);
// it is called only when the password names one.
func (p *BGPPeer) Peer(secret func(key string) (string, error)) (bgp.Peer, error) {
	s := p.Spec
	fail := func(format string, args ...any) (bgp.Peer, error) {
		return bgp.Peer{}, fmt.Errorf("bgppeer %s: "+format, append([]any{p.Name}, args...)...)
	}
	addr, err := netip.ParseAddr(s.Address)
	if err != nil {
		return fail("address: %w", err)
	}
	peer := bgp.Peer{
		Name:              "peer-" + p.Name,
		Address:           addr.Unmap(),
		Port:              s.Port,
		ASN:               s.ASN,
		RRClient:          s.RouteReflectorClient,
		Multihop:          s.Multihop,
		HoldTime:          duration(s.HoldTime),
		KeepaliveInterval: duration(s.KeepaliveInterval),
		Passive:           s.Passive,
		MaxPrefixes:       s.MaxPrefixes,
	}
	if pw := s.Password; pw != nil {
		switch {
		case pw.Value != "" && pw.SecretKey != "":
			return fail("password: value and secretKey are exclusive")
		case pw.SecretKey != "":
			if peer.Password, err = secret(pw.SecretKey); err != nil {
				return fail("password: secret key %s: %w", pw.SecretKey, err)
			}
		default:
			peer.Password = pw.Value
		}
	}
	if imp := s.Import; imp != nil {
		peer.Import.AllowDefault = imp.AllowDefault
		for _, a := range imp.Allow {
			pfx, err := netip.ParsePrefix(a)
			if err != nil {
				return fail("import.allow: %w", err)
			}
			peer.Import.Allow = append(peer.Import.Allow, pfx.Masked())
		}
	}
	if s.BFD != nil {
		peer.BFD = &bgp.BFD{Interval: duration(s.BFD.Interval), Multiplier: s.BFD.Multiplier}
	}
	return peer, nil
}

func duration(d *metav1.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.Duration
}
