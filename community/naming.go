package community

import (
	"strings"

	"plaza/community/forge"
)

// Names. A forge path maps to an alias localpart and back:
//
//	GitHub  acme            → #acme            (the owner's space)
//	GitHub  acme/my_widget  → #acme_my_widget  (the repository's room)
//	GitLab  group           → #group
//	GitLab  group/sub/proj  → #group_sub_proj
//	GitLab  my_group/proj   → #my=5fgroup_proj
//
// Everything is lower-cased (both forges compare paths case-insensitively;
// aliases are case-sensitive). '_' separates path segments. A byte that may
// not appear in an alias, and on GitLab an '_' inside a segment, is written
// =xx (two lower-case hex digits), as the spec maps user IDs from other
// character sets. GitHub needs no escaping of '_': owners (logins) never
// contain one, so the first '_' always ends the owner and the rest is the
// repository name, which may. Decoding accepts =xx everywhere, so
// #acme_my=5fwidget names the same room as #acme_my_widget.

// aliasLocalpart maps a forge path to its alias localpart.
func aliasLocalpart(flavour, path string) string {
	segs := strings.Split(strings.ToLower(path), "/")
	var b strings.Builder
	for i, seg := range segs {
		if i > 0 {
			b.WriteByte('_')
		}
		// On GitHub the repository segment keeps its underscores.
		keepUnderscore := flavour == forge.GitHub && i > 0
		for j := 0; j < len(seg); j++ {
			c := seg[j]
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.':
				b.WriteByte(c)
			case c == '_' && keepUnderscore:
				b.WriteByte(c)
			default:
				const hex = "0123456789abcdef"
				b.WriteByte('=')
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&15])
			}
		}
	}
	return b.String()
}

// pathOfLocalpart maps an alias localpart back to a forge path (lower
// case), or reports that it names no forge path.
func pathOfLocalpart(flavour, local string) (string, bool) {
	if local == "" {
		return "", false
	}
	var raw []string
	if flavour == forge.GitHub {
		owner, repo, found := strings.Cut(local, "_")
		raw = []string{owner}
		if found {
			raw = append(raw, repo)
		}
	} else {
		raw = strings.Split(local, "_")
	}
	segs := make([]string, len(raw))
	for i, s := range raw {
		seg, ok := unescape(s)
		if !ok || seg == "" || strings.Contains(seg, "/") {
			return "", false
		}
		segs[i] = seg
	}
	return strings.Join(segs, "/"), validPath(flavour, strings.Join(segs, "/"))
}

// unescape decodes =xx sequences and lower-cases; it refuses anything else
// an encoder would not produce.
func unescape(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '=':
			if i+2 >= len(s) {
				return "", false
			}
			hi, ok1 := fromHex(s[i+1])
			lo, ok2 := fromHex(s[i+2])
			if !ok1 || !ok2 {
				return "", false
			}
			b.WriteByte(hi<<4 | lo)
			i += 2
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
			b.WriteByte(c)
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A') // #Acme_Widget finds #acme_widget's room
		default:
			return "", false
		}
	}
	return b.String(), true
}

func fromHex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// validPath checks a forge path's shape: GitHub owner or owner/repo;
// GitLab any depth. Segments use the characters both forges allow.
func validPath(flavour, path string) bool {
	segs := strings.Split(path, "/")
	if len(segs) == 0 || len(path) > 512 || (flavour == forge.GitHub && len(segs) > 2) {
		return false
	}
	for i, seg := range segs {
		if seg == "" || seg == "." || seg == ".." || len(seg) > 255 {
			return false
		}
		for j := 0; j < len(seg); j++ {
			c := seg[j]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_'
			if !ok || (c == '_' && flavour == forge.GitHub && i == 0) {
				return false
			}
		}
	}
	return true
}
