package signing

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"plaza/homeserver/canonicaljson"
)

// The spec's cryptographic test vectors (appendices, "Cryptographic Test
// Vectors") all use this seed, key ID and server name.
const (
	specSeed   = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
	specKeyID  = "ed25519:1"
	specServer = "domain"
)

func specKey(t testing.TB) Key {
	t.Helper()
	seed, err := DecodeBase64(specSeed)
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewKey(specKeyID, seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func canon(t testing.TB, s string) string {
	t.Helper()
	c, err := canonicaljson.Canonicalize([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return string(c)
}

func TestSpecJSONSigning(t *testing.T) {
	k := specKey(t)
	tests := []struct{ in, want string }{
		{`{}`, `{
    "signatures": {
        "domain": {
            "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
        }
    }
}`},
		{`{
    "one": 1,
    "two": "Two"
}`, `{
    "one": 1,
    "signatures": {
        "domain": {
            "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        }
    },
    "two": "Two"
}`},
	}
	for _, tc := range tests {
		got, err := SignJSON([]byte(tc.in), specServer, k)
		if err != nil {
			t.Fatal(err)
		}
		if want := canon(t, tc.want); string(got) != want {
			t.Errorf("SignJSON(%s)\n = %s\nwant %s", tc.in, got, want)
		}
		if err := VerifyJSON(got, specServer, specKeyID, k.Public()); err != nil {
			t.Errorf("VerifyJSON(%s): %v", got, err)
		}
	}
}

// The spec's event signing vectors sign the redacted event (here written out
// already redacted and hashed); at the JSON level that is plain SignJSON,
// which must keep unsigned and produce the spec's signature.
func TestSpecEventSignatures(t *testing.T) {
	k := specKey(t)
	tests := []struct{ redacted, sig string }{
		{`{"auth_events":[],"content":{},"depth":3,"hashes":{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},"origin":"domain","origin_server_ts":1000000,"prev_events":[],"room_id":"!x:domain","sender":"@a:domain","signatures":{},"type":"X","unsigned":{"age_ts":1000000}}`,
			"KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"},
		{`{"content":{},"event_id":"$0:domain","hashes":{"sha256":"onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},"origin":"domain","origin_server_ts":1000000,"type":"m.room.message","room_id":"!r:domain","sender":"@u:domain","signatures":{},"unsigned":{"age_ts":1000000}}`,
			"Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"},
	}
	for _, tc := range tests {
		got, err := SignJSON([]byte(tc.redacted), specServer, k)
		if err != nil {
			t.Fatal(err)
		}
		want, err := canonicaljson.Set([]byte(canon(t, tc.redacted)), "signatures", []byte(`{"domain":{"ed25519:1":"`+tc.sig+`"}}`))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("SignJSON\n = %s\nwant %s", got, want)
		}
	}
}

func TestSpecSeedAndPublicKey(t *testing.T) {
	k := specKey(t)
	// The spec seed's last character carries non-zero spare bits, so strict
	// base64 decoding would refuse the spec's own test key.
	if got := EncodeBase64(k.Private.Seed()); got != "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0" {
		t.Errorf("seed re-encodes as %s", got)
	}
	if len(k.Public()) != ed25519.PublicKeySize {
		t.Errorf("public key is %d bytes", len(k.Public()))
	}
}

func TestSignJSONKeepsUnsignedAndOtherSignatures(t *testing.T) {
	k := specKey(t)
	other, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	in := `{"b":2,"a":1,"unsigned":{"age":5},"signatures":{"zzz.example":{"ed25519:x":"abc"},"domain":{"ed25519:0":"old"}}}`
	got, err := SignJSON([]byte(in), specServer, k)
	if err != nil {
		t.Fatal(err)
	}
	// The signature covers only a and b, so it is that of {"a":1,"b":2}.
	sig := SignBytes([]byte(`{"a":1,"b":2}`), k)
	want := `{"a":1,"b":2,"signatures":{"domain":{"ed25519:0":"old","ed25519:1":"` + sig + `"},"zzz.example":{"ed25519:x":"abc"}},"unsigned":{"age":5}}`
	if string(got) != want {
		t.Fatalf("SignJSON = %s\nwant %s", got, want)
	}
	// A second server's signature joins the first; both verify, and
	// changing unsigned or signatures afterwards does not break them.
	got2, err := SignJSON(got, "other.example", Key{ID: "ed25519:b", Private: other.Private})
	if err != nil {
		t.Fatal(err)
	}
	got2, err = canonicaljson.Set(got2, "unsigned", []byte(`{"age":6,"extra":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyJSON(got2, specServer, specKeyID, k.Public()); err != nil {
		t.Error(err)
	}
	if err := VerifyJSON(got2, "other.example", "ed25519:b", other.Public()); err != nil {
		t.Error(err)
	}
	// Re-signing with the same key replaces the signature (ed25519 is
	// deterministic, so the output is unchanged).
	again, err := SignJSON(got, specServer, k)
	if err != nil || !bytes.Equal(again, got) {
		t.Errorf("re-signing changed the object: %s, %v", again, err)
	}
}

func TestVerifyJSONErrors(t *testing.T) {
	k := specKey(t)
	signed, err := SignJSON([]byte(`{"one":1,"two":"Two","unsigned":{"x":1}}`), specServer, k)
	if err != nil {
		t.Fatal(err)
	}
	set := func(key, value string) string {
		b, err := canonicaljson.Set(signed, key, []byte(value))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	other, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, obj, server, keyID string
		pub                      ed25519.PublicKey
		want                     error
	}{
		{"valid", string(signed), specServer, specKeyID, k.Public(), nil},
		{"valid with whitespace", "  " + strings.ReplaceAll(string(signed), ",", " ,\n ") + "\n", specServer, specKeyID, k.Public(), nil},
		{"unsigned changed", set("unsigned", `{"x":2}`), specServer, specKeyID, k.Public(), nil},
		{"tampered value", set("one", "2"), specServer, specKeyID, k.Public(), ErrBadSignature},
		{"added key", set("three", "3"), specServer, specKeyID, k.Public(), ErrBadSignature},
		{"wrong public key", string(signed), specServer, specKeyID, other.Public(), ErrBadSignature},
		{"wrong server", string(signed), "other.example", specKeyID, k.Public(), ErrMissingSignature},
		{"wrong key id", string(signed), specServer, "ed25519:2", k.Public(), ErrMissingSignature},
		{"no signatures", `{"one":1}`, specServer, specKeyID, k.Public(), ErrMissingSignature},
		{"signatures not object", set("signatures", `[]`), specServer, specKeyID, k.Public(), ErrMissingSignature},
		{"server entry not object", set("signatures", `{"domain":"x"}`), specServer, specKeyID, k.Public(), ErrMissingSignature},
		{"signature not string", set("signatures", `{"domain":{"ed25519:1":1}}`), specServer, specKeyID, k.Public(), ErrBadBase64},
		{"signature not base64", set("signatures", `{"domain":{"ed25519:1":"not base64!"}}`), specServer, specKeyID, k.Public(), ErrBadBase64},
		{"signature escaped", set("signatures", `{"domain":{"ed25519:1":"\n"}}`), specServer, specKeyID, k.Public(), ErrBadBase64},
		{"signature truncated", set("signatures", `{"domain":{"ed25519:1":"`+SignBytes([]byte("x"), k)[:40]+`"}}`), specServer, specKeyID, k.Public(), ErrBadSignature},
		{"short public key", string(signed), specServer, specKeyID, k.Public()[:31], ErrBadKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyJSON([]byte(tc.obj), tc.server, tc.keyID, tc.pub)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("VerifyJSON = %v, want %v", err, tc.want)
			}
		})
	}
	var jerr *canonicaljson.Error
	if err := VerifyJSON([]byte(`{"a":1.5}`), specServer, specKeyID, k.Public()); !errors.As(err, &jerr) {
		t.Errorf("VerifyJSON(float) = %v, want *canonicaljson.Error", err)
	}
	if err := VerifyJSON([]byte(`[]`), specServer, specKeyID, k.Public()); err == nil {
		t.Error("VerifyJSON accepted an array")
	}
}

func TestSignJSONErrors(t *testing.T) {
	k := specKey(t)
	for _, in := range []string{`[]`, `"x"`, `{"a":1.0}`, `{"a":1,"a":2}`, `{`, `{"signatures":[]}`, `{"signatures":{"domain":1}}`} {
		if got, err := SignJSON([]byte(in), specServer, k); err == nil {
			t.Errorf("SignJSON(%s) = %s, want error", in, got)
		}
	}
	for _, bad := range []Key{{ID: "ed25519:1"}, {ID: "rsa:1", Private: k.Private}, {ID: "ed25519:", Private: k.Private}, {ID: "ed25519:a-b", Private: k.Private}} {
		if _, err := SignJSON([]byte(`{}`), specServer, bad); !errors.Is(err, ErrBadKey) {
			t.Errorf("SignJSON with key %q = %v, want ErrBadKey", bad.ID, err)
		}
	}
	if _, err := SignJSON([]byte(`{}`), "bad\xffserver", k); err == nil {
		t.Error("SignJSON accepted an invalid UTF-8 server name")
	}
}

func TestSignVerifyBytes(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte(`{"a":1}`)
	sig := SignBytes(msg, k)
	if len(sig) != 86 || strings.HasSuffix(sig, "=") {
		t.Errorf("signature %q is not 86 chars of unpadded base64", sig)
	}
	if err := VerifyBytes(msg, sig, k.Public()); err != nil {
		t.Error(err)
	}
	if err := VerifyBytes(msg, sig+"==", k.Public()); err != nil {
		t.Errorf("padded signature: %v", err)
	}
	url := strings.NewReplacer("+", "-", "/", "_").Replace(sig)
	if err := VerifyBytes(msg, url, k.Public()); err != nil {
		t.Errorf("URL-safe signature: %v", err)
	}
	if err := VerifyBytes([]byte(`{"a":2}`), sig, k.Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered message: %v", err)
	}
	if err := VerifyBytes(msg, "!!", k.Public()); !errors.Is(err, ErrBadBase64) {
		t.Errorf("bad base64: %v", err)
	}
	if err := VerifyBytes(msg, sig, nil); !errors.Is(err, ErrBadKey) {
		t.Errorf("nil key: %v", err)
	}
}

func TestBase64(t *testing.T) {
	// The spec's unpadded base64 examples.
	for in, want := range map[string]string{
		"": "", "f": "Zg", "fo": "Zm8", "foo": "Zm9v", "foob": "Zm9vYg", "fooba": "Zm9vYmE", "foobar": "Zm9vYmFy",
	} {
		if got := EncodeBase64([]byte(in)); got != want {
			t.Errorf("EncodeBase64(%q) = %q, want %q", in, got, want)
		}
		for _, enc := range []string{want, want + strings.Repeat("=", (4-len(want)%4)%4)} {
			if got, err := DecodeBase64(enc); err != nil || string(got) != in {
				t.Errorf("DecodeBase64(%q) = %q, %v", enc, got, err)
			}
		}
	}
	bin := []byte{0xfb, 0xff, 0xfe, 0x3e, 0x3f}
	if got := EncodeBase64(bin); got != "+//+Pj8" {
		t.Errorf("EncodeBase64 = %s", got)
	}
	if got := EncodeURLBase64(bin); got != "-__-Pj8" {
		t.Errorf("EncodeURLBase64 = %s", got)
	}
	for _, s := range []string{"+//+Pj8", "+//+Pj8=", "-__-Pj8", "-__-Pj8="} {
		if got, err := DecodeBase64(s); err != nil || !bytes.Equal(got, bin) {
			t.Errorf("DecodeBase64(%q) = %x, %v", s, got, err)
		}
	}
	for _, s := range []string{"+/_-Pj8", "Zg=", "Zg===", "Z", "Zm9v\nYg", "Zm9v Yg", "Zm9v!", "=", "===="} {
		if got, err := DecodeBase64(s); !errors.Is(err, ErrBadBase64) {
			t.Errorf("DecodeBase64(%q) = %x, %v, want ErrBadBase64", s, got, err)
		}
	}
}

func TestGenerateKey(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		k, err := GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		version, ok := strings.CutPrefix(k.ID, "ed25519:")
		if !ok || len(version) != 6 || checkVersion(version) != nil {
			t.Fatalf("key id %q", k.ID)
		}
		seen[k.ID] = true
		if len(k.Private) != ed25519.PrivateKeySize {
			t.Fatalf("private key is %d bytes", len(k.Private))
		}
	}
	if len(seen) < 49 {
		t.Errorf("only %d distinct key ids in 50", len(seen))
	}
}

func TestKeyFile(t *testing.T) {
	k := specKey(t)
	file := k.MarshalKeyFile()
	if want := "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0\n"; string(file) != want {
		t.Errorf("MarshalKeyFile = %q, want %q", file, want)
	}
	for _, f := range []string{string(file), "ed25519 1 " + specSeed, "\n  ed25519\t1  " + specSeed + "=  \r\n\n"} {
		got, err := ParseKeyFile([]byte(f))
		if err != nil {
			t.Fatalf("ParseKeyFile(%q): %v", f, err)
		}
		if got.ID != k.ID || !got.Private.Equal(k.Private) {
			t.Errorf("ParseKeyFile(%q) = %s, different key", f, got.ID)
		}
	}
	gen, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseKeyFile(gen.MarshalKeyFile())
	if err != nil || back.ID != gen.ID || !back.Private.Equal(gen.Private) {
		t.Errorf("round trip of %s: %s, %v", gen.ID, back.ID, err)
	}
	for _, bad := range []string{
		"",
		"\n\n",
		"ed25519 1",
		"ed25519 1 " + specSeed + " extra",
		"rsa 1 " + specSeed,
		"ed25519 a:b " + specSeed,
		"ed25519 1 Zm9v",
		"ed25519 1 not-base64!",
		"ed25519 1 " + specSeed + "\ned25519 2 " + specSeed,
	} {
		if _, err := ParseKeyFile([]byte(bad)); err == nil {
			t.Errorf("ParseKeyFile(%q) accepted", bad)
		}
	}
}

func TestNewKey(t *testing.T) {
	seed := make([]byte, 32)
	if _, err := NewKey("ed25519:ok_1", seed); err != nil {
		t.Error(err)
	}
	for _, tc := range []struct {
		id   string
		seed []byte
	}{
		{"ed25519:ok", seed[:31]},
		{"ed25519", seed},
		{"ed25519:", seed},
		{"ed25519:a b", seed},
		{"curve25519:a", seed},
	} {
		if _, err := NewKey(tc.id, tc.seed); !errors.Is(err, ErrBadKey) {
			t.Errorf("NewKey(%q, %d bytes) = %v, want ErrBadKey", tc.id, len(tc.seed), err)
		}
	}
}
