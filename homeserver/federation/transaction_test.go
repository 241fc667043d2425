package federation

import (
	"errors"
	"strings"
	"testing"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
)

func TestParseTransactionLimits(t *testing.T) {
	pdus := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = "{}"
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	for _, tc := range []struct {
		name, body, code string
	}{
		{"ok", `{"origin":"b.example","pdus":` + pdus(50) + `,"edus":` + pdus(100) + `}`, ""},
		{"51 PDUs", `{"origin":"b.example","pdus":` + pdus(51) + `}`, "M_TOO_LARGE"},
		{"101 EDUs", `{"origin":"b.example","edus":` + pdus(101) + `}`, "M_TOO_LARGE"},
		{"other origin", `{"origin":"c.example","pdus":[]}`, "M_FORBIDDEN"},
		{"not JSON", `{"origin":`, "M_NOT_JSON"},
		{"wrong shape", `{"pdus":{}}`, "M_BAD_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTransaction([]byte(tc.body), "b.example")
			var he *httpapi.Error
			switch {
			case tc.code == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.code != "" && (!errors.As(err, &he) || he.Code != tc.code):
				t.Fatalf("got %v, want %s", err, tc.code)
			}
		})
	}
}

func TestACLAllows(t *testing.T) {
	acl := `{"allow":["*"],"deny":["evil.example","*.bad.example"],"allow_ip_literals":false}`
	for server, want := range map[string]bool{
		"good.example": true, "good.example:8448": true, "evil.example": false, "evil.example:443": false,
		"x.bad.example": false, "bad.example": true, "1.2.3.4": false, "[::1]:8448": false,
	} {
		if got := ACLAllows([]byte(acl), server); got != want {
			t.Errorf("%s: %v, want %v", server, got, want)
		}
	}
	if ACLAllows([]byte(`{"deny":[]}`), "any.example") {
		t.Error("no allow entries must allow nobody")
	}
	if !ACLAllows([]byte(`{"allow":["a?c.example"]}`), "abc.example") || ACLAllows([]byte(`{"allow":["a?c.example"]}`), "abbc.example") {
		t.Error("? matches exactly one character")
	}
}

// FuzzTransaction feeds /send bodies through the transaction parser and the
// PDU parser of every supported room version: nothing panics, and a PDU
// that parses re-parses from its own canonical form to the same event.
func FuzzTransaction(f *testing.F) {
	f.Add([]byte(`{"origin":"b.example","origin_server_ts":1,"pdus":[{"type":"m.room.message","room_id":"!r:b.example","sender":"@u:b.example","content":{"body":"x"},"depth":3,"prev_events":["$a"],"auth_events":["$b"],"origin_server_ts":5,"hashes":{"sha256":"x"},"signatures":{}}],"edus":[]}`))
	f.Add([]byte(`{"origin":"b.example","pdus":[{}],"edus":[{"edu_type":"m.typing"}]}`))
	f.Add([]byte(`{"pdus":[[]]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		txn, err := parseTransaction(body, "b.example")
		if err != nil {
			return
		}
		if len(txn.PDUs) > maxPDUsPerTxn || len(txn.EDUs) > maxEDUsPerTxn {
			t.Fatal("limits not applied")
		}
		for _, raw := range txn.PDUs {
			for _, vid := range event.SupportedVersions() {
				v := event.MustVersion(vid)
				ev, err := event.Parse(v, raw)
				if err != nil {
					continue
				}
				again, err := event.Parse(v, ev.JSON())
				if err != nil {
					t.Fatalf("v%s: canonical form of an accepted PDU refused: %v", vid, err)
				}
				if again.ID() != ev.ID() {
					t.Fatalf("v%s: ID changed on re-parse", vid)
				}
				_ = ev.CheckContentHash()
				if _, err := ev.Redact(); err != nil {
					t.Fatalf("v%s: redacting an accepted PDU: %v", vid, err)
				}
			}
		}
	})
}
