package main

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flatnet-io/flatnet/agent/agentpb"
)

func TestStatusOutput(t *testing.T) {
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	now = func() time.Time { return at.Add(42 * time.Second) }
	t.Cleanup(func() { now = time.Now })
	usage, _ := sample()
	st := &agentpb.StatusResponse{
		Node: "node1", Asn: 64512, RouterId: "10.0.0.1", Addresses: []string{"10.0.0.1"}, BgpEnabled: true,
		Peers: []*agentpb.Peer{
			{Name: "mesh-node2", Address: "10.0.0.2", Asn: 64512, State: "established", Bfd: "up", UptimeSeconds: 75, Received: 2, Accepted: 2, Advertised: 1, Mesh: true},
			{Name: "tor", Address: "10.0.0.254", Asn: 65000, State: "active", Bfd: "down"},
			{Name: "rr", Address: "10.0.0.253", Asn: 64512, State: "established", UptimeSeconds: 3600, Received: 3, Accepted: 2, Rejected: 1, Advertised: 1},
		},
		Adverts: []*agentpb.Advert{{Prefix: "10.244.0.0/26", NextHop: "10.0.0.1"}},
		Routes: &agentpb.Routes{Learned: 2, Blackholes: 1, Pending: 1, Converged: true,
			LastError: "add route 10.244.1.0/26: network is unreachable", LastErrorAt: timestamppb.New(at)},
	}
	var out bytes.Buffer
	if err := writeStatus(&out, st, usage); err != nil {
		t.Fatal(err)
	}
	golden(t, "status.txt", out.Bytes())
}
