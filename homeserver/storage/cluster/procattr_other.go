//go:build unix && !linux

package cluster

import "syscall"

// serverProcAttr runs postgres in its own process group, as acct if set.
// Outside Linux there is no parent-death signal: Stop is the only way down.
func serverProcAttr(acct *account) *syscall.SysProcAttr {
	return helperProcAttr(acct)
}

func helperProcAttr(acct *account) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if acct != nil {
		attr.Credential = &syscall.Credential{Uid: acct.uid, Gid: acct.gid}
	}
	return attr
}
