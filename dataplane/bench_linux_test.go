package dataplane

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// BenchmarkRouteInstall installs 10k /32 routes into a fresh namespace and
// removes them again (untimed), three ways: through the reconciler (batched
// netlink), through `ip -batch` (the reference: one acknowledged message per
// route), and through a reused netlink.Handle, one RouteAdd per route.
// It reports ns/route and routes/s; compare them side by side, in one run.
func BenchmarkRouteInstall(b *testing.B) {
	const count = 10_000
	routes := hostRoutes(count)
	report := func(b *testing.B) {
		routes := float64(b.N) * count
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/routes, "ns/route")
		b.ReportMetric(routes/b.Elapsed().Seconds(), "routes/s")
	}

	b.Run("reconciler", func(b *testing.B) {
		n := newNodeNS(b)
		r, _ := startReconciler(b, n)
		r.MarkConverged()
		must(b, r.flush(b.Context()))
		b.ResetTimer()
		for range b.N {
			must(b, r.setRoutes(routes))
			must(b, r.flush(b.Context()))
			b.StopTimer()
			must(b, r.setRoutes(nil))
			must(b, r.flush(b.Context()))
			b.StartTimer()
		}
		report(b)
	})

	b.Run("ip-batch", func(b *testing.B) {
		n := newNodeNS(b)
		add, del := filepath.Join(b.TempDir(), "add"), filepath.Join(b.TempDir(), "del")
		must(b, os.WriteFile(add, []byte(ipBatch("add", routes)), 0o644))
		must(b, os.WriteFile(del, []byte(ipBatch("del", routes)), 0o644))
		b.ResetTimer()
		for range b.N {
			n.MustExec(b, "ip", "-batch", add)
			b.StopTimer()
			n.MustExec(b, "ip", "-batch", del)
			b.StartTimer()
		}
		report(b)
	})

	b.Run("handle-one-by-one", func(b *testing.B) {
		n := newNodeNS(b)
		var h *netlink.Handle
		must(b, n.Do(func(ns.NetNS) (err error) { h, err = netlink.NewHandle(unix.NETLINK_ROUTE); return err }))
		defer h.Close()
		nl := make([]*netlink.Route, 0, count)
		for p, nh := range routes {
			nl = append(nl, &netlink.Route{Dst: prefixNet(p), Gw: nh[0].AsSlice(), Protocol: routeProtocol})
		}
		b.ResetTimer()
		for range b.N {
			for _, r := range nl {
				must(b, h.RouteAdd(r))
			}
			b.StopTimer()
			for _, r := range nl {
				must(b, h.RouteDel(r))
			}
			b.StartTimer()
		}
		report(b)
	})
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
