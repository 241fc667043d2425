package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// account is the unprivileged user that initdb and postgres run as when
// Plaza runs as root. A nil *account means "as ourselves".
type account struct {
	name     string
	uid, gid uint32
}

// useraddMu serialises the creation of createdUser within the process. It is
// the package's only global: the user database it guards is global too.
var useraddMu sync.Mutex

// createdUser is the system account Start creates when root runs Plaza on a
// machine without a "postgres" user.
const createdUser = "plaza"

// serverAccount chooses who runs the server; see the package comment. An
// existing cluster keeps running as whoever owns it, so a data directory made
// by a non-root Plaza still works when Plaza is later started as root.
func serverAccount(dir string, exists bool, logf func(string, ...any)) (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if exists {
		fi, err := os.Stat(dir)
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
			name := strconv.Itoa(int(st.Uid))
			if u, err := user.LookupId(name); err == nil {
				name = u.Username
			}
			return &account{name: name, uid: st.Uid, gid: st.Gid}, nil
		}
		// A root-owned cluster was not made by initdb; fall through and
		// let prepareDir hand it over.
	}
	if acct, err := lookupAccount("postgres"); err == nil {
		return acct, nil
	}
	// Two clusters starting at once (parallel tests) must not both run
	// useradd: concurrent runs were seen to give the name two different uids.
	useraddMu.Lock()
	defer useraddMu.Unlock()
	if acct, err := lookupAccount(createdUser); err == nil {
		return acct, nil
	}
	logf("postgres: running as root; creating system user %q to run PostgreSQL", createdUser)
	out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", createdUser).CombinedOutput()
	if err != nil {
		// Another process may have just created it.
		if acct, lookupErr := lookupAccount(createdUser); lookupErr == nil {
			return acct, nil
		}
		return nil, fmt.Errorf("cluster: PostgreSQL refuses to run as root and there is no \"postgres\" user; "+
			"creating system user %q failed (%v: %s); create an unprivileged user named postgres or %s, or run plaza as a non-root user",
			createdUser, err, out, createdUser)
	}
	return lookupAccount(createdUser)
}

func lookupAccount(name string) (*account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("cluster: user %s: %w", name, err)
	}
	if uid == 0 {
		return nil, fmt.Errorf("cluster: user %s has uid 0", name)
	}
	return &account{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
}

// prepareDir creates the cluster directory (mode 0700, as initdb wants it)
// and, when running as root, gives a fresh one to the server's account. It
// then checks that the account can reach it.
func prepareDir(dir string, exists bool, acct *account) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("cluster: %w", err)
	}
	if acct == nil {
		return nil
	}
	if !exists {
		if err := os.Chown(dir, int(acct.uid), int(acct.gid)); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	} else if err := chownTree(dir, acct); err != nil {
		return err
	}
	return checkReachable(dir, acct)
}

// chownTree hands a root-owned existing cluster (copied in by root, say) to
// the account. Clusters already owned by the account are left alone.
func chownTree(dir string, acct *account) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == acct.uid {
		return nil
	}
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(acct.uid), int(acct.gid))
	})
}

// checkReachable verifies that every directory above dir is searchable by the
// account, judging by mode bits (ACLs are not consulted), and names all those
// that are not, so that one command fixes them.
func checkReachable(dir string, acct *account) error {
	var blocked []string
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			var bit fs.FileMode = 0o001
			switch {
			case st.Uid == acct.uid:
				bit = 0o100
			case st.Gid == acct.gid:
				bit = 0o010
			}
			if fi.Mode().Perm()&bit == 0 {
				blocked = append([]string{p}, blocked...)
			}
		}
		if p == filepath.Dir(p) {
			break
		}
	}
	if len(blocked) == 0 {
		return nil
	}
	return fmt.Errorf("cluster: PostgreSQL runs as user %q (it refuses root), which cannot enter %s "+
		"on the way to the cluster in %s; allow it with `chmod o+x %s`, "+
		"or choose a data directory elsewhere, or run plaza as a non-root user",
		acct.name, strings.Join(blocked, " and "), dir, strings.Join(blocked, " "))
}
