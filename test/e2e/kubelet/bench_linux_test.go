package kubelet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/flatnet-io/flatnet/lab"
	"github.com/flatnet-io/flatnet/lab/netns"
)

// Pod start on real nodes, flatnet vs the same nodes with ptp+host-local:
// containerd calls whichever conflist sorts first in /etc/cni/net.d, so the
// benchmark puts a ptp one (00-bench.conflist) before flatnet's
// (10-flatnet.conflist) for the ptp rounds and removes it after. Everything
// else — API server, scheduler, kubelet, containerd, the image, the node a
// pod's first packet comes from — is the same.

const (
	benchPods = 50
	// echoPort is where the echo image serves HTTP.
	echoPort = 8080
	// answerPoll is how often a started pod is asked for its first answer.
	answerPoll = 10 * time.Millisecond
	// roundTimeout bounds one round: creating the pods until every one runs
	// and answers. Generous: the machine is shared.
	roundTimeout = 5 * time.Minute
	// goneTimeout bounds deleting a round's pods.
	goneTimeout = 3 * time.Minute
	// switchTimeout bounds containerd taking up a changed conflist.
	switchTimeout = 2 * time.Minute
	roundLabel    = "flatnet.io/podstart"
)

var benchNodes = []string{"node1", "node2"}

// podNetwork is a pod network of the benchmark: what containerd is given
// first in the nodes' /etc/cni/net.d, and where its pods' addresses come
// from on the i-th node.
type podNetwork struct {
	name     string
	conflist func(node int) string // nil: none put first, flatnet's is used
	pool     func(node int) netip.Prefix
	// hostLocal names host-local's network, whose addresses must all be
	// released after a round; "": not host-local.
	hostLocal string
}

var flatnetNetwork = podNetwork{
	name: "flatnet",
	pool: func(int) netip.Prefix { return netip.MustParsePrefix("10.244.0.0/16") }, // deploy/agent/flatnet.yaml
}

var ptpNetwork = podNetwork{
	name:      "ptp",
	conflist:  func(node int) string { return ptpConflist(ptpSubnet(node)) },
	pool:      ptpSubnet,
	hostLocal: "ptp",
}

// ptpSubnet is host-local's range on the i-th node.
func ptpSubnet(node int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 88, byte(node + 1), 0}), 24)
}

