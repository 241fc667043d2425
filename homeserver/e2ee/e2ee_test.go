package e2ee_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
)

// TestKeys: two users with two devices each upload device keys, one-time
// and fallback keys, query each other's keys and claim them; the counts in
// the upload answer and in /sync follow.
func TestKeys(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	alice := newDevice(t, s.register("alice"))
	alice2 := newDevice(t, s.login("alice", "", "alice's phone"))
	bob := newDevice(t, s.register("bob"))
	bob2 := newDevice(t, s.login("bob", "", ""))

	uploaded := map[string]map[string]any{}
	for _, d := range []*device{alice, alice2, bob, bob2} {
		dk := d.deviceKeys()
		uploaded[d.Device] = dk
		r := d.upload(map[string]any{"device_keys": dk, "one_time_keys": d.oneTimeKeys(0, 3, false)})
		if n := path(r.Body, "one_time_key_counts", "signed_curve25519"); n != 3.0 {
			t.Fatalf("upload answered counts %s", r.Raw)
		}
	}
	// The same upload again (a retry) changes nothing.
	aliceOTKs := alice.oneTimeKeys(10, 2, false)
	alice.upload(map[string]any{"one_time_keys": aliceOTKs})
	r := alice.upload(map[string]any{"device_keys": uploaded[alice.Device], "one_time_keys": aliceOTKs,
		"fallback_keys": alice.oneTimeKeys(99, 1, true)})
	if n := path(r.Body, "one_time_key_counts", "signed_curve25519"); n != 5.0 {
		t.Fatalf("a repeated upload changed the count: %s", r.Raw)
	}

	// Bob sees both of alice's devices, as uploaded, with display names.
	q := bob.query(map[string][]string{alice.UserID: nil, "@nobody:plaza.test": nil, "@far:elsewhere.test": nil})
	devs, _ := path(q.Body, "device_keys", alice.UserID).(map[string]any)
	if len(devs) != 2 {
		t.Fatalf("bob sees %d of alice's devices: %s", len(devs), q.Raw)
	}
	for _, d := range []*device{alice, alice2} {
		got := devs[d.Device].(map[string]any)
		if path(got, "keys", "ed25519:"+d.Device) != d.pub || path(got, "signatures", d.UserID, "ed25519:"+d.Device) == nil {
			t.Fatalf("device %s as queried: %v", d.Device, got)
		}
	}
	if path(devs[alice2.Device], "unsigned", "device_display_name") != "alice's phone" {
		t.Fatalf("display name missing: %v", devs[alice2.Device])
	}
	if devs := path(q.Body, "device_keys", "@nobody:plaza.test").(map[string]any); len(devs) != 0 {
		t.Fatalf("an unknown user has devices: %s", q.Raw)
	}
	if path(q.Body, "failures", "elsewhere.test") == nil {
		t.Fatalf("a remote server without federation is not a failure: %s", q.Raw)
	}
	one := bob.query(map[string][]string{alice.UserID: {alice2.Device}})
	if devs := path(one.Body, "device_keys", alice.UserID).(map[string]any); len(devs) != 1 || devs[alice2.Device] == nil {
		t.Fatalf("query for one device: %s", one.Raw)
	}
	alice.query(map[string][]string{bob.UserID: {bob.Device, bob2.Device}})

	// Claims hand out the oldest one-time keys, each once, then the
	// fallback key, again and again.
	aliceSince := alice.sync("", 0)
	if otkCount(aliceSince) != 5 || !slices.Contains(fallbackTypes(aliceSince), "signed_curve25519") {
		t.Fatalf("alice's sync before claims: %s", aliceSince.Raw)
	}
	seen := map[string]bool{}
	for i := range 5 {
		id, key := bob.claim(alice.UserID, alice.Device)
		if id == "" || seen[id] || key["fallback"] != nil {
			t.Fatalf("claim %d gave %q %v (seen %v)", i, id, key, seen)
		}
		seen[id] = true
		if i == 0 && id != "signed_curve25519:AAAA0000" {
			t.Fatalf("the first claim gave %s, not the oldest key", id)
		}
	}
	r2 := alice.sync(aliceSince.str("next_batch"), 0)
	if otkCount(r2) != 0 {
		t.Fatalf("count after claiming every key: %s", r2.Raw)
	}
	for range 2 {
		id, key := bob.claim(alice.UserID, alice.Device)
		if id != "signed_curve25519:AAAA0099" || key["fallback"] != true {
			t.Fatalf("with no one-time key left, the claim gave %s %v", id, key)
		}
	}
	r3 := alice.sync(r2.str("next_batch"), 0)
	if slices.Contains(fallbackTypes(r3), "signed_curve25519") {
		t.Fatalf("a used fallback key is still reported unused: %s", r3.Raw)
	}
	// A new fallback key is unused again.
	alice.upload(map[string]any{"fallback_keys": alice.oneTimeKeys(100, 1, true)})
	if r4 := alice.sync(r3.str("next_batch"), 0); !slices.Contains(fallbackTypes(r4), "signed_curve25519") {
		t.Fatalf("a new fallback key is not reported: %s", r4.Raw)
	}
	// Bob's devices' counts are their own.
	if n := otkCount(bob2.sync("", 0)); n != 3 {
		t.Fatalf("bob2 holds %d keys, want 3", n)
	}
	// A device without keys: nothing to claim, no error.
	carol := s.register("carol")
	if id, _ := bob.claim(carol.UserID, carol.Device); id != "" {
		t.Fatalf("claimed %s from a device with no keys", id)
	}
}

