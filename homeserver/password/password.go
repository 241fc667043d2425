// Package password owns how account passwords are hashed and checked.
//
// Hashes are bcrypt of the password's SHA-256 (base64), marked with a "$p1$"
// prefix: bcrypt alone ignores everything past 72 bytes, which would make a
// long passphrase only as strong as its first 72 bytes. The prefix leaves
// room to change the scheme later and still verify old hashes.
package password

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// DefaultCost is bcrypt's work factor for new hashes.
const DefaultCost = 12

// MaxLength bounds passwords: hashing is costly and nobody needs more.
const MaxLength = 512

const prefix = "$p1$"

// ErrTooLong is returned for passwords over MaxLength bytes.
var ErrTooLong = errors.New("password is longer than 512 bytes")

func prehash(pw string) []byte {
	sum := sha256.Sum256([]byte(pw))
	return []byte(base64.StdEncoding.EncodeToString(sum[:]))
}

// Hash hashes a password with the given bcrypt cost (0 for DefaultCost).
func Hash(pw string, cost int) (string, error) {
	if len(pw) > MaxLength {
		return "", ErrTooLong
	}
	if cost == 0 {
		cost = DefaultCost
	}
	h, err := bcrypt.GenerateFromPassword(prehash(pw), cost)
	if err != nil {
		return "", err
	}
	return prefix + string(h), nil
}

// Check reports whether pw matches hash. Plain bcrypt hashes (without the
// prefix) are accepted too.
func Check(hash, pw string) bool {
	if hash == "" || len(pw) > MaxLength {
		return false
	}
	if rest, ok := strings.CutPrefix(hash, prefix); ok {
		return bcrypt.CompareHashAndPassword([]byte(rest), prehash(pw)) == nil
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) == nil
}
