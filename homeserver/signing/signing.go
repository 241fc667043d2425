// Package signing owns a server's ed25519 signing keys and Matrix JSON
// signatures (appendices, "Signing JSON"): generating and storing keys,
// unpadded base64, and signing and verifying JSON objects. Event hashing and
// redaction build on SignBytes and VerifyBytes and live elsewhere.
package signing

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"plaza/homeserver/canonicaljson"
)

// Algorithm is the only signing algorithm Matrix defines.
const Algorithm = "ed25519"

var (
	// ErrMissingSignature means the object carries no signature by the
	// given server with the given key.
	ErrMissingSignature = errors.New("signing: missing signature")
	// ErrBadBase64 means the signature (or any input to DecodeBase64) is
	// not base64.
	ErrBadBase64 = errors.New("signing: invalid base64")
	// ErrBadSignature means the signature does not verify.
	ErrBadSignature = errors.New("signing: bad signature")
	// ErrBadKey means a key is malformed: wrong length, or an ID that is
	// not "ed25519:" followed by [a-zA-Z0-9_] characters.
	ErrBadKey = errors.New("signing: malformed key")
)

// Key is a server's ed25519 signing key with its key ID.
type Key struct {
	ID      string // "ed25519:" + version, e.g. "ed25519:a_AbCd"
	Private ed25519.PrivateKey
}

// Public returns the verification key that goes with k.
func (k Key) Public() ed25519.PublicKey {
	return k.Private.Public().(ed25519.PublicKey)
}

// NewKey makes a Key from its ID and 32-byte seed, checking both.
func NewKey(id string, seed []byte) (Key, error) {
	if err := checkKeyID(id); err != nil {
		return Key{}, err
	}
	if len(seed) != ed25519.SeedSize {
		return Key{}, fmt.Errorf("%w: seed is %d bytes, want %d", ErrBadKey, len(seed), ed25519.SeedSize)
	}
	return Key{ID: id, Private: ed25519.NewKeyFromSeed(seed)}, nil
}

// versionChars are the characters the spec allows in a key's version.
const versionChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"

func checkVersion(v string) error {
	if v == "" {
		return fmt.Errorf("%w: empty key version", ErrBadKey)
	}
	for i := 0; i < len(v); i++ {
		if strings.IndexByte(versionChars, v[i]) < 0 {
			return fmt.Errorf("%w: key version %q has characters outside [a-zA-Z0-9_]", ErrBadKey, v)
		}
	}
	return nil
}

func checkKeyID(id string) error {
	version, ok := strings.CutPrefix(id, Algorithm+":")
	if !ok {
		return fmt.Errorf("%w: key id %q does not start with %q", ErrBadKey, id, Algorithm+":")
	}
	return checkVersion(version)
}

// GenerateKey returns a new random key whose ID is "ed25519:" followed by six
// random characters from [a-zA-Z0-9_], so that a replacement key never
// collides with an old one that other servers still cache.
func GenerateKey() (Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, fmt.Errorf("signing: generating key: %w", err)
	}
	version := make([]byte, 0, 6)
	var b [16]byte
	for len(version) < cap(version) {
		if _, err := rand.Read(b[:]); err != nil {
			return Key{}, fmt.Errorf("signing: generating key id: %w", err)
		}
		for _, c := range b {
			// Rejection sampling keeps the choice uniform: 252 is the
			// largest multiple of 63 that fits in a byte.
			if c < 252 && len(version) < cap(version) {
				version = append(version, versionChars[c%63])
			}
		}
	}
	return Key{ID: Algorithm + ":" + string(version), Private: priv}, nil
}

// ParseKeyFile reads a signing key in Synapse's signing key file format, so
// that a server moved from Synapse keeps its identity. The format is one
// line of three fields separated by spaces:
//
//	ed25519 <version> <seed>
//
// where version is the key ID without its "ed25519:" prefix and seed is the
// 32-byte ed25519 seed in unpadded base64. Synapse allows several such
// lines; Plaza signs with a single key, so a file with more than one key is
// rejected rather than silently truncated. Blank lines are ignored.
func ParseKeyFile(data []byte) (Key, error) {
	var found []string
	for line := range strings.Lines(string(data)) {
		if fields := strings.Fields(line); len(fields) > 0 {
			if found != nil {
				return Key{}, errors.New("signing: key file holds more than one key")
			}
			found = fields
		}
	}
	if found == nil {
		return Key{}, errors.New("signing: key file is empty")
	}
	if len(found) != 3 {
		return Key{}, fmt.Errorf("signing: key file line has %d fields, want 3: algorithm, version, seed", len(found))
	}
	if found[0] != Algorithm {
		return Key{}, fmt.Errorf("signing: key file algorithm %q is not %q", found[0], Algorithm)
	}
	if err := checkVersion(found[1]); err != nil {
		return Key{}, err
	}
	seed, err := DecodeBase64(found[2])
	if err != nil {
		return Key{}, fmt.Errorf("key file seed: %w", err)
	}
	return NewKey(Algorithm+":"+found[1], seed)
}

// MarshalKeyFile returns k in the format ParseKeyFile reads, newline
// terminated. k.ID must be "ed25519:<version>", as GenerateKey and
// ParseKeyFile make it.
func (k Key) MarshalKeyFile() []byte {
	version := strings.TrimPrefix(k.ID, Algorithm+":")
	return fmt.Appendf(nil, "%s %s %s\n", Algorithm, version, EncodeBase64(k.Private.Seed()))
}

// EncodeBase64 encodes b as unpadded standard base64, the encoding of keys,
// signatures and hashes in Matrix.
func EncodeBase64(b []byte) string {
	return base64.RawStdEncoding.EncodeToString(b)
}

