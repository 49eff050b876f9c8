package kubepeers

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
)

var addr = netip.MustParseAddr

func bgppeer(name, address string, spec func(*v1alpha1.BGPPeerSpec)) *v1alpha1.BGPPeer {
	p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.BGPPeerSpec{Address: address, ASN: 65000}}
	if spec != nil {
		spec(&p.Spec)
	}
	return p
}

func TestExplicitPeers(t *testing.T) {
	c := bgp.Config{ASN: 64512, RouterID: addr("192.0.2.100")}
	conf := []bgp.Peer{{Name: "tor", Address: addr("192.0.2.1"), ASN: 65000}}
	secrets := map[string]string{"good": "s3cret"}
	secret := func(key string) (string, error) {
		if v, ok := secrets[key]; ok {
			return v, nil
		}
		return "", errors.New("no such key")
	}
	rackA := &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "a"}}
	objs := []*v1alpha1.BGPPeer{
		// Out of name order: the result is in name order.
		bgppeer("g-all", "192.0.2.20", nil),
		bgppeer("a-rack-a", "192.0.2.10", func(s *v1alpha1.BGPPeerSpec) { s.NodeSelector = rackA }),
		bgppeer("b-other-node", "192.0.2.11", func(s *v1alpha1.BGPPeerSpec) { s.Node = "node2" }),
		bgppeer("c-this-node", "192.0.2.12", func(s *v1alpha1.BGPPeerSpec) { s.Node = "node1" }),
		bgppeer("d-password", "192.0.2.13", func(s *v1alpha1.BGPPeerSpec) { s.Password = &v1alpha1.BGPPassword{SecretKey: "good"} }),
		// Left out, each with its reason; the others still apply.
		bgppeer("e-no-secret", "192.0.2.14", func(s *v1alpha1.BGPPeerSpec) { s.Password = &v1alpha1.BGPPassword{SecretKey: "missing"} }),
		bgppeer("f-config-address", "192.0.2.1", nil),
		bgppeer("z-same-address", "192.0.2.20", nil), // the later name loses
		bgppeer("h-rr-client", "192.0.2.15", func(s *v1alpha1.BGPPeerSpec) { s.RouteReflectorClient = true; s.ASN = 64512 }),
		bgppeer("i-bad-selector", "192.0.2.16", func(s *v1alpha1.BGPPeerSpec) {
			s.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "rack", Operator: "Near"}}}
		}),
		bgppeer("j-bad-address", "nope", nil),
	}
	wantDropped := map[string]string{
		"e-no-secret":      "bgppeer e-no-secret: password: secret key missing: no such key",
		"f-config-address": "bgppeer f-config-address: address 192.0.2.1 is already peer tor's",
		"z-same-address":   "bgppeer z-same-address: address 192.0.2.20 is already peer peer-g-all's",
		"h-rr-client":      "bgppeer h-rr-client: peer \"peer-h-rr-client\" (192.0.2.15): rrClient true: needs bgp.routeReflector.enabled",
		"i-bad-selector":   "bgppeer i-bad-selector: nodeSelector:",
		"j-bad-address":    "bgppeer j-bad-address: address:",
	}
	for _, tc := range []struct {
		labels map[string]string
		want   []string
	}{
		{nil, []string{"tor", "peer-c-this-node", "peer-d-password", "peer-g-all"}},
		{map[string]string{"rack": "a"}, []string{"tor", "peer-a-rack-a", "peer-c-this-node", "peer-d-password", "peer-g-all"}},
	} {
		peers, dropped := Peers(c, conf, objs, "node1", tc.labels, secret)
		var names []string
		for _, p := range peers {
			names = append(names, p.Name)
		}
		if diff := cmp.Diff(tc.want, names); diff != "" {
			t.Errorf("labels %v: peers (-want +got):\n%s", tc.labels, diff)
		}
		if len(dropped) != len(wantDropped) {
			t.Errorf("labels %v: dropped %v, want %d objects", tc.labels, dropped, len(wantDropped))
		}
		for name, want := range wantDropped {
			if err := dropped[name]; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("labels %v: %s dropped for %v, want %q", tc.labels, name, err, want)
			}
		}
		for _, p := range peers {
			if p.Name == "peer-d-password" && p.Password != "s3cret" {
				t.Errorf("password from the secret: %q, want s3cret", p.Password)
			}
		}
	}
	if len(conf) != 1 {
		t.Errorf("the config's peers were changed: %v", conf)
	}
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"tor-a": "s3cret\n", "tor-b": "two\nlines\n\n", "plain": "p"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Kubernetes' own files in a mounted Secret start with "..".
	if err := os.Mkdir(filepath.Join(dir, "..data"), 0o700); err != nil {
		t.Fatal(err)
	}
	read := SecretFile(dir)
	for key, want := range map[string]string{"tor-a": "s3cret", "tor-b": "two\nlines\n", "plain": "p"} {
		if got, err := read(key); err != nil || got != want {
			t.Errorf("key %s: %q, %v; want %q", key, got, err, want)
		}
	}
	for key, want := range map[string]string{
		"missing":   "no file " + filepath.Join(dir, "missing") + ": is it a key of the Secret flatnet-bgp-passwords?",
		"..data":    "not a Secret key",
		"../passwd": "not a Secret key",
		"a/b":       "not a Secret key",
		"":          "not a Secret key",
	} {
		if got, err := read(key); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("key %q: %q, %v; want an error containing %q", key, got, err, want)
		}
	}
}