// ptpConflist is the node's own pod network: Debian's reference plugins
// 1.1.1 (seeded into /opt/cni/bin), at the CNI version containerd 1.6 takes.
func ptpConflist(subnet netip.Prefix) string {
	return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "ptp", "plugins": [{"type": "ptp", "ipMasq": false, `+
		`"ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}`, subnet.String())
}

// BenchmarkPodStart creates 50 echo pods, one after another as fast as the
// API server takes them, alternately on kubelet-tor's two real nodes, on
// flatnet and then on ptp+host-local, in one lab, and reports per pod, from
// its creation (the create call's return):
//   - ms-to-running: until a watch from this process sees it Running;
//   - ms-to-first-packet: until its echo server answers HTTP from its node's
//     namespace, asked every 10 ms from the moment its address is routed on
//     the node (the time is that of the connection that got the answer).
//
// p50 and p99 of each, over the pods of every round; the run's flatnet/ptp
// ratios are printed after. make bench runs it; benchstat -col /impl pairs
// the two.
func BenchmarkPodStart(b *testing.B) {
	// One echo pod a node, which stays: with none, up's Service rows fail
	// (they have no backends to measure).
	e := up(b, "bench", 1)
	s := newPodStarter(b, e)
	// A round that is not measured: the first pods of a lab pay for cold
	// caches (image layers, the kubelet's and containerd's first sandboxes),
	// which would count against whichever network went first.
	s.round(b, flatnetNetwork)
	// Which goes first alternates from run to run (by this process's pid),
	// so that neither always runs on the machine's first or last moments.
	order := []podNetwork{flatnetNetwork, ptpNetwork}
	if os.Getpid()%2 == 1 {
		order = []podNetwork{ptpNetwork, flatnetNetwork}
	}
	got := map[string]*startTimes{}
	for _, nw := range order {
		b.Run("impl="+nw.name, func(b *testing.B) {
			if nw.conflist != nil {
				s.use(b, nw)
			}
			var st startTimes
			for range b.N {
				st.add(s.round(b, nw))
			}
			st.report(b)
			got[nw.name] = &st
			if nw.conflist != nil {
				s.use(b, flatnetNetwork) // back to the lab's own for what follows
			}
		})
	}
	// The ratios of this run, in a line benchstat ignores (b.Logf would
	// need -v); across runs, benchstat -col /impl gives them.
	f, p := got["flatnet"], got["ptp"]
	if f == nil || p == nil {
		return
	}
	fmt.Printf("PodStart flatnet/ptp: to Running p50 %.2f p99 %.2f, to first packet p50 %.2f p99 %.2f\n",
		ratio(f.running, p.running, 0.5), ratio(f.running, p.running, 0.99),
		ratio(f.answered, p.answered, 0.5), ratio(f.answered, p.answered, 0.99))
}

// podStarter creates the benchmark's pods and watches them start.
type podStarter struct {
	e      *env
	pods   typedcorev1.PodInterface
	rounds int
}

func newPodStarter(b *testing.B, e *env) *podStarter {
	cs, err := kubernetes.NewForConfig(e.Kube().RESTConfig())
	if err != nil {
		b.Fatal(err)
	}
	s := &podStarter{e: e, pods: cs.CoreV1().Pods(lab.PodNamespace)}
	// The ServiceAccount admission refuses pods until the controller-manager
	// made the namespace's default ServiceAccount.
	eventually(b, time.Minute, "ServiceAccount default in "+lab.PodNamespace, func() (bool, string) {
		_, err := cs.CoreV1().ServiceAccounts(lab.PodNamespace).Get(context.Background(), "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	return s
}

// podStart is what one pod's start took.
type podStart struct {
	name, node string
	ip         netip.Addr
	phase      corev1.PodPhase
	created    time.Time // the create call returned
	running    time.Time // the watch saw phase Running
	answered   time.Time // the connection that got the first HTTP answer was made
}

// roundState is what a round has seen so far: the pods, as the watch shows
// them, and the answers of their addresses. The watch, the route watches
// and the polls write it; round reads it.
type roundState struct {
	mu      sync.Mutex
	pods    map[string]*podStart
	polls   map[netip.Addr]*answer
	workers sync.WaitGroup // the watch's reader, the route watches, the polls
}

// answer is an address's first answer, or the last error asking for it.
type answer struct {
	at  time.Time
	err error
}

func (r *roundState) pod(name string) *podStart {
	if r.pods[name] == nil {
		r.pods[name] = &podStart{name: name}
	}
	return r.pods[name]
}

// poll starts asking ip for its first answer from node, once per address.
// The caller holds r.mu.
func (r *roundState) poll(ctx context.Context, nodeNS string, ip netip.Addr) {
	if r.polls[ip] != nil {
		return
	}
	a := &answer{}
	r.polls[ip] = a
	r.workers.Go(func() {
		at, err := firstAnswer(ctx, nodeNS, ip)
		r.mu.Lock()
		a.at, a.err = at, err
		r.mu.Unlock()
	})
}

// round starts benchPods pods on nw, waits until each runs and answers,
// deletes them and waits until they are gone.
//
// An address is asked for its answer from the moment its /32 route appears
// on its node (the CNI ADD made it) or the pod's status shows it, whichever
// comes first: the kubelet reports a pod's address with its next status,
// often together with Running, which would hide an answer that came first.
func (s *podStarter) round(b *testing.B, nw podNetwork) []*podStart {
	b.Helper()
	s.rounds++
	tag := fmt.Sprintf("%s-%d", nw.name, s.rounds)
	sel := roundLabel + "=" + tag
	ctx, cancel := context.WithTimeout(context.Background(), roundTimeout)
	defer cancel()
	r := &roundState{pods: map[string]*podStart{}, polls: map[netip.Addr]*answer{}}
	defer func() {
		cancel()
		r.workers.Wait()
	}()

	for i, node := range benchNodes {
		routes, err := podRoutes(ctx, s.e.NS(node), nw.pool(i))
		if err != nil {
			b.Fatalf("node %s: watch routes: %v", node, err)
		}
		r.workers.Go(func() {
			for ip := range routes {
				r.mu.Lock()
				r.poll(ctx, s.e.NS(node), ip)
				r.mu.Unlock()
			}
		})
	}
	list, err := s.pods.List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		b.Fatal(err)
	}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = sel
			return s.pods.Watch(ctx, o)
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	// The watch stamps what it sees when it sees it.
	r.workers.Go(func() {
		for ev := range w.ResultChan() {
			now := time.Now()
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			r.mu.Lock()
			st := r.pod(pod.Name)
			st.phase = pod.Status.Phase
			if st.running.IsZero() && pod.Status.Phase == corev1.PodRunning {
				st.running = now
			}
			if ip, ok := podIPv4(pod); ok && !st.ip.IsValid() && pod.Spec.NodeName != "" {
				st.ip, st.node = ip, pod.Spec.NodeName
				r.poll(ctx, s.e.NS(st.node), ip)
			}
			r.mu.Unlock()
		}
	})

	for i := range benchPods {
		name := fmt.Sprintf("podstart-%s-%02d", tag, i)
		if _, err := s.pods.Create(ctx, benchPod(name, tag, benchNodes[i%len(benchNodes)]), metav1.CreateOptions{}); err != nil {
			b.Fatalf("create pod %s: %v", name, err)
		}
		now := time.Now()
		r.mu.Lock()
		r.pod(name).created = now
		r.mu.Unlock()
	}
	for {
		var done []*podStart
		var pending []string
		r.mu.Lock()
		for _, st := range r.pods {
			a := r.polls[st.ip]
			if st.ip.IsValid() && a != nil && !a.at.IsZero() {
				st.answered = a.at
			}
			if st.running.IsZero() || st.answered.IsZero() {
				detail := fmt.Sprintf("%s (node %q, %s, address %v, running %v, answered %v", st.name, st.node, st.phase, st.ip, !st.running.IsZero(), !st.answered.IsZero())
				if a != nil && a.err != nil {
					detail += ": " + a.err.Error()
				}
				pending = append(pending, detail+")")
				continue
			}
			done = append(done, st)
		}
		r.mu.Unlock()
		if len(pending) == 0 && len(done) == benchPods {
			s.deleteRound(b, sel, nw)
			return done
		}
		if ctx.Err() != nil {
			slices.Sort(pending)
			b.Fatalf("round %s: %d of %d pods running and answering within %s; the others: %s",
				tag, len(done), benchPods, roundTimeout, strings.Join(pending, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// podRoutes sends the addresses in pool of the host routes (/32, main
// table, unicast) that appear in a node's namespace from now until ctx
// ends: a CNI ADD, flatnet's or ptp's, routes its pod's address to the
// pod's veth there.
func podRoutes(ctx context.Context, nodeNS string, pool netip.Prefix) (<-chan netip.Addr, error) {
	updates := make(chan netlink.RouteUpdate, 256)
	done := make(chan struct{})
	// The subscription's socket is made in the node's namespace and stays there.
	if _, err := netns.Do(nodeNS, func() (struct{}, error) {
		return struct{}{}, netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{})
	}); err != nil {
		return nil, err
	}
	out := make(chan netip.Addr)
	go func() {
		defer func() {
			close(done)
			for range updates { // until the subscription has stopped
			}
			close(out)
		}()
		for {
			var u netlink.RouteUpdate
			select {
			case <-ctx.Done():
				return
			case u = <-updates:
			}
			if u.Type != unix.RTM_NEWROUTE || u.Dst == nil || u.Table != unix.RT_TABLE_MAIN || u.Route.Type != unix.RTN_UNICAST {
				continue
			}
			ip, ok := netip.AddrFromSlice(u.Dst.IP)
			if ones, bits := u.Dst.Mask.Size(); !ok || ones != bits || !pool.Contains(ip.Unmap()) {
				continue
			}
			select {
			case out <- ip.Unmap():
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// benchPod is an echo pod pinned to node through the scheduler.
func benchPod(name, tag, node string) *corev1.Pod {
	grace := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{roundLabel: tag}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{corev1.LabelHostname: node},
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name:            "echo",
				Image:           "ghcr.io/flatnet-io/flatnet-echo:" + lab.EchoTag,
				ImagePullPolicy: corev1.PullNever,
				Ports:           []corev1.ContainerPort{{ContainerPort: echoPort, Name: "http"}},
			}},
		},
	}
}

func podIPv4(pod *corev1.Pod) (netip.Addr, bool) {
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil && a.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// firstAnswer asks the echo server at ip, from the node's network
// namespace, every answerPoll until it answers HTTP, and returns when the
// connection that got the answer was made.
func firstAnswer(ctx context.Context, nodeNS string, ip netip.Addr) (time.Time, error) {
	addr := netip.AddrPortFrom(ip, echoPort).String()
	// The goroutine stays in the namespace for the whole poll: each socket
	// is made there.
	return netns.Do(nodeNS, func() (time.Time, error) {
		var last error
		for {
			at, err := httpAnswer(addr)
			if err == nil {
				return at, nil
			}
			last = err
			select {
			case <-ctx.Done():
				return time.Time{}, fmt.Errorf("no answer from %s: %w", addr, last)
			case <-time.After(answerPoll):
			}
		}
	})
}

// httpAnswer connects to addr, asks GET / and returns when the connection
// was made, if the answer is 200.
func httpAnswer(addr string) (time.Time, error) {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return time.Time{}, err
	}
	at := time.Now()
	defer c.Close()
	if err := c.SetDeadline(at.Add(2 * time.Second)); err != nil {
		return time.Time{}, err
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return time.Time{}, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return time.Time{}, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return time.Time{}, fmt.Errorf("GET http://%s/: %s", addr, resp.Status)
	}
	return at, nil
}

// deleteRound deletes a round's pods and waits until the API server has
// none left (the kubelets have stopped their sandboxes: the CNI DELs ran)
// and, on ptp, host-local has released every address.
func (s *podStarter) deleteRound(b *testing.B, sel string, nw podNetwork) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), goneTimeout)
	defer cancel()
	if err := s.pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: sel}); err != nil {
		b.Fatalf("delete pods %s: %v", sel, err)
	}
	eventually(b, goneTimeout, "pods "+sel+" gone", func() (bool, string) {
		l, err := s.pods.List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return false, err.Error()
		}
		return len(l.Items) == 0, fmt.Sprintf("%d left", len(l.Items))
	})
	if nw.hostLocal != "" {
		s.waitHostLocalReleased(b, nw.hostLocal)
	}
}

// firstConflist is where a benchmarked network's conflist goes: before
// flatnet's 10-flatnet.conflist, and containerd uses the first.
const firstConflist = "/etc/cni/net.d/00-bench.conflist"

// use makes every node's containerd use nw and waits until it does. A
// conflist is staged under a name no runtime reads, renamed in, then
// completed with its newline: containerd 1.6 ignores create events but acts
// on the rename and the write (cni/install/write.go). Removing it hands the
// nodes back to flatnet.
func (s *podStarter) use(b *testing.B, nw podNetwork) {
	b.Helper()
	for i, node := range benchNodes {
		if nw.conflist == nil {
			s.nodeCommand(b, node, "", "rm", "-f", firstConflist)
			continue
		}
		script := fmt.Sprintf("set -e; tmp=%[1]s/.%[2]s.tmp; cat > $tmp; mv $tmp %[1]s/%[2]s; echo >> %[1]s/%[2]s",
			filepath.Dir(firstConflist), filepath.Base(firstConflist))
		s.nodeCommand(b, node, nw.conflist(i), "sh", "-c", script)
	}
	s.waitNetwork(b, nw)
}

func (s *podStarter) nodeCommand(b *testing.B, node, stdin string, name string, args ...string) {
	b.Helper()
	kn, err := s.e.KubeNode(node)
	if err != nil {
		b.Fatal(err)
	}
	cmd, err := kn.Command(name, args...)
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("node %s: %s %s: %v: %s", node, name, strings.Join(args, " "), err, out)
	}
}

// waitNetwork starts a probe pod on every node, until the probes get their
// addresses from nw's pool on each: then containerd has taken up the
// conflist. The probes are deleted each time.
func (s *podStarter) waitNetwork(b *testing.B, nw podNetwork) {
	b.Helper()
	deadline := time.Now().Add(switchTimeout)
	for try := 1; ; try++ {
		tag := fmt.Sprintf("probe-%s-%d-%d", nw.name, s.rounds, try)
		var wrong []string
		for i, node := range benchNodes {
			name := fmt.Sprintf("podstart-%s-%s", tag, node)
			if _, err := s.pods.Create(context.Background(), benchPod(name, tag, node), metav1.CreateOptions{}); err != nil {
				b.Fatalf("create pod %s: %v", name, err)
			}
			var ip netip.Addr
			eventually(b, switchTimeout, "an address for pod "+name, func() (bool, string) {
				pod, err := s.pods.Get(context.Background(), name, metav1.GetOptions{})
				if err != nil {
					return false, err.Error()
				}
				var ok bool
				ip, ok = podIPv4(pod)
				return ok, string(pod.Status.Phase)
			})
			if !nw.pool(i).Contains(ip) {
				wrong = append(wrong, fmt.Sprintf("pod %s on %s got %s, not from %s", name, node, ip, nw.pool(i)))
			}
		}
		s.deleteRound(b, roundLabel+"="+tag, nw)
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("containerd did not take up %s's conflist within %s: %s", nw.name, switchTimeout, strings.Join(wrong, "; "))
		}
		time.Sleep(time.Second)
	}
}

