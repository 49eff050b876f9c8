package deploy

import (
	"fmt"
	"strings"
	"testing"
)

// The CRDs' schemas refuse malformed objects at the API, before any agent
// reads them: kubectl apply fails with the schema's message.
func TestSchemasRejectMalformedObjects(t *testing.T) {
	k := server.Get(t)
	k.ApplyCRDs(t)
	pool := func(cidr, blockSize string) string {
		s := fmt.Sprintf("apiVersion: flatnet.io/v1alpha1\nkind: IPPool\nmetadata: {name: p}\nspec:\n  cidr: %q\n", cidr)
		if blockSize != "" {
			s += "  blockSize: " + blockSize + "\n"
		}
		return s
	}
	peer := func(spec string) string {
		return "apiVersion: flatnet.io/v1alpha1\nkind: BGPPeer\nmetadata: {name: tor}\nspec:\n" + spec
	}
	for _, tc := range []struct {
		name, manifest, want string
	}{
		{"pool: not a CIDR", pool("ten-dot-zero/8", ""), "should match"},
		{"pool: octet out of range", pool("10.0.0.300/16", ""), "must be a CIDR"},
		{"pool: prefix out of range", pool("10.0.0.0/33", ""), "must be a CIDR"},
		{"pool: no prefix", pool("10.0.0.0", ""), "should match"},
		{"pool: host bits", pool("10.244.0.1/16", ""), "must be a network address"},
		{"pool: block size below 20", pool("10.244.0.0/16", "19"), "should be greater than or equal to 20"},
		{"pool: block size above 32 for IPv4", pool("10.244.0.0/16", "33"), "20..32 for an IPv4 pool"},
		{"pool: block size below 116 for IPv6", pool("fd00:10:244::/56", "115"), "116..128 for an IPv6 pool"},
		{"pool: block size above 128", pool("fd00:10:244::/56", "129"), "should be less than or equal to 128"},
		{"pool: block larger than the pool", pool("10.244.0.0/24", "22"), "must not be shorter than the pool's prefix"},
		{"pool: block size not a number", pool("10.244.0.0/16", "big"), "blockSize"},
		{"pool: no cidr", "apiVersion: flatnet.io/v1alpha1\nkind: IPPool\nmetadata: {name: p}\nspec: {blockSize: 26}\n", "Required value"},
		{"peer: bad address", peer("  address: 10.0.0.256\n  asn: 65000\n"), "must be an IP address"},
		{"peer: ASN 0", peer("  address: 10.0.0.1\n  asn: 0\n"), "greater than or equal to 1"},
		{"peer: ASN over 32 bits", peer("  address: 10.0.0.1\n  asn: 4294967296\n"), "less than or equal to 4294967295"},
		{"peer: node and selector", peer("  address: 10.0.0.1\n  asn: 65000\n  node: n1\n  nodeSelector: {matchLabels: {rack: a}}\n"), "node and nodeSelector are exclusive"},
		{"peer: two passwords", peer("  address: 10.0.0.1\n  asn: 65000\n  password: {value: x, secretKey: tor}\n"), "exactly one of value and secretKey"},
		{"peer: bad import prefix", peer("  address: 10.0.0.1\n  asn: 65000\n  import: {allow: [10.0.0.0/40]}\n"), "must be a CIDR"},
		{"peer: bad hold time", peer("  address: 10.0.0.1\n  asn: 65000\n  holdTime: soon\n"), "should match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.Kubectl("apply", "-f", writeFile(t, "obj.yaml", tc.manifest))
			if err == nil {
				_, _ = k.Kubectl("delete", "-f", writeFile(t, "obj.yaml", tc.manifest))
				t.Fatalf("accepted:\n%s", tc.manifest)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v\ndoes not say %q", err, tc.want)
			}
		})
	}

	// Well-formed objects pass, and show in kubectl get's columns.
	good := pool("fd00:10:244::/56", "122") + "---\n" + peer(`  address: 192.0.2.1
  asn: 65000
  nodeSelector: {matchLabels: {rack: a}}
  password: {secretKey: tor-a}
  multihop: 2
  holdTime: 9s
  keepaliveInterval: 3s
  import: {allow: [10.96.0.0/12], allowDefault: true}
  maxPrefixes: 1000
  bfd: {interval: 300ms, multiplier: 3}
`)
	k.MustKubectl(t, "apply", "-f", writeFile(t, "good.yaml", good))
	if out := k.MustKubectl(t, "get", "ippools"); !strings.Contains(out, "fd00:10:244::/56") || !strings.Contains(out, "122") {
		t.Errorf("kubectl get ippools:\n%s", out)
	}
	if out := k.MustKubectl(t, "get", "bgppeers"); !strings.Contains(out, "192.0.2.1") || !strings.Contains(out, "65000") {
		t.Errorf("kubectl get bgppeers:\n%s", out)
	}
	// A pool's range and block size cannot change under its blocks.
	_, err := k.Kubectl("apply", "-f", writeFile(t, "moved.yaml", pool("fd00:10:245::/56", "122")))
	if err == nil || !strings.Contains(err.Error(), "is immutable") {
		t.Errorf("changing a pool's CIDR: %v", err)
	}
	_, err = k.Kubectl("apply", "-f", writeFile(t, "resized.yaml", pool("fd00:10:244::/56", "120")))
	if err == nil || !strings.Contains(err.Error(), "blockSize is immutable") {
		t.Errorf("changing a pool's block size: %v", err)
	}
}
