package main

import (
	"bytes"
	"testing"

	"github.com/flatnet-io/flatnet/cni"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
)

func TestVethOfIsTheCNIPluginsName(t *testing.T) {
	if got, want := vethOf("0123456789abcdef/eth0"), cni.HostVethName("0123456789abcdef", "eth0"); got != want {
		t.Errorf("vethOf = %s, the CNI plugin names it %s", got, want)
	}
}

func TestPolicyOutput(t *testing.T) {
	list := &ipampb.ListResponse{Allocations: []*ipampb.Allocation{
		{Address: "10.244.0.5", Handle: "c1/eth0", Attrs: &ipampb.Attributes{Node: "node1", Namespace: "x", Pod: "a"}},
		{Address: "fd00::5", Handle: "c1/eth0", Attrs: &ipampb.Attributes{Node: "node1", Namespace: "x", Pod: "a"}},
		{Address: "10.244.0.6", Handle: "c2/eth0", Attrs: &ipampb.Attributes{Node: "node1", Namespace: "x", Pod: "b"}},
		{Address: "10.244.1.5", Handle: "c9/eth0", Attrs: &ipampb.Attributes{Node: "node2", Namespace: "x", Pod: "a"}},
	}}
	atts := podAttachments(list, "node1", "x", "a")
	if len(atts) != 1 || len(atts[0].Addresses) != 2 || atts[0].Veth != vethOf("c1/eth0") {
		t.Fatalf("attachments of x/a on node1: %+v", atts)
	}
	atts[0].Ingress.Isolated = true
	atts[0].Ingress.Rules = `table inet flatnet-policy {
	chain ingress-` + atts[0].Veth + ` {
		comment "ingress of x/a"
		ip saddr @pods-0123456789ab-v4 tcp dport 8080 counter packets 3 bytes 180 accept comment "x/allow-web ingress[0] #1a2b3c4d"
		counter packets 7 bytes 420 drop comment "default deny: x/allow-web, x/deny #5e6f7a8b"
	}
}
`
	var buf bytes.Buffer
	if err := writePolicy(&buf, "x", "a", atts); err != nil {
		t.Fatal(err)
	}
	golden(t, "policy.txt", buf.Bytes())
}