func fallbackTypes(r response) []string {
	var out []string
	for _, v := range asList(r.Body["device_unused_fallback_key_types"]) {
		out = append(out, v.(string))
	}
	return out
}

// TestConcurrentClaimOfLastKey: many users claim a device's last one-time
// key at once; exactly one gets it, the others get nothing (there is no
// fallback key), round after round.
func TestConcurrentClaimOfLastKey(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	alice := newDevice(t, s.register("alice"))
	alice.upload(map[string]any{"device_keys": alice.deviceKeys()})
	var claimers []*client
	for i := range 8 {
		claimers = append(claimers, s.register(fmt.Sprintf("claimer%d", i)))
	}
	body := map[string]any{"one_time_keys": map[string]any{alice.UserID: map[string]any{alice.Device: "signed_curve25519"}}}
	for round := range 5 {
		alice.upload(map[string]any{"one_time_keys": alice.oneTimeKeys(round, 1, false)})
		var wg sync.WaitGroup
		got := make([]string, len(claimers))
		errs := make([]error, len(claimers))
		for i, c := range claimers {
			wg.Go(func() {
				r, err := c.try("POST", v3+"/keys/claim", body)
				if err == nil && r.Status != 200 {
					err = fmt.Errorf("claim = %d %s", r.Status, r.Raw)
				}
				errs[i] = err
				got[i], _ = claimed(r, alice.UserID, alice.Device)
			})
		}
		wg.Wait()
		winners := 0
		for i := range claimers {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if got[i] != "" {
				winners++
			}
		}
		if winners != 1 {
			t.Fatalf("round %d: %d claimers got the last key: %v", round, winners, got)
		}
	}
}

