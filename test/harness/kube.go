package harness

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// A real Kubernetes API server for tests and the lab: Debian's etcd and a
// kube-apiserver built from the module proxy (make kube-bins), with TLS, static
// token authentication and RBAC. Tests run it on 127.0.0.1 ports the kernel
// picked; the lab runs it in a network namespace of its own (KubeOptions). No
// controller manager, scheduler or kubelet runs: objects are what tests make
// them.

// AdminToken authenticates as "admin" in group system:masters.
const AdminToken = "flatnet-test-admin"

// KubeBinDir is where make kube-bins put kube-apiserver: $FLATNET_KUBE_BIN,
// else the Makefile's cache directory, keyed the same way by the hash of
// test/kube/apiserver/go.sum.
func KubeBinDir() string {
	if d := os.Getenv("FLATNET_KUBE_BIN"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	sum, err := os.ReadFile(filepath.Join(Root(), "test", "kube", "apiserver", "go.sum"))
	if err != nil {
		return filepath.Join(home, ".cache", "flatnet", "kube-unknown")
	}
	h := sha256.Sum256(sum)
	return filepath.Join(home, ".cache", "flatnet", "kube-"+hex.EncodeToString(h[:])[:12])
}

// kubeTools are the programs StartKube and Kubectl run, by the name Require
// reports.
func kubeTools() map[string]string {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		kubectl = filepath.Join(KubeBinDir(), "kubectl")
	}
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		etcd = "/usr/bin/etcd" // Debian's etcd-server
	}
	return map[string]string{
		"etcd":           etcd,
		"kube-apiserver": filepath.Join(KubeBinDir(), "kube-apiserver"),
		"kubectl":        kubectl,
	}
}

// RequireKube stops t unless etcd, kube-apiserver and kubectl are there: it
// fails t in CI (CI=true), where a skipped test has not run, and skips it
// elsewhere. It needs no root.
func RequireKube(t testing.TB) {
	t.Helper()
	err := RequireKubeTools()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(err)
	}
	t.Skip(err)
}

// RequireKubeTools says which of etcd, kube-apiserver and kubectl are
// missing, if any.
func RequireKubeTools() error {
	var missing []string
	for name, path := range kubeTools() {
		if st, err := os.Stat(path); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, name+" ("+path+")")
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return fmt.Errorf("the Kubernetes API server needs: %s (make deps kube-bins installs and builds them)", strings.Join(missing, ", "))
}

// Kube is a running etcd and kube-apiserver.
type Kube struct {
	URL        string // https://<address>:<port>
	Dir        string // certificates, tokens, data and logs
	CAFile     string // the CA that signed the server's certificate
	Kubeconfig string // admin kubeconfig, for kubectl --kubeconfig
	// ServiceAccountKey is the private key ServiceAccount tokens are
	// signed with.
	ServiceAccountKey string

	opts  KubeOptions
	root  string // Dir's parent, with the logs of failed start attempts
	caPEM []byte
	procs []*proc
	stop  sync.Once
}

// KubeOptions says where a Kube runs. The zero value is a test's server.
type KubeOptions struct {
	// NetNS, when set, names the network namespace (under /run/netns) that
	// etcd and kube-apiserver run in, on the standard ports (2379, 2380,
	// 6443): the namespace is theirs. Kubectl and the REST configurations
	// reach the server inside it. Empty: this process's namespace, on ports
	// the kernel picks.
	NetNS string
	// Address is the API server's bind address, in its certificate too;
	// 127.0.0.1 when invalid.
	Address netip.Addr
	// Detach leaves the servers running after this process ends (the lab);
	// otherwise they die with it.
	Detach bool
	// Nodes makes the server fit for real nodes: the ServiceAccount
	// admission plugin on (pods get their token volume; a controller-manager
	// must then make the default ServiceAccounts), the Node authorizer before
	// RBAC, and Tokens added to the static token file.
	Nodes bool
	// Tokens are lines of the static token file besides the admin's:
	// token,user,uid,"group1,group2".
	Tokens []string
}

// StartKubeServer starts etcd and kube-apiserver in dir, a directory of
// their own that Stop leaves in place.
func StartKubeServer(dir string, opts KubeOptions) (*Kube, error) {
	if err := RequireKubeTools(); err != nil {
		return nil, err
	}
	return startKube(dir, opts)
}

// proc is a server process of a Kube.
type proc struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{} // closed once Wait returned
}

// StartKube starts a fresh API server for t in a directory of its own, and
// stops it when t ends.
func StartKube(t testing.TB) *Kube {
	t.Helper()
	RequireKube(t)
	dir, err := os.MkdirTemp("", "flatnet-kube-")
	if err != nil {
		t.Fatal(err)
	}
	k, err := startKube(dir, KubeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		k.Stop()
		if !t.Failed() {
			os.RemoveAll(k.root)
		} else {
			t.Logf("etcd and kube-apiserver logs kept in %s", k.Dir)
		}
	})
	return k
}

// SharedKube is one API server for a whole test binary: the first Get starts
// it; TestMain calls Stop after m.Run. Tests sharing it must not run in
// parallel on the same objects.
type SharedKube struct {
	once sync.Once
	kube *Kube
	err  error
}

// Get returns the shared server, starting it on first use; it fails or skips
// t like RequireKube.
func (s *SharedKube) Get(t testing.TB) *Kube {
	t.Helper()
	RequireKube(t)
	s.once.Do(func() {
		dir, err := os.MkdirTemp("", "flatnet-kube-")
		if err != nil {
			s.err = err
			return
		}
		s.kube, s.err = startKube(dir, KubeOptions{})
	})
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.kube
}

