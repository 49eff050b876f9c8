package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/flatnet-io/flatnet/lab/topology"
)

// Services on real nodes, through the nodes' kube-proxy: the lab makes them
// beside its echo pods and measures the paths the Kubernetes network model
// names for them. flatnet does no Service translation of its own.

// soloPod is the pod of the hairpin check: the only backend of its Service.
const soloPod = "solo"

// servicesManifest: per real node a NodePort Service over that node's echo
// pods; echo-headless over all of them; solo, a pod and its own Service.
func (l *Lab) servicesManifest() string {
	var b strings.Builder
	real := l.realNodes()
	for _, n := range real {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: echo-%[1]s, namespace: %[2]s}
spec:
  type: NodePort
  selector: {app: echo, node: %[1]s}
  ports: [{name: http, port: 80, targetPort: 8080}]
`, n.Name, PodNamespace)
	}
	fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: echo-headless, namespace: %[1]s}
spec:
  clusterIP: None
  selector: {app: echo}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: %[2]s, namespace: %[1]s, labels: {app: solo}}
spec:
  nodeName: %[3]s
  terminationGracePeriodSeconds: 1
  containers:
    - name: echo
      image: ghcr.io/flatnet-io/flatnet-echo:%[4]s
      imagePullPolicy: Never
      readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  selector: {app: solo}
  ports: [{name: http, port: 80, targetPort: 8080}]
`, PodNamespace, soloPod, real[0].Name, EchoTag)
	return b.String()
}

// service is what the checks need of a Service.
type service struct {
	clusterIP netip.Addr
	nodePort  int
}