// TestToDevice: messages reach exactly the devices they are addressed to,
// once each; they are deleted when the client syncs past the response that
// carried them, and not before; "*" reaches every device; retried
// transactions are not delivered twice; a long-poll wakes for a message; a
// backlog is delivered in bounded responses.
func TestToDevice(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	alice := s.register("alice")
	bob := s.register("bob")
	bob2 := s.login("bob", "", "")
	since := bob.sync("", 0).str("next_batch")
	since2 := bob2.sync("", 0).str("next_batch")

	alice.sendToDevice("m.test", map[string]map[string]any{bob.UserID: {bob.Device: map[string]any{"n": 1}}})
	r := bob.sync(since, 0)
	evs := toDevice(r)
	if len(evs) != 1 || evs[0]["sender"] != alice.UserID || evs[0]["type"] != "m.test" || path(evs[0], "content", "n") != 1.0 {
		t.Fatalf("bob's device got %s", r.Raw)
	}
	if evs := toDevice(bob2.sync(since2, 0)); len(evs) != 0 {
		t.Fatalf("bob's other device got a message not addressed to it: %v", evs)
	}
	// A retry of the sync whose answer was lost gets it again; a sync
	// from the answer's token acknowledges it.
	if evs := toDevice(bob.sync(since, 0)); len(evs) != 1 {
		t.Fatalf("a retried sync lost an unacknowledged message: %v", evs)
	}
	next := bob.sync(r.str("next_batch"), 0)
	if evs := toDevice(next); len(evs) != 0 {
		t.Fatalf("an acknowledged message came again: %v", evs)
	}
	if evs := toDevice(bob.sync(since, 0)); len(evs) != 0 {
		t.Fatalf("an acknowledged message is still stored: %v", evs)
	}
	since = next.str("next_batch")

	// A retried transaction is delivered once.
	body := map[string]any{"messages": map[string]any{bob.UserID: map[string]any{bob.Device: map[string]any{"n": 2}}}}
	alice.must("PUT", v3+"/sendToDevice/m.test/same-txn", body)
	alice.must("PUT", v3+"/sendToDevice/m.test/same-txn", body)
	r = bob.sync(since, 0)
	if evs := toDevice(r); len(evs) != 1 {
		t.Fatalf("a retried transaction was delivered %d times", len(evs))
	}
	since = r.str("next_batch")

	// "*" reaches all of bob's devices; unknown devices are ignored.
	alice.sendToDevice("m.all", map[string]map[string]any{bob.UserID: {"*": map[string]any{"all": true}}})
	alice.sendToDevice("m.test", map[string]map[string]any{bob.UserID: {"NOSUCHDEVICE": map[string]any{}}})
	r = bob.sync(since, 0)
	r2 := bob2.sync(since2, 0)
	for _, got := range [][]map[string]any{toDevice(r), toDevice(r2)} {
		if len(got) != 1 || got[0]["type"] != "m.all" {
			t.Fatalf("a message to * gave %v", got)
		}
	}
	since, since2 = r.str("next_batch"), r2.str("next_batch")

	// A long-poll wakes up for a message.
	done := make(chan response, 1)
	go func() {
		r, _ := bob.try("GET", v3+"/sync?timeout=30000&since="+since, nil)
		done <- r
	}()
	alice.sendToDevice("m.wake", map[string]map[string]any{bob.UserID: {bob.Device: map[string]any{}}})
	r = <-done
	if evs := toDevice(r); len(evs) != 1 || evs[0]["type"] != "m.wake" {
		t.Fatalf("the long-poll returned %s", r.Raw)
	}
	since = r.str("next_batch")

	// A backlog comes 100 at a time, in order, and the next long-poll
	// returns at once with the rest (the client's HTTP timeout would fail
	// the test otherwise).
	for i := range 130 {
		alice.sendToDevice("m.n", map[string]map[string]any{bob.UserID: {bob2.Device: map[string]any{"i": i}}})
	}
	var got []int
	for range 3 {
		r := bob2.sync(since2, 120000)
		evs := toDevice(r)
		if len(evs) > 100 {
			t.Fatalf("one sync delivered %d messages", len(evs))
		}
		for _, e := range evs {
			got = append(got, int(path(e, "content", "i").(float64)))
		}
		since2 = r.str("next_batch")
		if len(got) == 130 {
			break
		}
	}
	if len(got) != 130 || !slices.IsSorted(got) {
		t.Fatalf("the backlog came as %d messages: %v", len(got), got)
	}
}

