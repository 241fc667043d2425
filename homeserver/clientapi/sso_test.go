package clientapi

import (
	"testing"
	"time"
)

func TestUIASessionLimits(t *testing.T) {
	var u uiaSessions
	now := time.Unix(1_000_000, 0)
	victim := u.create("@victim:x", "POST /account/deactivate", now)
	// One user's flood pushes out only their own oldest sessions.
	var first string
	for i := 0; i < 3*maxUIASessionsPerUser; i++ {
		id := u.create("@flood:x", "POST /account/deactivate", now.Add(time.Duration(i)*time.Millisecond))
		if i == 0 {
			first = id
		}
	}
	if u.get(victim, now) == nil {
		t.Fatal("another user's flood removed the victim's session")
	}
	if u.get(first, now) != nil {
		t.Fatal("the flooder's oldest session survived")
	}
	n := 0
	for _, s := range u.m {
		if s.userID == "@flood:x" {
			n++
		}
	}
	if n != maxUIASessionsPerUser {
		t.Fatalf("the flooder holds %d sessions, want %d", n, maxUIASessionsPerUser)
	}
	// Sessions expire, and expired ones go at the next creation.
	later := now.Add(uiaLifetime + time.Minute)
	if u.get(victim, later) != nil || u.completeSSO(victim, "@victim:x", later) {
		t.Fatal("an expired session is still usable")
	}
	u.create("@other:x", "POST /delete_devices", later)
	if len(u.m) != 1 {
		t.Fatalf("%d sessions after expiry, want 1", len(u.m))
	}
	// Completion needs the session's own user.
	id := u.create("@a:x", "POST /delete_devices", later)
	if u.completeSSO(id, "@b:x", later) || !u.completeSSO(id, "@a:x", later) || !u.get(id, later).ssoDone {
		t.Fatal("completion is not bound to the session's user")
	}
}
