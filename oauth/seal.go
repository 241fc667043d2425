package oauth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// sealer encrypts forge access tokens at rest with AES-256-GCM. Its key
// lives in the data directory, not in the database, so a stolen database
// dump alone gives no access to anyone's forge account.
type sealer struct {
	aead cipher.AEAD
}

const sealKeySize = 32

// loadOrCreateSealer reads the key, creating it on first start.
func loadOrCreateSealer(path string) (*sealer, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, sealKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("oauth: generating the token key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("oauth: creating the data directory: %w", err)
		}
		// O_EXCL: if another process created the key meanwhile, use theirs.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return loadOrCreateSealer(path)
		}
		if err != nil {
			return nil, fmt.Errorf("oauth: writing the token key: %w", err)
		}
		_, werr := f.Write(key)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, fmt.Errorf("oauth: writing the token key: %w", werr)
		}
	} else if err != nil {
		return nil, fmt.Errorf("oauth: reading the token key: %w", err)
	}
	if len(key) != sealKeySize {
		return nil, fmt.Errorf("oauth: the token key %s is %d bytes, not %d", path, len(key), sealKeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

// seal encrypts plaintext; context (the identity it belongs to) is
// authenticated too, so a sealed token copied onto another row fails to open.
func (s *sealer) seal(plaintext []byte, context string) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return s.aead.Seal(nonce, nonce, plaintext, []byte(context))
}

// open decrypts what seal produced.
func (s *sealer) open(sealed []byte, context string) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("oauth: sealed token too short")
	}
	return s.aead.Open(nil, sealed[:n], sealed[n:], []byte(context))
}
