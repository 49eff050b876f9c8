package metrics

import (
	"context"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/mesh"
)

// sessionStates are the values of flatnet_bgp_session_state's state label,
// each reported for every peer (1 for its state, 0 for the others).
var sessionStates = []string{
	bgp.StateIdle, bgp.StateConnect, bgp.StateActive, bgp.StateOpenSent,
	bgp.StateOpenConfirm, bgp.StateEstablished, bgp.StatePrefixLimit,
}

// rejectReasons are the values of flatnet_bgp_prefixes_rejected's reason
// label, each reported for every established session.
var rejectReasons = []string{
	bgp.RejectLoop, bgp.RejectOwnBlock, bgp.RejectOverlapsBlock, bgp.RejectDefault,
	bgp.RejectOutsidePools, bgp.RejectNotAllowed, bgp.RejectUnknownPeer,
}

// bgpCollector reads the speaker's Status at scrape time.
type bgpCollector struct {
	sp bgp.Speaker

	peerInfo, state, uptime, flaps, bfdUp        *prometheus.Desc
	received, accepted, advertised, rejectedDesc *prometheus.Desc
}

func newBGPCollector(sp bgp.Speaker) *bgpCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "bgp", name), help, append([]string{"peer"}, labels...), nil)
	}
	return &bgpCollector{
		sp:       sp,
		peerInfo: d("peer_info", "Always 1 for each configured BGP peer: its address, AS number and type (mesh: another flatnet node; explicit: bgp.peers or a BGPPeer).", "address", "asn", "type"),
		state:    d("session_state", "1 for the BGP session's current state, 0 for the others (prefix-limit: shut down for exceeding maxPrefixes).", "state"),
		uptime:   d("session_uptime_seconds", "How long the BGP session has been established; 0 when it is not."),
		flaps:    d("session_flaps_total", "Times the BGP session left the established state since the peer was configured."),
		bfdUp:    d("bfd_up", "1 when the peer's BFD session is up, 0 otherwise; only peers with BFD."),
		received: d("prefixes_received", "Prefixes the peer announces to us (established sessions)."),
		accepted: d("prefixes_accepted", "Prefixes of the peer that import policy accepted (established sessions)."),
		advertised: d("prefixes_advertised",
			"Prefixes we announce to the peer (established sessions)."),
		rejectedDesc: d("prefixes_rejected", "Prefixes of the peer that are not accepted, by reason (established sessions).", "reason"),
	}
}

func (c *bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.peerInfo, c.state, c.uptime, c.flaps, c.bfdUp, c.received, c.accepted, c.advertised, c.rejectedDesc} {
		ch <- d
	}
}

func (c *bgpCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	peers, err := c.sp.Status(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.state, fmt.Errorf("bgp status: %w", err))
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, p := range peers {
		kind := "explicit"
		if strings.HasPrefix(p.Name, mesh.PeerNamePrefix) {
			kind = "mesh"
		}
		gauge(c.peerInfo, 1, p.Name, p.Address.String(), fmt.Sprint(p.ASN), kind)
		for _, s := range sessionStates {
			gauge(c.state, b2f(p.State == s), p.Name, s)
		}
		gauge(c.uptime, p.Uptime.Seconds(), p.Name)
		ch <- prometheus.MustNewConstMetric(c.flaps, prometheus.CounterValue, float64(p.Flaps), p.Name)
		if p.BFD != "" {
			gauge(c.bfdUp, b2f(p.BFD == bgp.BFDUp), p.Name)
		}
		if p.State != bgp.StateEstablished {
			continue
		}
		gauge(c.received, float64(p.Received), p.Name)
		gauge(c.accepted, float64(p.Accepted), p.Name)
		gauge(c.advertised, float64(p.Advertised), p.Name)
		for _, r := range rejectReasons {
			gauge(c.rejectedDesc, float64(p.RejectedBy[r]), p.Name, r)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
