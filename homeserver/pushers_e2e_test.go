package homeserver_test

import "testing"

func httpPusher(appID, pushkey, device string) map[string]any {
	return map[string]any{"kind": "http", "app_id": appID, "pushkey": pushkey, "app_display_name": "App",
		"device_display_name": device, "lang": "en", "profile_tag": "tag",
		"data": map[string]any{"url": "https://push.example/_matrix/push/v1/notify", "format": "event_id_only", "custom": 1}}
}

// pushersOf lists a user's pushers by push key.
func pushersOf(c *client) map[string]map[string]any {
	c.t.Helper()
	r := c.must("GET", "/_matrix/client/v3/pushers", nil)
	list, ok := r.Body["pushers"].([]any)
	if !ok {
		c.t.Fatalf("pushers = %s", r.Raw)
	}
	out := map[string]map[string]any{}
	for _, p := range list {
		m := p.(map[string]any)
		out[m["app_id"].(string)+"/"+m["pushkey"].(string)] = m
	}
	return out
}

// TestPushers sets, replaces, appends and deletes pushers over HTTP and
// checks that bad ones are refused with the spec's errors and store nothing.
func TestPushers(t *testing.T) {
	s := newServer(t)
	alice, bob := s.register("alice"), s.register("bob")
	const set = "/_matrix/client/v3/pushers/set"
	if ps := pushersOf(alice); len(ps) != 0 {
		t.Fatalf("new user has pushers: %v", ps)
	}
	alice.must("POST", set, httpPusher("org.example.app", "key1", "phone"))
	ps := pushersOf(alice)
	p := ps["org.example.app/key1"]
	if len(ps) != 1 || p["kind"] != "http" || p["device_display_name"] != "phone" || p["lang"] != "en" || p["profile_tag"] != "tag" ||
		jsonString(p["data"]) != `{"custom":1,"format":"event_id_only","url":"https://push.example/_matrix/push/v1/notify"}` {
		t.Fatalf("pushers = %v", ps)
	}
	// The same app ID and push key replace it.
	alice.must("POST", set, httpPusher("org.example.app", "key1", "tablet"))
	if ps := pushersOf(alice); len(ps) != 1 || ps["org.example.app/key1"]["device_display_name"] != "tablet" {
		t.Fatalf("after replacing: %v", ps)
	}
	alice.must("POST", set, httpPusher("org.example.app", "key2", "laptop"))
	if ps := pushersOf(alice); len(ps) != 2 {
		t.Fatalf("after a second pusher: %v", ps)
	}

	// Bob takes over key1: without append, Alice loses it; with append,
	// both keep theirs.
	bob.must("POST", set, httpPusher("org.example.app", "key1", "bob's phone"))
	if ps := pushersOf(alice); len(ps) != 1 || ps["org.example.app/key2"] == nil {
		t.Fatalf("alice after bob took key1: %v", ps)
	}
	appended := httpPusher("org.example.app", "key2", "bob's laptop")
	appended["append"] = true
	bob.must("POST", set, appended)
	if len(pushersOf(alice)) != 1 || len(pushersOf(bob)) != 2 {
		t.Fatalf("append: alice %v, bob %v", pushersOf(alice), pushersOf(bob))
	}

	// kind null deletes; deleting what is not there is fine.
	del := map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "key2"}
	alice.must("POST", set, del)
	alice.must("POST", set, del)
	if ps := pushersOf(alice); len(ps) != 0 {
		t.Fatalf("after deleting: %v", ps)
	}
	if len(pushersOf(bob)) != 2 {
		t.Fatal("alice's deletion removed bob's pusher")
	}

	bad := func(status int, errcode string, mutate func(map[string]any)) {
		t.Helper()
		b := httpPusher("org.example.app", "bad", "x")
		mutate(b)
		alice.fails(status, errcode, "POST", set, b)
	}
	bad(400, "M_MISSING_PARAM", func(b map[string]any) { delete(b, "kind") })
	bad(400, "M_MISSING_PARAM", func(b map[string]any) { delete(b, "app_id") })
	bad(400, "M_MISSING_PARAM", func(b map[string]any) { delete(b, "pushkey") })
	bad(400, "M_MISSING_PARAM", func(b map[string]any) { delete(b, "lang") })
	bad(400, "M_MISSING_PARAM", func(b map[string]any) { delete(b, "app_display_name") })
	bad(400, "M_MISSING_PARAM", func(b map[string]any) { delete(b, "data") })
	bad(400, "M_MISSING_PARAM", func(b map[string]any) { b["data"] = map[string]any{} })
	bad(400, "M_INVALID_PARAM", func(b map[string]any) { b["kind"] = "carrier-pigeon" })
	bad(400, "M_INVALID_PARAM", func(b map[string]any) { b["kind"] = 7 })
	bad(400, "M_INVALID_PARAM", func(b map[string]any) { b["app_id"] = string(make([]byte, 65)) })
	bad(400, "M_INVALID_PARAM", func(b map[string]any) { b["data"] = map[string]any{"url": "https://push.example/elsewhere"} })
	bad(400, "M_INVALID_PARAM", func(b map[string]any) { b["data"] = map[string]any{"url": "ftp://push.example/_matrix/push/v1/notify"} })
	bad(400, "M_INVALID_PARAM", func(b map[string]any) { b["data"] = "url" })
	bad(400, "M_THREEPID_NOT_FOUND", func(b map[string]any) { b["kind"], b["app_id"], b["pushkey"] = "email", "m.email", "alice@example.org" })
	alice.fails(400, "M_NOT_JSON", "POST", set, "{")
	if ps := pushersOf(alice); len(ps) != 0 {
		t.Fatalf("refused pushers were stored: %v", ps)
	}
	s.anon().fails(401, "M_MISSING_TOKEN", "GET", "/_matrix/client/v3/pushers", nil)

	// A pusher goes with the device that set it (logout), not with the
	// user's other devices.
	login := s.anon().must("POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "secret-alice"})
	phone := &client{t: t, base: s.URL, token: login.str("access_token"), UserID: alice.UserID}
	phone.must("POST", set, httpPusher("org.example.app", "phone-key", "phone"))
	alice.must("POST", set, httpPusher("org.example.app", "laptop-key", "laptop"))
	if ps := pushersOf(alice); len(ps) != 2 {
		t.Fatalf("two devices' pushers: %v", ps)
	}
	phone.must("POST", "/_matrix/client/v3/logout", map[string]any{})
	if ps := pushersOf(alice); len(ps) != 1 || ps["org.example.app/laptop-key"] == nil {
		t.Fatalf("after the phone logged out: %v", ps)
	}
}