// EncodeURLBase64 encodes b as unpadded URL-safe base64, as room versions 4
// and later use for event IDs.
func EncodeURLBase64(b []byte) string {
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeBase64 decodes standard or URL-safe base64, padded or not: the spec
// asks implementations to accept both paddings, and event IDs use the
// URL-safe alphabet. Mixing the two alphabets, or whitespace, is an error.
// Non-zero spare bits in the last character are tolerated, as Synapse does:
// the spec's own test seed has them.
func DecodeBase64(s string) ([]byte, error) {
	unpadded := strings.TrimRight(s, "=")
	if pad := len(s) - len(unpadded); pad > 0 && (pad > 2 || len(s)%4 != 0) {
		return nil, fmt.Errorf("%w: %q has bad padding", ErrBadBase64, s)
	}
	enc := base64.RawStdEncoding
	if strings.ContainsAny(unpadded, "-_") {
		enc = base64.RawURLEncoding
	}
	if strings.ContainsAny(unpadded, "\r\n") {
		// encoding/base64 skips newlines; a signature never has any.
		return nil, fmt.Errorf("%w: %q contains a newline", ErrBadBase64, s)
	}
	b, err := enc.DecodeString(unpadded)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadBase64, err)
	}
	return b, nil
}

// SignBytes signs bytes the caller has already made canonical and returns
// the signature in unpadded base64. k must be a valid key (from GenerateKey,
// NewKey or ParseKeyFile): like crypto/ed25519, it panics on a private key of
// the wrong length.
func SignBytes(canonical []byte, k Key) string {
	return EncodeBase64(ed25519.Sign(k.Private, canonical))
}

// VerifyBytes checks an unpadded base64 signature over canonical bytes.
func VerifyBytes(canonical []byte, sigB64 string, pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key is %d bytes, want %d", ErrBadKey, len(pub), ed25519.PublicKeySize)
	}
	sig, err := DecodeBase64(sigB64)
	if err != nil {
		return err
	}
	if !ed25519.Verify(pub, canonical, sig) {
		return ErrBadSignature
	}
	return nil
}

// signedPart returns what a signature covers: the canonical object without
// "signatures" and "unsigned".
func signedPart(canonical []byte) ([]byte, error) {
	return canonicaljson.Delete(canonical, "signatures", "unsigned")
}

func canonicalObject(obj []byte) ([]byte, error) {
	c, err := canonicaljson.Canonicalize(obj)
	if err != nil {
		return nil, err
	}
	if c[0] != '{' {
		return nil, errors.New("signing: JSON to sign is not an object")
	}
	return c, nil
}

// SignJSON signs the JSON object obj as serverName with k and returns it in
// canonical form with the signature added under
// signatures[serverName][k.ID]. Other signatures already present, and the
// unsigned section, are kept (neither is covered by the signature).
func SignJSON(obj []byte, serverName string, k Key) ([]byte, error) {
	if err := checkKeyID(k.ID); err != nil {
		return nil, err
	}
	if len(k.Private) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: private key is %d bytes, want %d", ErrBadKey, len(k.Private), ed25519.PrivateKeySize)
	}
	c, err := canonicalObject(obj)
	if err != nil {
		return nil, err
	}
	signed, err := signedPart(c)
	if err != nil {
		return nil, err
	}
	sig := SignBytes(signed, k)

	sigs, err := member(c, "signatures", []byte("{}"))
	if err != nil {
		return nil, err
	}
	server, err := member(sigs, serverName, []byte("{}"))
	if err != nil {
		return nil, err
	}
	if server, err = canonicaljson.Set(server, k.ID, []byte(`"`+sig+`"`)); err != nil {
		return nil, err
	}
	if sigs, err = canonicaljson.Set(sigs, serverName, server); err != nil {
		return nil, err
	}
	return canonicaljson.Set(c, "signatures", sigs)
}

// member returns the object under key in the canonical object obj, or def
// when there is none.
func member(obj []byte, key string, def []byte) ([]byte, error) {
	v, ok, err := canonicaljson.Get(obj, key)
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return def, nil
	case v[0] != '{':
		return nil, fmt.Errorf("signing: %q is not a JSON object", key)
	}
	return v, nil
}

// VerifyJSON checks that the JSON object obj carries a valid signature by
// serverName with key keyID, made with the private half of pub.
func VerifyJSON(obj []byte, serverName, keyID string, pub ed25519.PublicKey) error {
	c, err := canonicalObject(obj)
	if err != nil {
		return err
	}
	sigs, err := member(c, "signatures", nil)
	if err != nil || sigs == nil {
		return missing(err, serverName, keyID)
	}
	server, err := member(sigs, serverName, nil)
	if err != nil || server == nil {
		return missing(err, serverName, keyID)
	}
	sig, ok, err := canonicaljson.Get(server, keyID)
	if err != nil || !ok {
		return missing(err, serverName, keyID)
	}
	// Base64 never needs escaping, so a canonical string that could be a
	// signature is its contents in quotes.
	if len(sig) < 2 || sig[0] != '"' || bytes.IndexByte(sig, '\\') >= 0 {
		return fmt.Errorf("%w: signature by %s %s is not a base64 string", ErrBadBase64, serverName, keyID)
	}
	signed, err := signedPart(c)
	if err != nil {
		return err
	}
	if err := VerifyBytes(signed, string(sig[1:len(sig)-1]), pub); err != nil {
		return fmt.Errorf("%w (by %s %s)", err, serverName, keyID)
	}
	return nil
}

func missing(err error, serverName, keyID string) error {
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMissingSignature, err)
	}
	return fmt.Errorf("%w by %s with %s", ErrMissingSignature, serverName, keyID)
}
