package community

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestActivitySummaries(t *testing.T) {
	for _, tc := range []struct {
		flavour, event, body string
		kind, summary, url   string // kind "": nothing shown
	}{
		{"github", "push", `{"ref":"refs/heads/dev","compare":"C","pusher":{"name":"ann"},"commits":[{"message":"a"},{"message":"Second\n\nbody"}]}`,
			"push", "ann pushed 2 commits to dev: Second", "C"},
		{"github", "push", `{"ref":"refs/heads/gone","commits":[]}`, "", "", ""},
		{"github", "issues", `{"action":"closed","sender":{"login":"bo"},"issue":{"number":3,"title":"T","html_url":"U"}}`,
			"issue", "bo closed issue #3: T", "U"},
		{"github", "issues", `{"action":"labeled","sender":{"login":"bo"},"issue":{"number":3,"title":"T"}}`, "", "", ""},
		{"github", "pull_request", `{"action":"closed","sender":{"login":"bo"},"pull_request":{"number":9,"title":"P","html_url":"U","merged":true}}`,
			"pull_request", "bo merged pull request #9: P", "U"},
		{"github", "release", `{"action":"published","sender":{"login":"bo"},"release":{"tag_name":"v1","name":"One","html_url":"U"}}`,
			"release", "bo published release v1 (One)", "U"},
		{"github", "issue_comment", `{"action":"created","sender":{"login":"bo"},"issue":{"number":4,"title":"T","pull_request":{}},"comment":{"html_url":"U"}}`,
			"comment", "bo commented on pull request #4: T", "U"},
		{"github", "ping", `{"zen":"x"}`, "", "", ""},
		{"gitlab", "Push Hook", `{"ref":"refs/heads/main","user_username":"gl","total_commits_count":1,"commits":[{"message":"Fix","url":"U"}]}`,
			"push", "gl pushed 1 commit to main: Fix", "U"},
		{"gitlab", "Issue Hook", `{"user":{"username":"gl"},"object_attributes":{"iid":5,"title":"T","action":"reopen","url":"U"}}`,
			"issue", "gl reopened issue #5: T", "U"},
		{"gitlab", "Issue Hook", `{"user":{"username":"gl"},"object_attributes":{"iid":5,"title":"T","action":"update"}}`, "", "", ""},
		{"gitlab", "Release Hook", `{"action":"create","tag":"v2","name":"v2","url":"U"}`, "release", "Release v2 published", "U"},
		{"gitlab", "Note Hook", `{"user":{"username":"gl"},"object_attributes":{"noteable_type":"MergeRequest","url":"U"},"merge_request":{"iid":8,"title":"M"}}`,
			"comment", "gl commented on merge request !8: M", "U"},
	} {
		var p payload
		if err := json.Unmarshal([]byte(tc.body), &p); err != nil {
			t.Fatalf("%s %s: %v", tc.flavour, tc.event, err)
		}
		var got *activity
		if tc.flavour == "github" {
			got = githubActivity(tc.event, &p)
		} else {
			got = gitlabActivity(tc.event, &p)
		}
		switch {
		case tc.kind == "" && got != nil:
			t.Errorf("%s %s: shown as %+v", tc.flavour, tc.event, got)
		case tc.kind != "" && (got == nil || got.kind != tc.kind || got.summary != tc.summary || got.url != tc.url):
			t.Errorf("%s %s: %+v, want %s %q %s", tc.flavour, tc.event, got, tc.kind, tc.summary, tc.url)
		}
	}
	long := truncate(strings.Repeat("é", 200), 51)
	if len(long) > 51+len("…") || !strings.HasSuffix(long, "…") || strings.ContainsRune(long, '\uFFFD') {
		t.Errorf("truncate: %q", long)
	}
}
