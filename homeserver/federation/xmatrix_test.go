package federation

import (
	"strings"
	"testing"
)

func TestParseXMatrix(t *testing.T) {
	want := XMatrix{Origin: "origin.example", Destination: "dest.example:8448", Key: "ed25519:key1", Sig: "ABC/def+123"}
	tests := []struct {
		name, header string
		want         XMatrix // zero: an error is expected
	}{
		{"spec form", `X-Matrix origin="origin.example",destination="dest.example:8448",key="ed25519:key1",sig="ABC/def+123"`, want},
		{"any order, upper-case names and scheme", `x-matrix SIG="ABC/def+123",Key="ed25519:key1",DESTINATION="dest.example:8448",Origin="origin.example"`, want},
		{"spaces and tabs around commas", "X-Matrix   origin=\"origin.example\" ,\tdestination=\"dest.example:8448\" ,  key=\"ed25519:key1\",sig=\"ABC/def+123\"  ", want},
		{"unquoted values with colons", `X-Matrix origin=origin.example,destination=dest.example:8448,key=ed25519:key1,sig=ABC/def+123`, want},
		{"escapes in quoted values", `X-Matrix origin="origin\.example",destination="dest.example:8448",key="ed25519:key1",sig="ABC\/def+123"`, want},
		{"unknown parameters ignored", `X-Matrix origin="origin.example",foo="a,b=\"c\"",destination="dest.example:8448",key="ed25519:key1",bar=baz,sig="ABC/def+123"`, want},
		{"empty list elements", `X-Matrix ,origin="origin.example",,destination="dest.example:8448",key="ed25519:key1",sig="ABC/def+123",`, want},
		{"no destination", `X-Matrix origin=origin.example,key="ed25519:key1",sig="ABC/def+123"`, XMatrix{Origin: "origin.example", Key: "ed25519:key1", Sig: "ABC/def+123"}},
		{"IPv6 origin", `X-Matrix origin=[::1]:8448,key="ed25519:k",sig="s"`, XMatrix{Origin: "[::1]:8448", Key: "ed25519:k", Sig: "s"}},
		{"other scheme", `Bearer abc`, XMatrix{}},
		{"scheme only", `X-Matrix`, XMatrix{}},
		{"no space after scheme", `X-Matrixorigin="a"`, XMatrix{}},
		{"missing origin", `X-Matrix key="ed25519:k",sig="s"`, XMatrix{}},
		{"missing key", `X-Matrix origin="a.example",sig="s"`, XMatrix{}},
		{"missing sig", `X-Matrix origin="a.example",key="ed25519:k"`, XMatrix{}},
		{"empty value", `X-Matrix origin=,key="ed25519:k",sig="s"`, XMatrix{}},
		{"empty quoted origin", `X-Matrix origin="",key="ed25519:k",sig="s"`, XMatrix{}},
		{"invalid origin", `X-Matrix origin="a b",key="ed25519:k",sig="s"`, XMatrix{}},
		{"invalid destination", `X-Matrix origin="a.example",destination="",key="ed25519:k",sig="s"`, XMatrix{}},
		{"duplicate parameter", `X-Matrix origin="a.example",origin="b.example",key="ed25519:k",sig="s"`, XMatrix{}},
		{"duplicate in other case", `X-Matrix origin="a.example",ORIGIN="a.example",key="ed25519:k",sig="s"`, XMatrix{}},
		{"unterminated quote", `X-Matrix origin="a.example,key="ed25519:k",sig="s`, XMatrix{}},
		{"trailing backslash", `X-Matrix origin="a.example",key="ed25519:k",sig="s\`, XMatrix{}},
		{"no comma", `X-Matrix origin="a.example" key="ed25519:k",sig="s"`, XMatrix{}},
		{"no equals", `X-Matrix origin,key="ed25519:k",sig="s"`, XMatrix{}},
		{"control character", "X-Matrix origin=\"a.example\",key=\"ed25519:k\",sig=\"s\x01\"", XMatrix{}},
		{"too long", `X-Matrix origin="a.example",key="ed25519:k",sig="` + strings.Repeat("A", maxXMatrixLen) + `"`, XMatrix{}},
	}
	for _, tt := range tests {
		got, err := ParseXMatrix(tt.header)
		if tt.want == (XMatrix{}) {
			if err == nil {
				t.Errorf("%s: parsed as %+v, want an error", tt.name, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
	}
}

func TestXMatrixStringRoundTrips(t *testing.T) {
	x := XMatrix{Origin: "a.example:8448", Destination: "[::1]:8448", Key: "ed25519:abc_1", Sig: "c2lnbmF0dXJl"}
	s := x.String()
	if s != `X-Matrix origin="a.example:8448",destination="[::1]:8448",key="ed25519:abc_1",sig="c2lnbmF0dXJl"` {
		t.Errorf("String() = %s", s)
	}
	if got, err := ParseXMatrix(s); err != nil || got != x {
		t.Errorf("round trip: %+v, %v", got, err)
	}
}

// FuzzParseXMatrix checks that the parser never panics, and that whatever it
// accepts survives formatting and parsing again unchanged.
func FuzzParseXMatrix(f *testing.F) {
	for _, seed := range []string{
		`X-Matrix origin="origin.example",destination="dest.example:8448",key="ed25519:key1",sig="ABC/def+123"`,
		`x-matrix SIG=abc,Key=ed25519:k , origin=[::1]:8448`,
		`X-Matrix origin="a\"b",key="k\\",sig=""`,
		"X-Matrix \t,origin=a.example,,key=k,sig=s,",
		`X-Matrix origin=a.example,unknown="x,y",key=k,sig=s`,
		`Bearer token`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, h string) {
		x, err := ParseXMatrix(h)
		if err != nil {
			return
		}
		if x.Origin == "" || x.Key == "" || x.Sig == "" {
			t.Fatalf("accepted %q with a missing field: %+v", h, x)
		}
		if len(x.String()) > maxXMatrixLen {
			return // quoting can lengthen a header accepted just under the limit
		}
		again, err := ParseXMatrix(x.String())
		if err != nil {
			t.Fatalf("%q parsed as %+v, which formats as %q, which does not parse: %v", h, x, x.String(), err)
		}
		if again != x {
			t.Fatalf("round trip of %q: %+v became %+v", h, x, again)
		}
	})
}
