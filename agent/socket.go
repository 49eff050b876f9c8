package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// sunPathMax is the longest path a unix socket can be bound at
// (sizeof(sockaddr_un.sun_path) on Linux, less the NUL).
const sunPathMax = 107

// listenUnix listens on a unix socket at path with mode 0600. A socket file left
// by an agent that died is replaced; a live one, or a file that is not a socket,
// is an error rather than something to delete.
//
// The socket is never at path with another mode, whatever the umask and
// whoever may enter path's directory: it is bound in a fresh 0700 directory
// beside path, made 0600 there, and renamed into place.
func listenUnix(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("listen on %s: the path exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another agent is serving there", path)
		}
		// A stale socket: the rename below replaces it.
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}

	private, err := os.MkdirTemp(dir, ".s") // 0700 whatever the umask: it only takes bits away
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, "s")
	lis, err := bindIn(private, tmp)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	lis.SetUnlinkOnClose(false) // it is not at tmp any more; Close removes path
	fail := func(err error) (net.Listener, error) {
		lis.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return &socketListener{UnixListener: lis, path: path, file: fi}, nil
}

// bindIn binds a unix socket at tmp, in the directory dir. When tmp is too
// long for a socket address (it is a few bytes longer than the socket's own
// path), it binds through /proc/self/fd, the directory opened.
func bindIn(dir, tmp string) (*net.UnixListener, error) {
	if len(tmp) <= sunPathMax {
		return net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return net.ListenUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), filepath.Base(tmp)), Net: "unix"})
}

// socketListener is a listener whose Close removes its socket file, as long
// as the file at its path is still the one it made.
type socketListener struct {
	*net.UnixListener
	path string
	file fs.FileInfo
	once sync.Once
}

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.file) {
			if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				err = errors.Join(err, rerr)
			}
		}
	})
	return err
}