// Stop stops the shared server, if it was started, and removes its
// directory, unless a test failed (TestMain's m.Run returned non-zero): then
// it keeps the logs and says where.
func (s *SharedKube) Stop(failed bool) {
	if s.kube == nil {
		return
	}
	s.kube.Stop()
	if failed {
		fmt.Fprintf(os.Stderr, "etcd and kube-apiserver logs kept in %s\n", s.kube.Dir)
		return
	}
	os.RemoveAll(s.kube.root)
}

// startKube starts etcd and kube-apiserver in dir; a port taken between
// picking and binding (another test package starting at the same time) is
// retried with new ports.
func startKube(dir string, opts KubeOptions) (*Kube, error) {
	if !opts.Address.IsValid() {
		opts.Address = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	var err error
	for attempt := range 3 {
		var k *Kube
		k, err = tryStartKube(filepath.Join(dir, fmt.Sprint(attempt)), opts)
		if err == nil {
			k.root = dir
			return k, nil
		}
	}
	return nil, err
}

func tryStartKube(dir string, opts KubeOptions) (*Kube, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	k := &Kube{Dir: dir, CAFile: filepath.Join(dir, "ca.crt"), Kubeconfig: filepath.Join(dir, "admin.kubeconfig"), opts: opts}
	pki, err := writePKI(dir, opts.Address)
	if err != nil {
		return nil, fmt.Errorf("start kube: %w", err)
	}
	k.caPEM, k.ServiceAccountKey = pki.caPEM, pki.saKey
	ports := []int{2379, 2380, 6443} // a namespace of their own
	if opts.NetNS == "" {
		if ports, err = freePorts(3); err != nil {
			return nil, fmt.Errorf("start kube: %w", err)
		}
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	k.URL = "https://" + netip.AddrPortFrom(opts.Address, uint16(ports[2])).String()
	tools := kubeTools()

	if err := k.spawn("etcd", tools["etcd"],
		"--name=default", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL, "--log-level=warn", "--logger=zap",
	); err != nil {
		return nil, err
	}
	if err := k.waitHTTP(etcdURL+"/health", k.httpClient(nil), nil); err != nil {
		k.Stop()
		return nil, err
	}

	tokens := filepath.Join(dir, "tokens.csv")
	tokenLines := append([]string{AdminToken + `,admin,admin,"system:masters"`}, opts.Tokens...)
	if err := os.WriteFile(tokens, []byte(strings.Join(tokenLines, "\n")+"\n"), 0o600); err != nil {
		k.Stop()
		return nil, err
	}
	authz, admission := "--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount"
	if opts.Nodes {
		authz, admission = "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction"
	}
	if err := k.spawn("kube-apiserver", tools["kube-apiserver"],
		"--etcd-servers="+etcdURL,
		"--bind-address="+opts.Address.String(), "--advertise-address="+opts.Address.String(), fmt.Sprintf("--secure-port=%d", ports[2]),
		"--tls-cert-file="+pki.serverCert, "--tls-private-key-file="+pki.serverKey,
		"--token-auth-file="+tokens, authz,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pki.saPub, "--service-account-signing-key-file="+pki.saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--allow-privileged=true",
		// Without a controller manager (Nodes false), nothing creates the
		// namespaces' default ServiceAccount, so the admission plugin that
		// requires it would refuse every test pod.
		admission,
		// kubectl logs and exec reach kubelets at the address the lab routes.
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false", "--v=0",
	); err != nil {
		k.Stop()
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(k.caPEM)
	client := k.httpClient(&tls.Config{RootCAs: pool})
	if err := k.waitHTTP(k.URL+"/readyz", client, http.Header{"Authorization": {"Bearer " + AdminToken}}); err != nil {
		k.Stop()
		return nil, err
	}
	if err := os.WriteFile(k.Kubeconfig, k.kubeconfig(AdminToken), 0o600); err != nil {
		k.Stop()
		return nil, err
	}
	return k, nil
}

// spawn starts a server whose output goes to <dir>/<name>.log, in the
// namespace of k's options. Unless detached, it dies with this process
// (Pdeathsig), even when that is killed.
func (k *Kube) spawn(name, path string, args ...string) error {
	log, err := os.Create(filepath.Join(k.Dir, name+".log"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(path, args...)
	if k.opts.NetNS != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", k.opts.NetNS, path}, args...)...) // ip execs path: one process
	}
	p := &proc{name: name, cmd: cmd, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = log, log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if k.opts.Detach {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	k.procs = append(k.procs, p)
	return nil
}

// waitHTTP polls url until it answers 200, the last process spawned dies, or
// a minute passes (this machine is shared and slow at times).
func (k *Kube) waitHTTP(url string, client *http.Client, header http.Header) error {
	p := k.procs[len(k.procs)-1]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		maps.Copy(req.Header, header)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited while starting: %s", p.name, k.logTail(p.name))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after a minute: %s", p.name, k.logTail(p.name))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (k *Kube) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(k.Dir, name+".log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Stop kills the API server and etcd and waits for them.
func (k *Kube) Stop() {
	k.stop.Do(func() {
		for i := len(k.procs) - 1; i >= 0; i-- {
			p := k.procs[i]
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	})
}

// NetNS is the network namespace the servers run in; "" for this process's.
func (k *Kube) NetNS() string { return k.opts.NetNS }

// httpClient is an HTTP client that reaches the server where it runs.
func (k *Kube) httpClient(tlsConfig *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, DialContext: k.dial}}
}

// dial connects from the servers' namespace: a socket stays in the namespace
// it was made in.
func (k *Kube) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if k.opts.NetNS == "" {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	h, err := ns.GetNS(filepath.Join("/run/netns", k.opts.NetNS))
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var c net.Conn
	err = h.Do(func(ns.NetNS) error {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// freePorts returns n ports free on 127.0.0.1 a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