// TestDeviceLists follows bob's view of alice's devices through device_lists
// in /sync and /keys/changes.
func TestDeviceLists(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	alice := newDevice(t, s.register("alice"))
	bob := s.register("bob")
	room1 := alice.createRoom()
	room2 := alice.createRoom()
	first := bob.sync("", 0)
	if first.Body["device_lists"] != nil {
		t.Fatalf("an initial sync has device_lists: %s", first.Raw)
	}
	start := first.str("next_batch")
	aliceSince := alice.sync("", 0).str("next_batch")

	// Sharing a room for the first time: both see each other.
	bob.join(room1)
	bob.join(room2)
	r := bob.sync(start, 0)
	if changed, _ := deviceLists(r); !slices.Contains(changed, alice.UserID) {
		t.Fatalf("bob joined alice's room but she is not in changed: %s", r.Raw)
	}
	if changed, _ := deviceLists(alice.sync(aliceSince, 0)); !slices.Contains(changed, bob.UserID) {
		t.Fatal("bob joined alice's room but he is not in her changed")
	}
	since := r.str("next_batch")

	// New device keys: bob's long-poll wakes with alice in changed.
	done := make(chan response, 1)
	go func() {
		r, _ := bob.try("GET", v3+"/sync?timeout=30000&since="+since, nil)
		done <- r
	}()
	alice.upload(map[string]any{"device_keys": alice.deviceKeys()})
	r = <-done
	if changed, _ := deviceLists(r); !slices.Equal(changed, []string{alice.UserID}) {
		t.Fatalf("after alice's upload bob's changed is %s", r.Raw)
	}
	since = r.str("next_batch")

	// One-time keys are not a device list change.
	alice.upload(map[string]any{"one_time_keys": alice.oneTimeKeys(0, 5, false)})
	r = bob.sync(since, 0)
	if changed, _ := deviceLists(r); slices.Contains(changed, alice.UserID) {
		t.Fatalf("one-time keys made alice changed: %s", r.Raw)
	}
	since = r.str("next_batch")

	// A new device with keys, then its logout: both are changes; the
	// deleted device's keys are gone from /keys/query.
	phone := newDevice(t, s.login("alice", "", "phone"))
	phone.upload(map[string]any{"device_keys": phone.deviceKeys(), "one_time_keys": phone.oneTimeKeys(0, 2, false)})
	r = bob.sync(since, 0)
	if changed, _ := deviceLists(r); !slices.Contains(changed, alice.UserID) {
		t.Fatalf("alice's new device is not a change: %s", r.Raw)
	}
	since = r.str("next_batch")
	phone.must("POST", v3+"/logout", nil)
	if devs := path(bob.query(map[string][]string{alice.UserID: nil}).Body, "device_keys", alice.UserID).(map[string]any); devs[phone.Device] != nil || len(devs) != 1 {
		t.Fatalf("a logged-out device's keys are still served: %v", devs)
	}
	if _, key := bob.claim(alice.UserID, phone.Device); key != nil {
		t.Fatalf("a logged-out device's one-time key was claimed: %v", key)
	}
	// The deletion is announced by the first sync or /keys/changes that
	// looks, in the responses after it.
	found := false
	for range 3 {
		r = bob.sync(since, 0)
		since = r.str("next_batch")
		if changed, _ := deviceLists(r); slices.Contains(changed, alice.UserID) {
			found = true
			break
		}
	}
	if !found {
		t.Fatal("alice's logout is not a device list change for bob")
	}

	// /keys/changes over the whole window.
	kc := bob.must("GET", v3+"/keys/changes?from="+start+"&to="+since, nil)
	if !slices.Contains(asList(kc.Body["changed"]), any(alice.UserID)) {
		t.Fatalf("keys/changes: %s", kc.Raw)
	}

	// Alice leaves one of two shared rooms: not left. Both: left.
	alice.leave(room1)
	r = bob.sync(since, 0)
	if _, left := deviceLists(r); slices.Contains(left, alice.UserID) {
		t.Fatalf("alice is in left while sharing another room: %s", r.Raw)
	}
	since = r.str("next_batch")
	beforeLeft := since
	alice.leave(room2)
	r = bob.sync(since, 0)
	if _, left := deviceLists(r); !slices.Equal(left, []string{alice.UserID}) {
		t.Fatalf("alice left every shared room, bob's left is %s", r.Raw)
	}
	since = r.str("next_batch")
	kc = bob.must("GET", v3+"/keys/changes?from="+beforeLeft+"&to="+since, nil)
	if !slices.Contains(asList(kc.Body["left"]), any(alice.UserID)) {
		t.Fatalf("keys/changes left: %s", kc.Raw)
	}
	// No longer sharing a room, her changes are none of bob's business.
	alice.upload(map[string]any{"device_keys": alice.deviceKeys()})
	if changed, _ := deviceLists(bob.sync(since, 0)); slices.Contains(changed, alice.UserID) {
		t.Fatal("bob hears of alice's keys after she left every shared room")
	}
	// Bob leaving works the same from his side.
	alice.join(room1)
	r = bob.sync(since, 0)
	since = r.str("next_batch")
	bob.leave(room1)
	if _, left := deviceLists(bob.sync(since, 0)); !slices.Contains(left, alice.UserID) {
		t.Fatal("bob left the last room he shared with alice, she is not in his left")
	}
}

