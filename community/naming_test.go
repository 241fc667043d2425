package community

import (
	"testing"

	"plaza/community/forge"
)

func TestAliasMapping(t *testing.T) {
	for _, tc := range []struct {
		flavour, path, local string
	}{
		{forge.GitHub, "acme", "acme"},
		{forge.GitHub, "Acme/Widget", "acme_widget"},
		{forge.GitHub, "acme/my_widget", "acme_my_widget"},
		{forge.GitHub, "acme/.dotfiles", "acme_.dotfiles"},
		{forge.GitLab, "group/sub/project", "group_sub_project"},
		{forge.GitLab, "my_group/proj", "my=5fgroup_proj"},
		{forge.GitLab, "a_/b", "a=5f_b"},
		{forge.GitLab, "a/_b", "a_=5fb"},
	} {
		if got := aliasLocalpart(tc.flavour, tc.path); got != tc.local {
			t.Errorf("%s %s → %s, want %s", tc.flavour, tc.path, got, tc.local)
		}
		back, ok := pathOfLocalpart(tc.flavour, tc.local)
		if !ok || back != toLower(tc.path) {
			t.Errorf("%s %s ← %q %v, want %s", tc.flavour, tc.local, back, ok, tc.path)
		}
	}
	// Escapes decode anywhere; nothing else odd is accepted.
	if p, ok := pathOfLocalpart(forge.GitHub, "acme_my=5fwidget"); !ok || p != "acme/my_widget" {
		t.Errorf("escaped GitHub alias: %q %v", p, ok)
	}
	for _, bad := range []string{"", "acme_", "_widget", "a=zz", "a=5", "a=2fb_c", "a b", "a__b"} {
		if p, ok := pathOfLocalpart(forge.GitLab, bad); ok {
			t.Errorf("GitLab %q → %q, want refused", bad, p)
		}
	}
	if p, ok := pathOfLocalpart(forge.GitHub, "a_b_c"); !ok || p != "a/b_c" {
		t.Errorf("GitHub a_b_c → %q %v", p, ok)
	}
}

func toLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}