func (l *Lab) services() (map[string]service, error) {
	out, err := l.kube.Kubectl("get", "services", "-n", PodNamespace, "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
			Spec     struct {
				ClusterIP string `json:"clusterIP"`
				Ports     []struct {
					NodePort int `json:"nodePort"`
				} `json:"ports"`
			} `json:"spec"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, err
	}
	svcs := map[string]service{}
	for _, it := range list.Items {
		s := service{}
		s.clusterIP, _ = netip.ParseAddr(it.Spec.ClusterIP)
		if len(it.Spec.Ports) > 0 {
			s.nodePort = it.Spec.Ports[0].NodePort
		}
		svcs[it.Metadata.Name] = s
	}
	return svcs, nil
}

// httpGet sends GET path to addr from inside a network namespace (a path
// under /proc or /run/netns) and returns the response's body, trimmed: the
// echo server answers / with the client address it saw, /hostname with its
// pod's name.
func httpGet(netnsPath string, addr netip.AddrPort, path string) (string, error) {
	var conn net.Conn
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		var err error
		conn, err = net.DialTimeout("tcp", addr.String(), 3*time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		return "", err
	}
	resp, err := io.ReadAll(conn)
	if err != nil {
		return "", err
	}
	head, body, ok := strings.Cut(string(resp), "\r\n\r\n")
	if !ok || !strings.Contains(strings.SplitN(head, "\r\n", 2)[0], " 200 ") {
		return "", fmt.Errorf("not a 200 response: %q", head)
	}
	return strings.TrimSpace(body), nil
}

// ServiceChecks measures the Service rows.
func (l *Lab) ServiceChecks(_ context.Context) ([]Check, error) {
	svcs, err := l.services()
	if err != nil {
		return nil, err
	}
	for _, n := range l.realNodes() {
		if _, ok := svcs["echo-"+n.Name]; !ok {
			return nil, nil // no workload (up --pods 0): nothing to measure
		}
	}
	pods, err := l.realPods()
	if err != nil {
		return nil, err
	}
	var checks []Check
	add := func(rule, from, to string, target netip.AddrPort, err error, detail string) {
		c := Check{Rule: rule, From: from, To: to, Target: "-", OK: err == nil, Detail: detail}
		if target.IsValid() {
			c.Target = target.String()
		}
		if err != nil {
			c.Detail = err.Error()
		}
		checks = append(checks, c)
	}
	// A pod reaches every other node's pods through their Service, and the
	// backend sees the pod's own address.
	for _, p := range pods {
		if !strings.HasPrefix(p.Name, PodNamespace+"/echo-") {
			continue
		}
		for _, n := range l.realNodes() {
			if n.Name == p.Node {
				continue
			}
			s := svcs["echo-"+n.Name]
			target := netip.AddrPortFrom(s.clusterIP, 80)
			body, err := httpGet(p.NS, target, "/")
			if err == nil {
				var seen netip.AddrPort
				if seen, err = netip.ParseAddrPort(body); err == nil && !slices.Contains(p.Addrs, seen.Addr().Unmap()) {
					err = fmt.Errorf("backend saw %s, not the pod's own %v (NAT)", seen.Addr(), p.Addrs)
				}
			}
			add(RuleServiceAcross, p.Node+"/"+p.Name, "service echo-"+n.Name, target, err, "TCP, source "+body)
		}
	}
	// Hairpin: solo reaches itself through its own Service.
	for _, p := range pods {
		if p.Name != PodNamespace+"/"+soloPod {
			continue
		}
		target := netip.AddrPortFrom(svcs[soloPod].clusterIP, 80)
		body, err := httpGet(p.NS, target, "/hostname")
		if err == nil && body != soloPod {
			err = fmt.Errorf("answered by %q, not itself", body)
		}
		add(RuleHairpin, p.Node+"/"+p.Name, "service "+soloPod, target, err, "HTTP, answered by "+body)
	}
	// Every node reaches every node's Service; the ToR every NodePort on
	// every node.
	for _, n := range l.realNodes() {
		for _, m := range l.realNodes() {
			s := svcs["echo-"+m.Name]
			target := netip.AddrPortFrom(s.clusterIP, 80)
			_, err := httpGet("/run/netns/"+l.NS(n.Name), target, "/")
			add(RuleNodeService, n.Name, "service echo-"+m.Name, target, err, "HTTP")
		}
	}
	for _, tor := range l.T.NodesOf(topology.RoleFRR) {
		for _, n := range l.realNodes() {
			addrs, err := l.bgpAddrs(n)
			if err != nil {
				return nil, err
			}
			for _, m := range l.realNodes() {
				target := netip.AddrPortFrom(addrs[0], uint16(svcs["echo-"+m.Name].nodePort))
				_, err := httpGet("/run/netns/"+l.NS(tor.Name), target, "/")
				add(RuleNodePort, tor.Name, n.Name+" → service echo-"+m.Name, target, err, "HTTP")
			}
		}
	}
	// Headless: no ClusterIP; its endpoints are exactly the echo pods'
	// addresses of the Service's family (IPv4: the lab's Service range).
	want := map[netip.Addr]bool{}
	for _, p := range pods {
		if strings.HasPrefix(p.Name, PodNamespace+"/echo-") {
			for _, a := range p.Addrs {
				want[a] = a.Is4()
			}
		}
	}
	for a, v4 := range want {
		if !v4 {
			delete(want, a)
		}
	}
	got, err := l.endpointAddrs("echo-headless")
	if err == nil && svcs["echo-headless"].clusterIP.IsValid() {
		err = fmt.Errorf("has a ClusterIP %s", svcs["echo-headless"].clusterIP)
	}
	if err == nil {
		for a := range want {
			if !got[a] {
				err = fmt.Errorf("pod address %s missing from its EndpointSlices", a)
			}
		}
		for a := range got {
			if !want[a] {
				err = fmt.Errorf("%s in its EndpointSlices is no echo pod's", a)
			}
		}
	}
	add(RuleHeadless, "API", "service echo-headless", netip.AddrPort{}, err, fmt.Sprintf("%d addresses", len(got)))
	// By name: each echo pod resolves the other nodes' Services through
	// CoreDNS and reaches them; the headless name gives the pods.
	for _, p := range pods {
		if !strings.HasPrefix(p.Name, PodNamespace+"/echo-") {
			continue
		}
		for _, n := range l.realNodes() {
			if n.Name == p.Node {
				continue
			}
			name := fmt.Sprintf("echo-%s.%s.svc.cluster.local", n.Name, PodNamespace)
			addrs, err := lookup(p.NS, name)
			var target netip.AddrPort
			if err == nil && (len(addrs) != 1 || addrs[0] != svcs["echo-"+n.Name].clusterIP) {
				err = fmt.Errorf("%s resolved to %v, want its ClusterIP %s", name, addrs, svcs["echo-"+n.Name].clusterIP)
			}
			if err == nil {
				target = netip.AddrPortFrom(addrs[0], 80)
				_, err = httpGet(p.NS, target, "/")
			}
			add(RuleDNS, p.Node+"/"+p.Name, name, target, err, "DNS, then HTTP")
		}
		headless := fmt.Sprintf("echo-headless.%s.svc.cluster.local", PodNamespace)
		addrs, err := lookup(p.NS, headless)
		if err == nil && len(addrs) != len(want) {
			err = fmt.Errorf("%s resolved to %v, want the %d echo pods' addresses", headless, addrs, len(want))
		}
		for _, a := range addrs {
			if err == nil && !want[a] {
				err = fmt.Errorf("%s resolved to %s, no echo pod's", headless, a)
			}
		}
		add(RuleDNS, p.Node+"/"+p.Name, headless, netip.AddrPort{}, err, fmt.Sprintf("DNS, %d pod addresses", len(addrs)))
		break // one pod asks for the headless name
	}
	return checks, nil
}

// endpointAddrs lists the ready addresses of a Service's EndpointSlices.
func (l *Lab) endpointAddrs(svc string) (map[netip.Addr]bool, error) {
	out, err := l.kube.Kubectl("get", "endpointslices", "-n", PodNamespace, "-l", "kubernetes.io/service-name="+svc, "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Endpoints []struct {
				Addresses  []string `json:"addresses"`
				Conditions struct {
					Ready *bool `json:"ready"`
				} `json:"conditions"`
			} `json:"endpoints"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, err
	}
	got := map[netip.Addr]bool{}
	for _, it := range list.Items {
		for _, e := range it.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil {
					got[ip] = true
				}
			}
		}
	}
	return got, nil
}
