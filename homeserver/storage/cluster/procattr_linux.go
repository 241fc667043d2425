package cluster

import "syscall"

// serverProcAttr runs postgres in its own process group, as acct if set, with
// SIGINT (fast shutdown) as its parent-death signal. The caller must fork
// from a locked OS thread that lives as long as the server; see the package
// comment.
func serverProcAttr(acct *account) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT}
	if acct != nil {
		attr.Credential = &syscall.Credential{Uid: acct.uid, Gid: acct.gid}
	}
	return attr
}

// helperProcAttr is for short-lived tools (initdb). They get no parent-death
// signal: forked from an arbitrary thread, it could fire while Plaza lives.
func helperProcAttr(acct *account) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{}
	if acct != nil {
		attr.Credential = &syscall.Credential{Uid: acct.uid, Gid: acct.gid}
	}
	return attr
}
