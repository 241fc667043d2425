package community

import (
	"encoding/json"
	"fmt"
	"strings"
)

// activity is one thing that happened on the forge, as a room shows it.
type activity struct {
	kind    string // push, issue, pull_request, release, comment
	actor   string
	summary string
	url     string
}

// payload holds the fields Plaza reads from GitHub's and GitLab's webhook
// deliveries (the two share some names; each reads its own).
type payload struct {
	Action  string `json:"action"`
	Ref     string `json:"ref"`
	Compare string `json:"compare"`
	Commits []struct {
		Message string `json:"message"`
		URL     string `json:"url"`
	} `json:"commits"`
	Pusher struct {
		Name string `json:"name"`
	} `json:"pusher"`
	Sender struct {
		Login string `json:"login"`
	} `json:"sender"`
	Repository struct {
		ID       json.Number `json:"id"`
		FullName string      `json:"full_name"`
		HTMLURL  string      `json:"html_url"`
		Private  *bool       `json:"private"`
	} `json:"repository"`
	Issue       *issueish `json:"issue"`
	PullRequest *issueish `json:"pull_request"`
	Release     *struct {
		TagName string `json:"tag_name"`
		Name    string `json:"name"`
		HTMLURL string `json:"html_url"`
	} `json:"release"`
	Comment *struct {
		HTMLURL string `json:"html_url"`
	} `json:"comment"`

	// GitLab.
	ObjectKind        string `json:"object_kind"`
	UserUsername      string `json:"user_username"`
	TotalCommitsCount int    `json:"total_commits_count"`
	User              *struct {
		Username string `json:"username"`
	} `json:"user"`
	ProjectID int64 `json:"project_id"`
	Project   *struct {
		ID     int64  `json:"id"`
		WebURL string `json:"web_url"`
	} `json:"project"`
	ObjectAttributes *struct {
		IID          int64  `json:"iid"`
		Title        string `json:"title"`
		Action       string `json:"action"`
		URL          string `json:"url"`
		NoteableType string `json:"noteable_type"`
	} `json:"object_attributes"`
	MergeRequest *issueish `json:"merge_request"`
	Tag          string    `json:"tag"`
	Name         string    `json:"name"`
	URL          string    `json:"url"`
}

type issueish struct {
	Number      int64           `json:"number"`
	IID         int64           `json:"iid"`
	Title       string          `json:"title"`
	HTMLURL     string          `json:"html_url"`
	Merged      bool            `json:"merged"`
	PullRequest json.RawMessage `json:"pull_request"` // GitHub: set when the issue is a pull request
}

// repoID is the forge's id of the repository the delivery is about, 0 if
// it does not say.
func (p *payload) repoID() int64 {
	if id, err := p.Repository.ID.Int64(); err == nil && id != 0 {
		return id
	}
	if p.Project != nil && p.Project.ID != 0 {
		return p.Project.ID
	}
	return p.ProjectID
}

// firstLine is a commit message's subject.
func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(line)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// pushSummary words a push of n commits to ref.
func pushSummary(actor, ref string, n int, first string) string {
	branch := strings.TrimPrefix(strings.TrimPrefix(ref, "refs/heads/"), "refs/tags/")
	s := fmt.Sprintf("%s pushed %s to %s", actor, plural(n, "commit", "commits"), branch)
	if first != "" {
		s += ": " + first
	}
	return s
}

