// Command pause is the lab's pod sandbox image, tagged registry.k8s.io/pause:3.10
// so that containerd's CRI takes it for its default sandbox image: the first
// process of every pod, holding the pod's namespaces. It sleeps until SIGTERM
// or SIGINT, then exits 0, and reaps every child re-parented to it (as PID 1
// of the pod, it inherits the orphans). Static Go, so the image needs nothing
// else.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped by the build: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 {
		if os.Args[1] == "-v" || os.Args[1] == "--version" {
			fmt.Println("pause", version)
			return
		}
		fmt.Fprintln(os.Stderr, "usage: pause [-v]")
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		reap()
	}
}

// reap collects every exited child; signals coalesce, so one SIGCHLD may
// stand for several.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
