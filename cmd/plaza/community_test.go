package main

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateCommunity(t *testing.T) {
	for _, tc := range []struct {
		forge, githubID, gitlabID string
		problem                   string // "" when valid
	}{
		{forge: ""},
		{forge: "off"},
		{forge: "github", githubID: "id"},
		{forge: "gitlab", gitlabID: "id"},
		{forge: "github", problem: "needs GitHub sign-in"},
		{forge: "gitlab", githubID: "id", problem: "needs GitLab sign-in"},
		{forge: "gitea", problem: "must be github, gitlab, off or empty"},
	} {
		c := Config{Community: communityConfig{Forge: tc.forge}}
		c.SSO.GitHubClientID, c.SSO.GitLabClientID = tc.githubID, tc.gitlabID
		var key string
		err := c.validateCommunity(func(k, value, problem string) error {
			key = k
			return errors.New(problem)
		})
		switch {
		case tc.problem == "" && err != nil:
			t.Errorf("%+v: %v", tc, err)
		case tc.problem != "" && (err == nil || !strings.Contains(err.Error(), tc.problem) || key != "community_forge"):
			t.Errorf("%+v: %v (key %q), want %q", tc, err, key, tc.problem)
		}
	}
}
