package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Options says where and how Start runs a process.
type Options struct {
	// NetNS names the namespace to run in; empty: this process's.
	NetNS string
	// Env is added to this process's environment.
	Env []string
	// Log receives the process's standard output and error; empty: they
	// are discarded.
	Log string
	// Detach lets the process outlive this one, in a session of its own
	// (a lab's daemons). Otherwise it runs in a process group of its own
	// and is killed when this process dies, even by SIGKILL.
	Detach bool
}

// Process is a process Start started.
type Process struct {
	name   string
	log    string
	cmd    *exec.Cmd
	exited chan struct{} // closed once Wait returned
	err    error         // Wait's, once exited is closed
}

// Start runs args (a path or a name on PATH, and its arguments) as opts
// says. In a namespace it runs under `ip netns exec`, which execs it: the
// Process is the program itself.
func Start(opts Options, args ...string) (*Process, error) {
	if len(args) == 0 {
		return nil, errors.New("start: no command")
	}
	p := &Process{name: filepath.Base(args[0]), log: opts.Log, exited: make(chan struct{})}
	cmd := exec.Command(args[0], args[1:]...)
	if opts.NetNS != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", opts.NetNS}, args...)...)
	}
	if opts.Log != "" {
		f, err := os.Create(opts.Log)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", p.name, err)
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	if opts.Env != nil {
		cmd.Env = append(os.Environ(), opts.Env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if opts.Detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if err := cmd.Start(); err != nil {
		where := ""
		if opts.NetNS != "" {
			where = " in " + opts.NetNS
		}
		return nil, fmt.Errorf("start %s%s: %w", p.name, where, err)
	}
	p.cmd = cmd
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Pid is the process's ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed once the process has ended and been reaped.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is how the process ended (exec.Cmd.Wait's error), once Exited is
// closed; nil before.
func (p *Process) Err() error {
	select {
	case <-p.exited:
		return p.err
	default:
		return nil
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill kills the process and its group (or session) and waits until it has
// ended. Killing an ended process is fine.
func (p *Process) Kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Stop asks the process to end with SIGTERM, kills it if it has not within
// grace, and waits until it has ended.
func (p *Process) Stop(grace time.Duration) {
	_ = p.Signal(syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.exited:
	case <-timer.C:
		p.Kill()
	}
}

// LogTail is the last 2000 bytes of the process's log, trimmed.
func (p *Process) LogTail() string {
	if p.log == "" {
		return "(no log)"
	}
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Await polls ready every 20 ms until it holds; it fails, with the tail of
// the process's log, when the process ends first or ctx is done.
func (p *Process) Await(ctx context.Context, what string, ready func() bool) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready() {
			return nil
		}
		select {
		case <-p.exited:
			if ready() {
				return nil
			}
			ended := p.err
			if ended == nil {
				ended = errors.New("exit status 0")
			}
			return fmt.Errorf("%s ended (%w) before %s:\n%s", p.name, ended, what, p.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("%s: still not %s: %w:\n%s", p.name, what, context.Cause(ctx), p.LogTail())
		case <-tick.C:
		}
	}
}

// FileExists is a readiness test for Await: path exists.
func FileExists(path string) func() bool {
	return func() bool { _, err := os.Stat(path); return err == nil }
}

// Serving is a readiness test for Await: the unix socket at path accepts
// connections.
func Serving(path string) func() bool {
	return func() bool {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
}