// waitHostLocalReleased waits until host-local holds no address of network
// on any node, so that none of its pods is left when its conflist goes.
func (s *podStarter) waitHostLocalReleased(b *testing.B, network string) {
	b.Helper()
	for _, node := range benchNodes {
		kn, err := s.e.KubeNode(node)
		if err != nil {
			b.Fatal(err)
		}
		dir := kn.Path("/var/lib/cni/networks/" + network)
		eventually(b, goneTimeout, "host-local's addresses on "+node+" released", func() (bool, string) {
			entries, err := os.ReadDir(dir)
			if errors.Is(err, fs.ErrNotExist) {
				return true, "" // no pod of it ever ran there
			}
			if err != nil {
				return false, err.Error()
			}
			var held []string
			for _, e := range entries {
				if _, err := netip.ParseAddr(e.Name()); err == nil {
					held = append(held, e.Name())
				}
			}
			return len(held) == 0, strings.Join(held, " ")
		})
	}
}

// startTimes gathers the rounds' per-pod durations from creation.
type startTimes struct{ running, answered []time.Duration }

func (t *startTimes) add(pods []*podStart) {
	for _, p := range pods {
		t.running = append(t.running, p.running.Sub(p.created))
		t.answered = append(t.answered, p.answered.Sub(p.created))
	}
}

func (t *startTimes) report(b *testing.B) {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	b.ReportMetric(ms(quantile(t.running, 0.5)), "ms-to-running-p50")
	b.ReportMetric(ms(quantile(t.running, 0.99)), "ms-to-running-p99")
	b.ReportMetric(ms(quantile(t.answered, 0.5)), "ms-to-first-packet-p50")
	b.ReportMetric(ms(quantile(t.answered, 0.99)), "ms-to-first-packet-p99")
	b.ReportMetric(0, "ns/op")
}

// quantile is the q-quantile of d (the lower neighbour of the rank).
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(d))
	return s[int(q*float64(len(s)-1))]
}

func ratio(a, b []time.Duration, q float64) float64 {
	return float64(quantile(a, q)) / float64(quantile(b, q))
}