// TestCrossSigning uploads cross-signing keys and signatures and checks what
// /keys/query shows to whom.
func TestCrossSigning(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	alice := newDevice(t, s.register("alice"))
	bob := newDevice(t, s.register("bob"))
	alice.upload(map[string]any{"device_keys": alice.deviceKeys()})
	bob.upload(map[string]any{"device_keys": bob.deviceKeys()})
	room := alice.createRoom()
	bob.join(room)
	since := bob.sync("", 0).str("next_batch")

	aliceX := newCrossSigning(t, alice.UserID)
	alice.must("POST", v3+"/keys/device_signing/upload", aliceX.upload()) // the first upload needs no UIA
	alice.must("POST", v3+"/keys/device_signing/upload", aliceX.upload()) // nor does a retry
	r := bob.sync(since, 0)
	if changed, _ := deviceLists(r); !slices.Contains(changed, alice.UserID) {
		t.Fatalf("alice's cross-signing keys are not a change for bob: %s", r.Raw)
	}
	since = r.str("next_batch")

	q := bob.query(map[string][]string{alice.UserID: nil})
	if path(q.Body, "master_keys", alice.UserID, "keys", "ed25519:"+aliceX.master.pub) != aliceX.master.pub ||
		path(q.Body, "self_signing_keys", alice.UserID, "keys", "ed25519:"+aliceX.ssk.pub) != aliceX.ssk.pub {
		t.Fatalf("bob's view of alice's cross-signing keys: %s", q.Raw)
	}
	if path(q.Body, "user_signing_keys", alice.UserID) != nil {
		t.Fatalf("bob sees alice's user-signing key: %s", q.Raw)
	}
	if own := alice.query(map[string][]string{alice.UserID: nil}); path(own.Body, "user_signing_keys", alice.UserID) == nil {
		t.Fatalf("alice does not see her own user-signing key: %s", own.Raw)
	}

	// Alice signs her device with her self-signing key and her master key
	// with her device; everyone sees both.
	dk := path(q.Body, "device_keys", alice.UserID, alice.Device).(map[string]any)
	delete(dk, "unsigned")
	signObject(t, dk, alice.UserID, "ed25519:"+aliceX.ssk.pub, aliceX.ssk.priv)
	mk := path(q.Body, "master_keys", alice.UserID).(map[string]any)
	signObject(t, mk, alice.UserID, "ed25519:"+alice.Device, alice.priv)
	up := alice.must("POST", v3+"/keys/signatures/upload", map[string]any{alice.UserID: map[string]any{alice.Device: dk, aliceX.master.pub: mk}})
	if f := path(up.Body, "failures").(map[string]any); len(f) != 0 {
		t.Fatalf("signature upload failures: %s", up.Raw)
	}
	q = bob.query(map[string][]string{alice.UserID: nil})
	if path(q.Body, "device_keys", alice.UserID, alice.Device, "signatures", alice.UserID, "ed25519:"+aliceX.ssk.pub) == nil ||
		path(q.Body, "master_keys", alice.UserID, "signatures", alice.UserID, "ed25519:"+alice.Device) == nil {
		t.Fatalf("the signatures are not in bob's query: %s", q.Raw)
	}
	r = bob.sync(since, 0)
	if changed, _ := deviceLists(r); !slices.Contains(changed, alice.UserID) {
		t.Fatalf("alice's signatures are not a change for bob: %s", r.Raw)
	}

	// Alice verifies bob: her user-signing key signs his master key. Only
	// alice sees that signature.
	bobX := newCrossSigning(t, bob.UserID)
	bob.must("POST", v3+"/keys/device_signing/upload", bobX.upload())
	bq := alice.query(map[string][]string{bob.UserID: nil})
	bmk := path(bq.Body, "master_keys", bob.UserID).(map[string]any)
	signObject(t, bmk, alice.UserID, "ed25519:"+aliceX.usk.pub, aliceX.usk.priv)
	alice.must("POST", v3+"/keys/signatures/upload", map[string]any{bob.UserID: map[string]any{bobX.master.pub: bmk}})
	if path(alice.query(map[string][]string{bob.UserID: nil}).Body, "master_keys", bob.UserID, "signatures", alice.UserID) == nil {
		t.Fatal("alice does not see her signature of bob's master key")
	}
	if path(bob.query(map[string][]string{bob.UserID: nil}).Body, "master_keys", bob.UserID, "signatures", alice.UserID) != nil {
		t.Fatal("bob sees alice's user-signing signature")
	}

	// Bad signatures and unknown keys are failures, not errors.
	bad := path(q.Body, "device_keys", alice.UserID, alice.Device).(map[string]any)
	delete(bad, "unsigned")
	bad["signatures"].(map[string]any)[alice.UserID].(map[string]any)["ed25519:"+aliceX.ssk.pub] = signing.EncodeBase64(make([]byte, 64))
	up = alice.must("POST", v3+"/keys/signatures/upload", map[string]any{alice.UserID: map[string]any{alice.Device: bad, "NOSUCHKEY": mk}})
	if path(up.Body, "failures", alice.UserID, alice.Device, "errcode") != "M_INVALID_SIGNATURE" ||
		path(up.Body, "failures", alice.UserID, "NOSUCHKEY", "errcode") != "M_NOT_FOUND" {
		t.Fatalf("bad signature uploads: %s", up.Raw)
	}

	// Replacing keys needs the password.
	newX := newCrossSigning(t, alice.UserID)
	r = alice.do("POST", v3+"/keys/device_signing/upload", newX.upload())
	if r.Status != 401 || r.Body["flows"] == nil || r.Body["errcode"] != nil {
		t.Fatalf("replacing cross-signing keys without auth: %d %s", r.Status, r.Raw)
	}
	withAuth := newX.upload()
	withAuth["auth"] = map[string]any{"type": "m.login.password", "session": r.str("session"),
		"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "wrong"}
	alice.fails(401, "M_FORBIDDEN", "POST", v3+"/keys/device_signing/upload", withAuth)
	withAuth["auth"].(map[string]any)["password"] = "secret-alice"
	alice.must("POST", v3+"/keys/device_signing/upload", withAuth)
	q = bob.query(map[string][]string{alice.UserID: nil})
	if path(q.Body, "master_keys", alice.UserID, "keys", "ed25519:"+newX.master.pub) == nil {
		t.Fatalf("the new master key is not served: %s", q.Raw)
	}
	if path(q.Body, "device_keys", alice.UserID, alice.Device, "signatures", alice.UserID, "ed25519:"+aliceX.ssk.pub) != nil {
		t.Fatalf("a replaced self-signing key's signature is still served: %s", q.Raw)
	}

	// A self-signing key not signed by the master key; a master key whose
	// public key is a device ID.
	forged := newCrossSigning(t, alice.UserID)
	body := forged.upload()
	delete(body, "master_key")
	body["auth"] = withAuth["auth"]
	alice.fails(400, "M_INVALID_SIGNATURE", "POST", v3+"/keys/device_signing/upload", body)
	carolX := newCrossSigning(t, "@carol:plaza.test")
	carol := s.register("carol")
	s.login("carol", carolX.master.pub, "")
	carol.fails(403, "M_FORBIDDEN", "POST", v3+"/keys/device_signing/upload", carolX.upload())
	carol.fails(403, "M_FORBIDDEN", "POST", v3+"/keys/device_signing/upload", aliceX.upload())
}

// TestBadInput: malformed, oversized and unauthorised requests get the
// spec's errors and write nothing.
func TestBadInput(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	alice := newDevice(t, s.register("alice"))
	bob := newDevice(t, s.register("bob"))
	alice.upload(map[string]any{"device_keys": alice.deviceKeys(), "one_time_keys": alice.oneTimeKeys(0, 2, false)})
	before := bob.query(map[string][]string{alice.UserID: nil}).Raw

	up := v3 + "/keys/upload"
	withKeys := func(mutate func(dk map[string]any)) map[string]any {
		dk := alice.deviceKeys()
		mutate(dk)
		return map[string]any{"device_keys": dk}
	}
	alice.fails(400, "M_NOT_JSON", "POST", up, "{")
	alice.fails(400, "M_BAD_JSON", "POST", up, `{"device_keys": 5}`)
	alice.fails(400, "M_BAD_JSON", "POST", up, `{"one_time_keys": []}`)
	alice.fails(403, "M_FORBIDDEN", "POST", up, withKeys(func(dk map[string]any) { dk["user_id"] = bob.UserID }))
	alice.fails(403, "M_FORBIDDEN", "POST", up, withKeys(func(dk map[string]any) { dk["device_id"] = "OTHERDEVICE" }))
	alice.fails(400, "M_BAD_JSON", "POST", up, withKeys(func(dk map[string]any) { dk["signatures"] = "x" }))
	alice.fails(400, "M_BAD_JSON", "POST", up, withKeys(func(dk map[string]any) { dk["algorithms"] = "m.megolm.v1.aes-sha2" }))
	alice.fails(400, "M_INVALID_PARAM", "POST", up, withKeys(func(dk map[string]any) {
		dk["keys"].(map[string]any)["curve25519:OTHERDEVICE"] = randomKey()
	}))
	alice.fails(400, "M_INVALID_PARAM", "POST", up, withKeys(func(dk map[string]any) {
		dk["keys"].(map[string]any)["ed25519:"+alice.Device] = ""
	}))
	alice.fails(400, "M_BAD_JSON", "POST", up, map[string]any{"one_time_keys": map[string]any{"signed_curve25519:A": 5}})
	alice.fails(400, "M_BAD_JSON", "POST", up, map[string]any{"one_time_keys": map[string]any{"signed_curve25519:A": map[string]any{"nokey": "x"}}})
	alice.fails(400, "M_INVALID_PARAM", "POST", up, map[string]any{"one_time_keys": map[string]any{"nocolon": "x"}})
	alice.fails(400, "M_INVALID_PARAM", "POST", up, map[string]any{"fallback_keys": map[string]any{"signed_curve25519:A": "x", "signed_curve25519:B": "y"}})
	// One-time key IDs are not reused for another key; the whole upload
	// fails, the good keys in it included.
	conflict := alice.oneTimeKeys(0, 1, false)
	for id, k := range alice.oneTimeKeys(50, 3, false) {
		conflict[id] = k
	}
	alice.fails(400, "M_INVALID_PARAM", "POST", up, map[string]any{"one_time_keys": conflict})
	alice.fails(413, "M_TOO_LARGE", "POST", up, map[string]any{"one_time_keys": alice.oneTimeKeys(0, 1001, false)})
	alice.fails(413, "M_TOO_LARGE", "POST", up, map[string]any{"one_time_keys": map[string]any{"a:b": strings.Repeat("x", 600<<10)}})
	if n := otkCount(alice.sync("", 0)); n != 2 {
		t.Fatalf("failed uploads changed the key count to %d", n)
	}
	if after := bob.query(map[string][]string{alice.UserID: nil}).Raw; string(after) != string(before) {
		t.Fatalf("failed uploads changed alice's keys:\n%s\n%s", before, after)
	}

	bob.fails(400, "M_MISSING_PARAM", "POST", v3+"/keys/query", map[string]any{})
	bob.fails(400, "M_BAD_JSON", "POST", v3+"/keys/query", map[string]any{"device_keys": []any{alice.UserID}})
	bob.fails(400, "M_INVALID_PARAM", "POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{"alice": []any{}}})
	bob.fails(400, "M_MISSING_PARAM", "POST", v3+"/keys/claim", map[string]any{})
	bob.fails(400, "M_INVALID_PARAM", "POST", v3+"/keys/claim", map[string]any{"one_time_keys": map[string]any{"alice": map[string]any{"D": "signed_curve25519"}}})
	bob.fails(400, "M_BAD_JSON", "POST", v3+"/keys/claim", map[string]any{"one_time_keys": map[string]any{alice.UserID: []any{}}})
	bob.fails(400, "M_MISSING_PARAM", "GET", v3+"/keys/changes", nil)
	bob.fails(400, "M_INVALID_PARAM", "GET", v3+"/keys/changes?from=garbage", nil)
	bob.fails(400, "M_INVALID_PARAM", "GET", v3+"/keys/changes?from=s1&to=x", nil)
	bob.fails(400, "M_BAD_JSON", "POST", v3+"/keys/signatures/upload", map[string]any{alice.UserID: "x"})
	bob.fails(400, "M_BAD_JSON", "POST", v3+"/keys/device_signing/upload", map[string]any{"master_key": map[string]any{"user_id": bob.UserID}})
	bob.fails(400, "M_INVALID_PARAM", "POST", v3+"/keys/device_signing/upload", map[string]any{"master_key": map[string]any{
		"user_id": bob.UserID, "usage": []any{"self_signing"}, "keys": map[string]any{"ed25519:" + bob.pub: bob.pub}}})
	bob.fails(400, "M_INVALID_PARAM", "POST", v3+"/keys/device_signing/upload", map[string]any{"master_key": map[string]any{
		"user_id": bob.UserID, "usage": []any{"master"}, "keys": map[string]any{"ed25519:x": "y"}}})
	bob.fails(403, "M_FORBIDDEN", "POST", v3+"/keys/device_signing/upload", map[string]any{"master_key": map[string]any{
		"user_id": alice.UserID, "usage": []any{"master"}, "keys": map[string]any{"ed25519:" + bob.pub: bob.pub}}})
	bob.fails(400, "M_MISSING_PARAM", "POST", v3+"/keys/device_signing/upload", newCrossSigning(t, bob.UserID).uploadWithout("master_key"))
	if path(bob.query(map[string][]string{bob.UserID: nil}).Body, "master_keys", bob.UserID) != nil {
		t.Fatal("a failed cross-signing upload stored a key")
	}

	since := bob.sync("", 0).str("next_batch")
	td := v3 + "/sendToDevice/m.test/"
	msg := func(content any) map[string]any {
		return map[string]any{"messages": map[string]any{bob.UserID: map[string]any{bob.Device: content}}}
	}
	alice.fails(400, "M_MISSING_PARAM", "PUT", td+"t1", map[string]any{})
	alice.fails(400, "M_BAD_JSON", "PUT", td+"t2", msg("not an object"))
	alice.fails(400, "M_BAD_JSON", "PUT", td+"t3", map[string]any{"messages": []any{}})
	alice.fails(400, "M_INVALID_PARAM", "PUT", td+"t4", map[string]any{"messages": map[string]any{"bob": map[string]any{"D": map[string]any{}}}})
	alice.fails(413, "M_TOO_LARGE", "PUT", td+"t5", msg(map[string]any{"big": strings.Repeat("x", 70<<10)}))
	alice.fails(413, "M_TOO_LARGE", "PUT", td+"t6", msg(map[string]any{"big": strings.Repeat("x", 5<<20)}))
	if evs := toDevice(bob.sync(since, 0)); len(evs) != 0 {
		t.Fatalf("failed to-device requests delivered %v", evs)
	}
}

// TestRestartKeepsTokens: a sync token past every stored row (the rows
// were acknowledged to-device messages, now deleted) stays valid across a
// restart: the stream resumes above it, so the client is not sent back to
// an initial sync.
func TestRestartKeepsTokens(t *testing.T) {
	t.Parallel()
	pool := storagetest.NewDB(t, storage.Migrations())
	dir := t.TempDir()
	s, stop := startServer(t, pool, dir)
	alice, bob := s.register("alice"), s.register("bob")
	bob.join(alice.createRoom())
	since := bob.sync("", 0).str("next_batch")
	alice.sendToDevice("m.test", map[string]map[string]any{bob.UserID: {bob.Device: map[string]any{}}})
	r := bob.sync(since, 0)
	if len(toDevice(r)) != 1 {
		t.Fatalf("no message: %s", r.Raw)
	}
	tok := bob.sync(r.str("next_batch"), 0).str("next_batch") // acknowledges, deleting the message
	stop()

	s2, _ := startServer(t, pool, dir)
	bob.base = s2.URL
	after := bob.sync(tok, 0)
	if joined := path(after.Body, "rooms", "join").(map[string]any); len(joined) != 0 {
		t.Fatalf("after a restart the token was treated as unknown (an initial sync came back): %s", after.Raw)
	}
}
