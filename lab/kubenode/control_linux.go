package kubenode

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ControlPlane is the kube-controller-manager and kube-scheduler next to an
// API server: a DaemonSet needs both (and the controller-manager makes the
// namespaces' default ServiceAccounts and kube-root-ca.crt).
type ControlPlane struct {
	// NetNS names the network namespace (under /run/netns) they run in,
	// the API server's; empty: this process's.
	NetNS string
	// Dir holds their kubeconfig, logs and pid files.
	Dir string
	// KubeBin is the directory of their binaries.
	KubeBin string
	// Server, CAFile and Token reach the API server; the lab gives them an
	// admin token (they would otherwise each need their own identity and
	// ServiceAccount credentials).
	Server, CAFile, Token string
	// ServiceAccountKey is the private key the API server signs
	// ServiceAccount tokens with (the controller-manager signs legacy ones).
	ServiceAccountKey string
}

var controlProcs = []string{"kube-controller-manager", "kube-scheduler"}

// StartControlPlane starts the controller-manager and the scheduler,
// detached from the caller; they run until Stop.
func StartControlPlane(cp *ControlPlane) error {
	if err := os.MkdirAll(cp.Dir, 0o700); err != nil {
		return err
	}
	kubeconfig := filepath.Join(cp.Dir, "control-plane.kubeconfig")
	n := Node{Server: cp.Server, CAFile: cp.CAFile}
	if err := os.WriteFile(kubeconfig, []byte(n.kubeconfig("admin", cp.Token)), 0o600); err != nil {
		return err
	}
	args := map[string][]string{
		"kube-controller-manager": {
			"--kubeconfig=" + kubeconfig,
			"--leader-elect=false",
			"--use-service-account-credentials=false",
			"--service-account-private-key-file=" + cp.ServiceAccountKey,
			"--root-ca-file=" + cp.CAFile,
			"--cluster-name=flatnet-lab",
			// flatnet's IPAM gives pods their addresses, not Node.spec.podCIDR.
			"--allocate-node-cidrs=false",
			// Not the host's /usr/libexec/kubernetes.
			"--flex-volume-plugin-dir=" + filepath.Join(cp.Dir, "flex-volume"),
			"--bind-address=127.0.0.1",
			"--v=1",
		},
		"kube-scheduler": {
			"--kubeconfig=" + kubeconfig,
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			"--v=1",
		},
	}
	for _, name := range controlProcs {
		if err := cp.spawn(name, args[name]); err != nil {
			return errors.Join(err, cp.Stop())
		}
	}
	return nil
}

func (cp *ControlPlane) spawn(name string, args []string) error {
	log, err := os.Create(filepath.Join(cp.Dir, name+".log"))
	if err != nil {
		return err
	}
	defer log.Close()
	path := filepath.Join(cp.KubeBin, name)
	cmd := exec.Command(path, args...)
	if cp.NetNS != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", cp.NetNS, path}, args...)...) // ip execs path: one process
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join(cp.Dir, name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		_ = cmd.Process.Kill()
		return err
	}
	go func() { _ = cmd.Wait() }()
	// A process that cannot start says so within a moment.
	time.Sleep(300 * time.Millisecond)
	if syscall.Kill(cmd.Process.Pid, 0) != nil {
		return fmt.Errorf("%s exited at start: %s", name, tail(filepath.Join(cp.Dir, name+".log"), 10))
	}
	return nil
}

// Stop ends the controller-manager and the scheduler (from their pid files:
// also those of an earlier run of the lab).
func (cp *ControlPlane) Stop() error {
	var errs []error
	for _, name := range controlProcs {
		pidFile := filepath.Join(cp.Dir, name+".pid")
		b, err := os.ReadFile(pidFile)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", pidFile, err))
			continue
		}
		if isProcess(pid, name) && syscall.Kill(pid, syscall.SIGKILL) == nil {
			waitGone(pid, 10*time.Second)
		}
		_ = os.Remove(pidFile)
	}
	return errors.Join(errs...)
}

// isProcess reports whether pid runs the binary name (a pid file of an
// earlier boot or run may name someone else's process by now).
func isProcess(pid int, name string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), name)
}
