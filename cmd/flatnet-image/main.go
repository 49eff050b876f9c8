// Command flatnet-image builds flatnet's container images as docker-archive
// tarballs without a container engine (`make image`): the flatnet image and
// the lab's pause and echo images, each printed with its tag and digest. It
// is a build tool, not shipped; the work is in tools/imagebuild.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/flatnet-io/flatnet/tools/imagebuild"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil && !errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "flatnet-image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("flatnet-image", pflag.ContinueOnError)
	version := fs.String("version", "", "version stamped into the binaries and tagging flatnet's images (required)")
	out := fs.String("out", "bin/images", "directory of the archives, <image>.tar")
	images := fs.StringSlice("image", nil, "images to build: flatnet, pause, echo (default all)")
	tc := imagebuild.Toolchain{}
	fs.StringVar(&tc.Go, "go", "go", "the go command")
	fs.StringVar(&tc.ModuleDir, "module", ".", "the flatnet module's directory")
	fs.StringVar(&tc.Arch, "arch", runtime.GOARCH, "GOARCH of the images")
	if err := fs.Parse(args); err != nil {
		return err
	}
	created, err := imagebuild.CreatedFromEnv()
	if err != nil {
		return err
	}
	built, err := tc.BuildArchives(ctx, *version, *out, created, *images)
	if err != nil {
		return err
	}
	for _, b := range built {
		fmt.Fprintf(stdout, "%s\n  archive  %s\n  image ID %s\n  manifest %s\n", b.Tag, b.Archive, b.ImageID, b.Digest)
	}
	return nil
}
