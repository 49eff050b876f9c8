package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
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
	"time"

	"github.com/flatnet-io/flatnet/lab/netns"
)

// AdminToken authenticates as "admin" in group system:masters.
const AdminToken = "flatnet-lab-admin"

// startTimeout bounds how long etcd and kube-apiserver each may take to
// become ready: long, because the machine may be shared and slow.
const startTimeout = time.Minute

// Options says where a Server runs and what it runs with.
type Options struct {
	// BinDir holds kube-apiserver (and kubectl, when there is none on
	// PATH): the directory `make kube-bins` builds into.
	BinDir string
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
	// Tokens are static tokens besides the admin's: for components a
	// caller adds (a kubelet, a controller manager).
	Tokens []Token
	// Nodes makes the server fit for real nodes: the ServiceAccount
	// admission plugin on (pods get their token volume; a controller-manager
	// must then make the namespaces' default ServiceAccounts), the Node
	// authorizer before RBAC (kubelets as system:node:<name>), and
	// kubectl logs and exec reaching kubelets at their InternalIP.
	Nodes bool
	// APIServerArgs are more kube-apiserver flags, after the defaults (of
	// a flag given twice, the later wins).
	APIServerArgs []string
}

// Token is a static bearer token of the API server: who presents it is
// User, in Groups.
type Token struct {
	Token, User string
	Groups      []string
}

// Server is a running etcd and kube-apiserver.
type Server struct {
	URL        string // https://<address>:<port>
	Dir        string // certificates, tokens, etcd's data and the logs
	CAFile     string // the CA that signed the server's certificate
	Kubeconfig string // the admin's kubeconfig, for kubectl --kubeconfig
	PKI        PKI

	opts  Options
	procs []*netns.Process
	stop  sync.Once
}

// tools are the programs a Server runs, by name.
func tools(binDir string) map[string]string {
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		etcd = "/usr/bin/etcd" // Debian's etcd-server
	}
	return map[string]string{
		"etcd":           etcd,
		"kube-apiserver": filepath.Join(binDir, "kube-apiserver"),
		"kubectl":        kubectlPath(binDir),
	}
}

func kubectlPath(binDir string) string {
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p
	}
	return filepath.Join(binDir, "kubectl")
}

// CheckTools says which of etcd, kube-apiserver and kubectl are missing, if
// any, with binDir as Options.BinDir.
func CheckTools(binDir string) error {
	if binDir == "" {
		return errors.New("the Kubernetes API server needs the directory of kube-apiserver: none given (make kube-bins builds it)")
	}
	var missing []string
	for name, path := range tools(binDir) {
		if st, err := os.Stat(path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, name+" ("+path+")")
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return fmt.Errorf("the Kubernetes API server needs: %s (make deps kube-bins installs and builds them)", strings.Join(missing, ", "))
}

// Start starts etcd and kube-apiserver with their files in dir and waits
// until the API server is ready. A port taken between picking and binding
// (another test package starting at the same time) is retried with new
// ports, each attempt in a directory of its own under dir (0, 1, 2: the
// logs of a failed one stay). On failure nothing it started runs.
func Start(dir string, opts Options) (*Server, error) {
	if err := CheckTools(opts.BinDir); err != nil {
		return nil, err
	}
	for _, t := range opts.Tokens {
		if t.Token == "" || t.User == "" || strings.ContainsAny(t.Token+t.User+strings.Join(t.Groups, ""), ",\"\n") {
			return nil, fmt.Errorf("static token for %q: want a token and a user without commas, quotes or newlines", t.User)
		}
	}
	if !opts.Address.IsValid() {
		opts.Address = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	var err error
	for attempt := range 3 {
		var s *Server
		if s, err = tryStart(filepath.Join(dir, fmt.Sprint(attempt)), opts); err == nil {
			return s, nil
		}
	}
	return nil, err
}

func tryStart(dir string, opts Options) (_ *Server, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, CAFile: filepath.Join(dir, "ca.crt"), Kubeconfig: filepath.Join(dir, "admin.kubeconfig"), opts: opts}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if s.PKI, err = writePKI(dir, opts.Address); err != nil {
		return nil, fmt.Errorf("start kube-apiserver: %w", err)
	}
	ports := []int{2379, 2380, 6443} // a namespace of their own
	if opts.NetNS == "" {
		if ports, err = freePorts(3); err != nil {
			return nil, fmt.Errorf("start kube-apiserver: %w", err)
		}
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	s.URL = "https://" + netip.AddrPortFrom(opts.Address, uint16(ports[2])).String()
	bin := tools(opts.BinDir)

	etcd, err := s.spawn("etcd", bin["etcd"],
		"--name=default", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL, "--log-level=warn", "--logger=zap",
	)
	if err != nil {
		return nil, err
	}
	if err := s.awaitHTTP(etcd, etcdURL+"/health", s.httpClient(nil), nil); err != nil {
		return nil, err
	}

	tokens := filepath.Join(dir, "tokens.csv")
	csv := AdminToken + `,admin,admin,"system:masters"` + "\n"
	for _, t := range opts.Tokens {
		line := t.Token + "," + t.User + "," + t.User
		if len(t.Groups) > 0 {
			line += `,"` + strings.Join(t.Groups, ",") + `"`
		}
		csv += line + "\n"
	}
	if err := os.WriteFile(tokens, []byte(csv), 0o600); err != nil {
		return nil, err
	}
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + opts.Address.String(), "--advertise-address=" + opts.Address.String(), fmt.Sprintf("--secure-port=%d", ports[2]),
		"--tls-cert-file=" + s.PKI.ServerCert, "--tls-private-key-file=" + s.PKI.ServerKey, "--client-ca-file=" + s.PKI.CACert,
		"--token-auth-file=" + tokens,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + s.PKI.ServiceAccountPub, "--service-account-signing-key-file=" + s.PKI.ServiceAccountKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--allow-privileged=true",
		"--profiling=false", "--v=0",
	}
	if opts.Nodes {
		args = append(args, "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
			"--kubelet-preferred-address-types=InternalIP")
	} else {
		// No controller manager creates namespaces' default ServiceAccount, so
		// the admission plugin that requires it would refuse every pod.
		args = append(args, "--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount")
	}
	apiserver, err := s.spawn("kube-apiserver", bin["kube-apiserver"], append(args, opts.APIServerArgs...)...)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.PKI.caPEM)
	client := s.httpClient(&tls.Config{RootCAs: pool})
	if err := s.awaitHTTP(apiserver, s.URL+"/readyz", client, http.Header{"Authorization": {"Bearer " + AdminToken}}); err != nil {
		return nil, err
	}
	if err := s.WriteKubeconfig(s.Kubeconfig, AdminToken); err != nil {
		return nil, err
	}
	return s, nil
}

