package kubenode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MaybeInit runs the node's first process when the binary was started by
// Start (its first argument is InitArg), and never returns then; otherwise it
// returns at once. Call it first thing in main (and TestMain).
func MaybeInit() {
	if len(os.Args) < 3 || os.Args[1] != InitArg {
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	err := runInit(log, os.Args[2])
	if errors.Is(err, errStopped) {
		os.Exit(0)
	}
	log.Error("node stops", "err", err)
	os.Exit(1)
}

// runInit is the node's first process, PID 1 of the node's PID namespace: it
// makes the node's mounts, starts containerd, imports the images, starts the
// kubelet and kube-proxy, and then reaps processes until one of its own
// exits or it is told to stop. When it returns, the kernel kills every
// other process of the namespace.
func runInit(log *slog.Logger, dir string) error {
	n, err := readNode(dir)
	if err != nil {
		return err
	}
	log = log.With("node", n.Name)
	signal.Ignore(syscall.SIGHUP)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if err := n.mount(); err != nil {
		return err
	}
	if err := n.prepareCNIDirs(); err != nil {
		return err
	}

	procs := map[int]string{}
	start := func(name, path string, args ...string) error {
		f, err := os.OpenFile(n.Log(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		cmd := exec.Command(path, args...)
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		procs[cmd.Process.Pid] = name
		log.Info("started", "process", name, "pid", cmd.Process.Pid)
		return nil
	}

	if err := start("containerd", ContainerdPath, "--config", n.path("containerd.toml")); err != nil {
		return err
	}
	if err := n.waitContainerd(procs); err != nil {
		return err
	}
	for _, img := range n.Images {
		out, err := exec.Command(CtrPath, "-a", n.Socket(), "-n", "k8s.io", "images", "import", img).CombinedOutput()
		if err != nil {
			return fmt.Errorf("import %s: %w: %s", img, err, strings.TrimSpace(string(out)))
		}
		log.Info("image imported", "archive", img, "out", strings.TrimSpace(string(out)))
	}
	kubeletArgs := []string{
		"--config=" + n.path("kubelet.yaml"),
		"--kubeconfig=" + n.path("kubelet.kubeconfig"),
		"--hostname-override=" + n.Name,
		"--node-ip=" + joinAddrs(n.NodeIPs),
		"--cert-dir=" + n.path("kubelet-pki"), // not the host's /var/lib/kubelet/pki
		"--v=1",
	}
	if len(n.Labels) > 0 {
		var labels []string
		for k, v := range n.Labels {
			labels = append(labels, k+"="+v)
		}
		kubeletArgs = append(kubeletArgs, "--node-labels="+strings.Join(labels, ","))
	}
	if err := start("kubelet", filepath.Join(n.KubeBin, "kubelet"), kubeletArgs...); err != nil {
		return err
	}
	if err := start("kube-proxy", filepath.Join(n.KubeBin, "kube-proxy"), "--config="+n.path("kube-proxy.yaml"), "--v=1"); err != nil {
		return err
	}
	if err := os.WriteFile(n.path("ready"), nil, 0o600); err != nil {
		return err
	}
	return reap(log, procs, stop)
}

// reap waits for children, its own and the orphans the namespace hands to
// its first process, until one of procs exits or a signal says stop.
func reap(log *slog.Logger, procs map[int]string, stop <-chan os.Signal) error {
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err != nil || pid <= 0 {
				break
			}
			if name, ok := procs[pid]; ok {
				return fmt.Errorf("%s exited (%s): see %s.log", name, exitString(ws), name)
			}
		}
		select {
		case s := <-stop:
			log.Info("stopping", "signal", s.String())
			return errStopped
		case <-children:
		case <-time.After(time.Second):
		}
	}
}

func exitString(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("status %d", ws.ExitStatus())
}

// mount makes the node's view of the machine: mounts stay in the node
// (slave propagation: the host's new mounts still reach it), its own /proc,
// the kernel defaults the kubelet wants, and an overlay over each of
// Overlaid whose writes land in the node's directory.
func (n *Node) mount() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make / a slave mount: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	for name := range kernelDefaults {
		src := n.path("sysctl", strings.ReplaceAll(name, "/", "."))
		if err := unix.Mount(src, filepath.Join("/proc/sys", name), "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("show the kubelet %s: %w", name, err)
		}
	}
	for _, d := range Overlaid {
		base := n.path("overlay", strings.ReplaceAll(strings.TrimPrefix(d, "/"), "/", "-"))
		upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
		for _, p := range []string{d, upper, work} {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		}
		opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", d, upper, work)
		if err := unix.Mount("overlay", d, "overlay", 0, opts); err != nil {
			return fmt.Errorf("overlay %s: %w", d, err)
		}
	}
	return nil
}

// prepareCNIDirs empties the node's CNI directories (they show the host's
// through the overlays) and seeds /opt/cni/bin when asked to.
func (n *Node) prepareCNIDirs() error {
	for _, d := range []string{"/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni"} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if n.CNIBinSeed == "" {
		return nil
	}
	entries, err := os.ReadDir(n.CNIBinSeed)
	if err != nil {
		return fmt.Errorf("seed /opt/cni/bin: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(n.CNIBinSeed, e.Name()))
		if err != nil {
			return fmt.Errorf("seed /opt/cni/bin: %w", err)
		}
		if err := os.WriteFile(filepath.Join("/opt/cni/bin", e.Name()), b, 0o755); err != nil {
			return fmt.Errorf("seed /opt/cni/bin: %w", err)
		}
	}
	return nil
}

// waitContainerd waits until containerd answers on its socket.
func (n *Node) waitContainerd(procs map[int]string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		if exec.CommandContext(ctx, CtrPath, "-a", n.Socket(), "version").Run() == nil {
			return nil
		}
		var ws unix.WaitStatus
		if pid, _ := unix.Wait4(-1, &ws, unix.WNOHANG, nil); pid > 0 && procs[pid] == "containerd" {
			return fmt.Errorf("containerd exited (%s): %s", exitString(ws), tail(n.Log("containerd"), 10))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("containerd not answering on %s: %s", n.Socket(), tail(n.Log("containerd"), 10))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
