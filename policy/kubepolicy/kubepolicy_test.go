package kubepolicy

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/flatnet-io/flatnet/policy"
)

// recorder is an Enforcer that keeps what it was given.
type recorder struct {
	mu    sync.Mutex
	sets  []policy.Ruleset
	syncs int
}

func (r *recorder) Set(rs policy.Ruleset) {
	r.mu.Lock()
	r.sets = append(r.sets, rs)
	r.mu.Unlock()
}

func (r *recorder) Sync(context.Context) error {
	r.mu.Lock()
	r.syncs++
	r.mu.Unlock()
	return nil
}

func (r *recorder) last() (policy.Ruleset, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.sets) == 0 {
		return policy.Ruleset{}, 0
	}
	return r.sets[len(r.sets)-1], len(r.sets)
}

// waitFor polls until cond holds on the last Ruleset.
func (r *recorder) waitFor(t *testing.T, what string, cond func(policy.Ruleset) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if rs, n := r.last(); n > 0 && cond(rs) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	rs, _ := r.last()
	t.Fatalf("timed out waiting for %s; last ruleset %+v", what, rs)
}

// ipamList is a Local whose answer the test changes. With hold set, a
// listing reads IPAM, signals held, and answers only when released: a
// refresh in flight.
type ipamList struct {
	mu      sync.Mutex
	pods    []policy.LocalPod
	err     error
	hold    bool
	held    chan struct{}
	release chan struct{}
}

func (l *ipamList) list(context.Context) ([]policy.LocalPod, error) {
	l.mu.Lock()
	pods, err, hold := append([]policy.LocalPod(nil), l.pods...), l.err, l.hold
	l.hold = false
	l.mu.Unlock()
	if hold {
		l.held <- struct{}{}
		<-l.release
	}
	return pods, err
}

func (l *ipamList) set(pods ...policy.LocalPod) {
	l.mu.Lock()
	l.pods = pods
	l.mu.Unlock()
}

func pod(ns, name, ip string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: "node1"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func local(ns, name, handle, ip string) policy.LocalPod {
	return policy.LocalPod{Namespace: ns, Name: name, Handle: handle, Addrs: []netip.Addr{netip.MustParseAddr(ip)}}
}

func denyAll(ns string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "deny"},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
	}
}

func start(t *testing.T, client *fake.Clientset, l *ipamList, rec *recorder) *Controller {
	t.Helper()
	f := informers.NewSharedInformerFactory(client, 0)
	c := New(Options{
		Policies:   f.Networking().V1().NetworkPolicies().Informer(),
		Namespaces: f.Core().V1().Namespaces().Informer(),
		Pods:       f.Core().V1().Pods().Informer(),
		Local:      l.list,
		Enforcer:   rec,
		Refresh:    50 * time.Millisecond,
		Debounce:   time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
	return c
}

func isolated(rs policy.Ruleset, handle string) bool {
	p, ok := rs.Pod(policy.VethOf(handle))
	return ok && p.Ingress != nil
}

func TestFollowsTheAPIAndIPAM(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}},
		pod("x", "a", "10.0.0.1", nil),
		pod("x", "b", "10.0.0.2", nil),
	)
	l := &ipamList{pods: []policy.LocalPod{local("x", "a", "a/eth0", "10.0.0.1")}}
	rec := &recorder{}
	c := start(t, client, l, rec)
	rec.waitFor(t, "the first ruleset, a open", func(rs policy.Ruleset) bool {
		p, ok := rs.Pod(policy.VethOf("a/eth0"))
		return ok && p.Ingress == nil
	})

	// A policy appears: a is isolated.
	if _, err := client.NetworkingV1().NetworkPolicies("x").Create(ctx, denyAll("x"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "a isolated", func(rs policy.Ruleset) bool { return isolated(rs, "a/eth0") })

	// A CNI ADD of b while a refresh is in flight, its listing read before
	// the allocation: Attach returns after a Sync with b in the ruleset,
	// and the refresh's older listing does not drop b.
	l.mu.Lock()
	l.hold, l.held, l.release = true, make(chan struct{}), make(chan struct{})
	l.mu.Unlock()
	<-l.held
	a, b := local("x", "a", "a/eth0", "10.0.0.1"), local("x", "b", "b/eth0", "10.0.0.2")
	l.set(a, b) // IPAM has b from now on
	rec.mu.Lock()
	syncs := rec.syncs
	rec.mu.Unlock()
	if err := c.Attach(ctx, b); err != nil {
		t.Fatal(err)
	}
	if rs, _ := rec.last(); !isolated(rs, "b/eth0") {
		t.Error("after Attach, b is not isolated")
	}
	rec.mu.Lock()
	if rec.syncs != syncs+1 {
		t.Errorf("Attach synced %d times, want once", rec.syncs-syncs)
	}
	rec.mu.Unlock()
	close(l.release)
	time.Sleep(150 * time.Millisecond) // that refresh and a few more
	if rs, _ := rec.last(); !isolated(rs, "b/eth0") {
		t.Fatal("a refresh dropped the pod Attach added")
	}

	// A CNI DEL: b goes, and refreshes (IPAM without b) keep it gone.
	l.set(a)
	c.Detach("b/eth0")
	rec.waitFor(t, "b gone", func(rs policy.Ruleset) bool {
		_, ok := rs.Pod(policy.VethOf("b/eth0"))
		return !ok
	})

	// GC released an attachment behind the agent's back: a refresh drops it.
	l.set()
	rec.waitFor(t, "a gone", func(rs policy.Ruleset) bool {
		_, ok := rs.Pod(policy.VethOf("a/eth0"))
		return !ok
	})
	l.set(a)
	rec.waitFor(t, "a back", func(rs policy.Ruleset) bool { return isolated(rs, "a/eth0") })

	// The policy goes: a is open again.
	if err := client.NetworkingV1().NetworkPolicies("x").Delete(ctx, "deny", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "a open", func(rs policy.Ruleset) bool { return !isolated(rs, "a/eth0") })
}

// Nothing is Set before the informers and IPAM have answered; Attach waits.
func TestNothingBeforeReady(t *testing.T) {
	client := fake.NewClientset()
	l := &ipamList{err: errors.New("store down")}
	rec := &recorder{}
	c := start(t, client, l, rec)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Attach(ctx, local("x", "a", "a/eth0", "10.0.0.1")); !errors.Is(err, ErrNotReady) {
		t.Errorf("Attach before ready = %v, want ErrNotReady", err)
	}
	if _, n := rec.last(); n != 0 {
		t.Errorf("%d rulesets set before IPAM answered", n)
	}
	l.mu.Lock()
	l.err = nil
	l.mu.Unlock()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := c.Attach(ctx2, local("x", "a", "a/eth0", "10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	// The Pod object is not known: closed.
	if rs, _ := rec.last(); !isolated(rs, "a/eth0") {
		t.Error("an attachment whose Pod is unknown is open")
	}
}