// spawn starts a server whose output goes to <dir>/<name>.log, in the
// namespace of s's options.
func (s *Server) spawn(name, path string, args ...string) (*netns.Process, error) {
	p, err := netns.Start(netns.Options{NetNS: s.opts.NetNS, Log: filepath.Join(s.Dir, name+".log"), Detach: s.opts.Detach}, append([]string{path}, args...)...)
	if err != nil {
		return nil, err
	}
	s.procs = append(s.procs, p)
	return p, nil
}

// awaitHTTP waits until url answers 200, p ends, or startTimeout passes.
func (s *Server) awaitHTTP(p *netns.Process, url string, client *http.Client, header http.Header) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	return p.Await(ctx, "ready at "+url, func() bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		maps.Copy(req.Header, header)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// Stop kills the API server and etcd and waits for them; their files stay.
// Stopping twice is fine.
func (s *Server) Stop() {
	s.stop.Do(func() {
		for _, p := range slices.Backward(s.procs) {
			p.Kill()
		}
	})
}

// NetNS is the network namespace the servers run in; "" for this process's.
func (s *Server) NetNS() string { return s.opts.NetNS }

// httpClient is an HTTP client that reaches the server where it runs.
func (s *Server) httpClient(tlsConfig *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, DialContext: s.dial}, Timeout: 5 * time.Second}
}

// dial connects from the servers' namespace: a socket stays in the namespace
// it was made in.
func (s *Server) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if s.opts.NetNS == "" {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	return netns.Do(s.opts.NetNS, func() (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, network, addr) })
}

// freePorts returns n ports free on 127.0.0.1 a moment ago. etcd and
// kube-apiserver are other processes, which cannot be handed a listener, so
// a port may be taken between this and their bind: Start then tries again
// with new ports in a fresh directory (three attempts). In a namespace of its
// own (Options.NetNS, the lab) the standard ports are used and nothing races.
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

// Attach returns the server a detached Start left running in its namespace
// (opts.NetNS, on the standard port) with its files under dir: what a later
// command of the lab uses to reach it. It fails when none of dir's attempts
// holds a server's files or the server does not answer.
func Attach(dir string, opts Options) (*Server, error) {
	if opts.NetNS == "" {
		return nil, errors.New("attach: only a server in a namespace of its own (Options.NetNS) can be found again")
	}
	for attempt := 2; attempt >= 0; attempt-- {
		d := filepath.Join(dir, fmt.Sprint(attempt))
		if _, err := os.Stat(filepath.Join(d, "admin.kubeconfig")); err != nil {
			continue
		}
		s := &Server{Dir: d, CAFile: filepath.Join(d, "ca.crt"), Kubeconfig: filepath.Join(d, "admin.kubeconfig"), opts: opts,
			URL: "https://" + netip.AddrPortFrom(opts.Address, 6443).String(),
			PKI: PKI{CACert: filepath.Join(d, "ca.crt"), CAKey: filepath.Join(d, "ca.key"), ServerCert: filepath.Join(d, "server.crt"),
				ServerKey: filepath.Join(d, "server.key"), ServiceAccountKey: filepath.Join(d, "sa.key"), ServiceAccountPub: filepath.Join(d, "sa.pub")}}
		var err error
		if s.PKI.caPEM, err = os.ReadFile(s.CAFile); err != nil {
			return nil, err
		}
		if _, err := s.Kubectl("get", "--raw", "/readyz"); err != nil {
			return nil, fmt.Errorf("attach to the API server in %s: %w", d, err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("attach: no API server's files in %s", dir)
}
