// Package atomicfile replaces a file so that a reader sees the old content or
// the new, never a torn one, and a process killed mid-write leaves at most a
// temporary file behind: write a temporary file in the same directory,
// optionally fsync it, rename it over the target, and fsync the directory.
//
// It holds no locking: callers that must not lose each other's writes
// serialize them (the file store holds a lock around compare and write).
package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
)

// TempPrefix starts the name of every temporary file Write makes, so that a
// directory's owner can skip them when listing and remove the ones a killed
// writer left.
const TempPrefix = ".tmp-"

// syncDir fsyncs an open directory; tests count the calls.
var syncDir = func(d *os.File) error { return d.Sync() }

// Write replaces path with data, through a temporary file in path's
// directory and a rename. With sync, the write is durable when Write
// returns: the data is on disk before the rename, so that a power loss
// cannot leave the new name with torn content, and the directory is synced
// after it, so that a power loss cannot undo the rename. On error path is as
// it was (unless only the directory's sync failed) and the temporary file is
// gone.
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
	if sync {
		return SyncDir(filepath.Dir(path))
	}
	return nil
}

// Remove removes path; with sync, durably: its directory is synced after.
func Remove(path string, sync bool) error {
	if err := os.Remove(path); err != nil {
		return err
	}
	if sync {
		return SyncDir(filepath.Dir(path))
	}
	return nil
}

// SyncDir fsyncs the directory dir, making the names created, renamed and
// removed in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = syncDir(d)
	return errors.Join(err, d.Close())
}
