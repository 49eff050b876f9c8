// Package atomicfile replaces a file so that a reader sees the old content or
// the new, never a torn one, and a process killed mid-write leaves at most a
// temporary file behind: write a temporary file in the same directory,
// optionally fsync it, rename it over the target.
//
// It holds no locking: callers that must not lose each other's writes
// serialize them (the file store holds a lock around compare and write).
package atomicfile

import (
	"os"
	"path/filepath"
)

// TempPrefix starts the name of every temporary file Write makes, so that a
// directory's owner can skip them when listing and remove the ones a killed
// writer left.
const TempPrefix = ".tmp-"

// Write replaces path with data, through a temporary file in path's
// directory and a rename. With sync, the data is on disk before the rename,
// so that a power loss cannot leave the new name with torn content. On error
// path is as it was and the temporary file is gone.
func Write(path string, data []byte, sync bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), TempPrefix+"*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil && sync {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
