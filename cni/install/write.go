package install

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
)

// tempPattern names the temporary file of dst in dst's directory: hidden, and
// ending in .tmp, never in .conf, .conflist or .json, so no runtime takes it
// for a network configuration.
func tempPattern(dst string) string {
	return "." + filepath.Base(dst) + ".*.tmp"
}

// removeStale removes the temporary files an interrupted earlier run left
// next to the files of this one.
func removeStale(files []*file, log *slog.Logger) {
	for _, f := range files {
		stale, _ := filepath.Glob(filepath.Join(filepath.Dir(f.dst), tempPattern(f.dst)))
		for _, s := range stale {
			if err := os.Remove(s); err == nil {
				log.Info("removed a temporary file of an interrupted run", "file", s)
			}
		}
	}
}

// stage writes each file's content to a temporary file next to its
// destination. On error it removes every temporary file it made.
func stage(files []*file) error {
	for _, f := range files {
		if err := f.stage(); err != nil {
			discard(files)
			return err
		}
	}
	return nil
}

func (f *file) stage() error {
	tmp, err := os.CreateTemp(filepath.Dir(f.dst), tempPattern(f.dst))
	if err != nil {
		return fmt.Errorf("stage %s: %w", f.dst, err)
	}
	f.tmp = tmp.Name()
	err = f.copyTo(tmp)
	if err == nil {
		err = tmp.Chmod(f.mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("stage %s: %w", f.dst, err)
	}
	return nil
}

// copyTo writes the content to stage: the source binary, or the conflist
// less its final newline, which commit appends once the file is in place.
func (f *file) copyTo(w io.Writer) error {
	if f.src == "" {
		_, err := w.Write(f.data[:len(f.data)-1])
		return err
	}
	src, err := os.Open(f.src)
	if err != nil {
		return err
	}
	defer src.Close()
	_, err = io.Copy(w, src)
	return err
}

// discard removes the temporary files that are still staged.
func discard(files []*file) {
	for _, f := range files {
		if f.tmp != "" {
			_ = os.Remove(f.tmp)
			f.tmp = ""
		}
	}
}

// commit renames every staged file over its destination, in order, then
// makes the renames durable and completes the conflist.
//
// The conflist is renamed in without its final newline, and the newline is
// then appended in place, so that every runtime's watcher sees a write to
// the finished file. containerd's CRI ignores create events, and a rename
// into the watched directory is one (for the new name): containerd 2.4.2
// was seen to miss a conflist renamed in from another directory, and
// 1.6.20 logs "ignore event" for it. It does act on the rename event of the
// staged file's own name, which exists because the file is staged in the
// same directory, and on the append's write event (containerd 1.6.20 logs
// both; TestPrivilegedContainerdNoticesConflist). The file is a whole, valid
// conflist before and after the append, so no watcher reads a half-written
// one, as an in-place rewrite (truncate, then write) would let it.
func commit(files []*file) error {
	dirs := map[string]bool{}
	for i, f := range files {
		if err := os.Rename(f.tmp, f.dst); err != nil {
			discard(files[i:])
			return fmt.Errorf("install %s: %w", f.dst, err)
		}
		f.tmp = ""
		dirs[filepath.Dir(f.dst)] = true
	}
	var errs []error
	for d := range dirs {
		errs = append(errs, syncDir(d))
	}
	for _, f := range files {
		if f.src == "" {
			errs = append(errs, appendNewline(f.dst))
		}
	}
	return errors.Join(errs...)
}

func appendNewline(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("complete %s: %w", path, err)
	}
	_, err = f.Write([]byte{'\n'})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("complete %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
