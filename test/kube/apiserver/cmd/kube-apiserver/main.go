// Command kube-apiserver is the upstream Kubernetes API server, unchanged,
// built from the Go module proxy for flatnet's tests.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
