package oauth

import (
	"fmt"
	"strconv"
	"strings"
)

// maxLocalpart keeps user IDs well under the spec's 255 bytes whatever the
// server name; forge logins are far shorter (GitHub: 39 characters).
const maxLocalpart = 100

// mapLocalpart turns a forge login into a localpart with the spec's
// suggested mapping (appendices, "Mapping from other character sets"):
// A-Z become lower case, and any other byte outside a-z 0-9 . _ - / + (and
// '=' itself) becomes =xx, its hex value. Forge logins are case-insensitive,
// so case need not be kept apart with the '_' escape.
func mapLocalpart(login string) string {
	var b strings.Builder
	for i := 0; i < len(login); i++ {
		c := login[i]
		switch {
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', strings.IndexByte("._-/+", c) >= 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "=%02x", c)
		}
	}
	out := b.String()
	if len(out) > maxLocalpart {
		out = out[:maxLocalpart]
	}
	return out
}

// localpartCandidate is the n-th localpart (from 0) to try for a new
// account whose forge login is login, on the forge with this suffix:
//
//	alice, alice-gh, alice-gh-2, alice-gh-3, …   (GitHub)
//	alice, alice-gl, alice-gl-2, …               (GitLab)
//
// The plain login goes to whoever signs in first; the forge suffix then
// keeps the same login on GitHub and on GitLab apart (two people, until one
// links the other's forge), and numbers settle the rare remaining clashes
// (a password account named alice-gh, a renamed forge login reused).
func localpartCandidate(login, suffix string, n int) string {
	base := mapLocalpart(login)
	switch n {
	case 0:
		return base
	case 1:
		return base + "-" + suffix
	default:
		return base + "-" + suffix + "-" + strconv.Itoa(n)
	}
}
