package password

import (
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestHashAndCheck(t *testing.T) {
	long := strings.Repeat("a", 100)
	for _, pw := range []string{"", "secret", "ünïcødé", long} {
		h, err := Hash(pw, bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		if !Check(h, pw) {
			t.Errorf("Check(Hash(%q)) = false", pw)
		}
		if Check(h, pw+"x") {
			t.Errorf("a different password matched %q", pw)
		}
	}
	// Past bcrypt's 72 bytes, the tail still counts.
	h, _ := Hash(long, bcrypt.MinCost)
	if Check(h, long[:72]+strings.Repeat("b", 28)) {
		t.Fatal("passwords differing after 72 bytes matched")
	}
	if _, err := Hash(strings.Repeat("x", MaxLength+1), bcrypt.MinCost); err != ErrTooLong {
		t.Fatalf("over-long password: %v", err)
	}
	legacy, _ := bcrypt.GenerateFromPassword([]byte("old"), bcrypt.MinCost)
	if !Check(string(legacy), "old") || Check(string(legacy), "new") {
		t.Fatal("plain bcrypt hashes are not checked correctly")
	}
	if Check("", "") {
		t.Fatal("an empty hash matched")
	}
}