// githubActivity reads a GitHub delivery; nil for events rooms do not show.
func githubActivity(event string, p *payload) *activity {
	actor := p.Sender.Login
	switch event {
	case "push":
		if len(p.Commits) == 0 {
			return nil // branch deletions and tag pushes without commits
		}
		if p.Pusher.Name != "" {
			actor = p.Pusher.Name
		}
		return &activity{kind: "push", actor: actor, url: p.Compare,
			summary: pushSummary(actor, p.Ref, len(p.Commits), firstLine(p.Commits[len(p.Commits)-1].Message))}
	case "issues":
		if p.Issue == nil || !shownAction(p.Action) {
			return nil
		}
		return &activity{kind: "issue", actor: actor, url: p.Issue.HTMLURL,
			summary: fmt.Sprintf("%s %s issue #%d: %s", actor, p.Action, p.Issue.Number, p.Issue.Title)}
	case "pull_request":
		if p.PullRequest == nil || !shownAction(p.Action) {
			return nil
		}
		action := p.Action
		if action == "closed" && p.PullRequest.Merged {
			action = "merged"
		}
		return &activity{kind: "pull_request", actor: actor, url: p.PullRequest.HTMLURL,
			summary: fmt.Sprintf("%s %s pull request #%d: %s", actor, action, p.PullRequest.Number, p.PullRequest.Title)}
	case "release":
		if p.Release == nil || p.Action != "published" {
			return nil
		}
		name := p.Release.TagName
		if p.Release.Name != "" && p.Release.Name != name {
			name += " (" + p.Release.Name + ")"
		}
		return &activity{kind: "release", actor: actor, url: p.Release.HTMLURL,
			summary: fmt.Sprintf("%s published release %s", actor, name)}
	case "issue_comment", "pull_request_review_comment", "commit_comment":
		if p.Comment == nil || p.Action != "created" {
			return nil
		}
		on := "a commit"
		switch {
		case p.Issue != nil && len(p.Issue.PullRequest) > 0:
			on = fmt.Sprintf("pull request #%d: %s", p.Issue.Number, p.Issue.Title)
		case p.Issue != nil:
			on = fmt.Sprintf("issue #%d: %s", p.Issue.Number, p.Issue.Title)
		case p.PullRequest != nil:
			on = fmt.Sprintf("pull request #%d: %s", p.PullRequest.Number, p.PullRequest.Title)
		}
		return &activity{kind: "comment", actor: actor, url: p.Comment.HTMLURL, summary: fmt.Sprintf("%s commented on %s", actor, on)}
	}
	return nil
}

// shownAction: opening, closing and reopening are news; labels and
// assignments are not.
func shownAction(a string) bool { return a == "opened" || a == "closed" || a == "reopened" }

// gitlabActivity reads a GitLab delivery (X-Gitlab-Event); nil for events
// rooms do not show.
func gitlabActivity(event string, p *payload) *activity {
	actor := p.UserUsername
	if p.User != nil && p.User.Username != "" {
		actor = p.User.Username
	}
	oa := p.ObjectAttributes
	verbs := map[string]string{"open": "opened", "close": "closed", "reopen": "reopened", "merge": "merged"}
	switch event {
	case "Push Hook":
		if p.TotalCommitsCount == 0 || len(p.Commits) == 0 {
			return nil
		}
		url := ""
		if p.Project != nil {
			url = p.Project.WebURL
		}
		last := p.Commits[len(p.Commits)-1]
		if last.URL != "" {
			url = last.URL
		}
		return &activity{kind: "push", actor: actor, url: url,
			summary: pushSummary(actor, p.Ref, p.TotalCommitsCount, firstLine(last.Message))}
	case "Issue Hook", "Merge Request Hook":
		if oa == nil || verbs[oa.Action] == "" {
			return nil
		}
		kind, what, sigil := "issue", "issue", "#"
		if event == "Merge Request Hook" {
			kind, what, sigil = "pull_request", "merge request", "!"
		}
		return &activity{kind: kind, actor: actor, url: oa.URL,
			summary: fmt.Sprintf("%s %s %s %s%d: %s", actor, verbs[oa.Action], what, sigil, oa.IID, oa.Title)}
	case "Release Hook":
		if p.Action != "create" {
			return nil
		}
		name := p.Tag
		if p.Name != "" && p.Name != name {
			name += " (" + p.Name + ")"
		}
		summary := fmt.Sprintf("%s published release %s", actor, name)
		if actor == "" {
			summary = "Release " + name + " published" // GitLab's release hook names no user
		}
		return &activity{kind: "release", actor: actor, url: p.URL, summary: summary}
	case "Note Hook":
		if oa == nil {
			return nil
		}
		on := "a commit"
		switch {
		case oa.NoteableType == "Issue" && p.Issue != nil:
			on = fmt.Sprintf("issue #%d: %s", p.Issue.IID, p.Issue.Title)
		case oa.NoteableType == "MergeRequest" && p.MergeRequest != nil:
			on = fmt.Sprintf("merge request !%d: %s", p.MergeRequest.IID, p.MergeRequest.Title)
		case oa.NoteableType == "Snippet":
			on = "a snippet"
		}
		return &activity{kind: "comment", actor: actor, url: oa.URL, summary: fmt.Sprintf("%s commented on %s", actor, on)}
	}
	return nil
}
