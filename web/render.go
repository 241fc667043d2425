package web

import (
	"bytes"
	"context"
	"encoding/json"
	"html"
	"regexp"
	"strings"
	"time"

	"github.com/alecthomas/chroma/v2"
	chromahtml "github.com/alecthomas/chroma/v2/formatters/html"
	"github.com/alecthomas/chroma/v2/lexers"
	"github.com/microcosm-cc/bluemonday"

	"plaza/peek/snapshot"
	"plaza/templates"
)

// Message bodies: what Matrix clients send is trusted for nothing.
//
//   - formatted_body (format org.matrix.custom.html) goes through bluemonday
//     with the spec's list of allowed tags and attributes, minus images (their
//     mxc:// sources need authenticated media, which an anonymous reader does
//     not have) and colours; reply fallbacks (<mx-reply>) are dropped whole.
//     Links get rel="nofollow noopener" and open in a new tab.
//   - body alone is plain text: escaped, with http(s) URLs made links and
//     ``` fenced blocks shown as code.
//   - code blocks with a language (<code class="language-go">, ```go) are
//     highlighted on the server by chroma, as classes the tiny stylesheet
//     colours: no script and a few hundred bytes of CSS.
//
// Bodies are rendered once per snapshot (see Service.list), not per viewer.

// renderer turns events into message view models. It is safe for concurrent
// use: the policy and formatter are read-only once built.
type renderer struct {
	policy *bluemonday.Policy
	code   *chromahtml.Formatter
	style  *chroma.Style
}

var (
	// Package-level regexps are immutable once compiled.
	codeBlockRE = regexp.MustCompile(`<pre><code class="language-([A-Za-z0-9_+#-]{1,32})">([\s\S]*?)</code></pre>`)
	urlRE       = regexp.MustCompile(`https?://[^\s<>"'\x60]+`)
	fenceRE     = regexp.MustCompile("(?s)```([A-Za-z0-9_+#-]{0,32})\n(.*?)\n?```")
)

func newRenderer() *renderer {
	p := bluemonday.NewPolicy()
	p.AllowElements("font", "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "ul", "ol",
		"sup", "sub", "li", "b", "i", "u", "strong", "em", "s", "strike", "code", "hr", "br", "div",
		"table", "thead", "tbody", "tr", "th", "td", "caption", "pre", "span", "details", "summary")
	p.AllowAttrs("href").OnElements("a")
	p.AllowURLSchemes("http", "https", "ftp", "mailto", "magnet")
	p.RequireParseableURLs(true)
	p.RequireNoFollowOnLinks(true)
	p.RequireNoReferrerOnLinks(true)
	p.AddTargetBlankToFullyQualifiedLinks(true)
	p.AllowAttrs("start").Matching(regexp.MustCompile(`^[0-9]{1,6}$`)).OnElements("ol")
	p.AllowAttrs("class").Matching(regexp.MustCompile(`^language-[A-Za-z0-9_+#-]{1,32}$`)).OnElements("code")
	p.AllowAttrs("data-mx-spoiler").OnElements("span")
	p.SkipElementsContent("mx-reply", "script", "style")
	return &renderer{
		policy: p,
		code:   chromahtml.New(chromahtml.WithClasses(true), chromahtml.PreventSurroundingPre(true)),
		style:  chroma.MustNewStyle("plaza", chroma.StyleEntries{}),
	}
}

// content is the part of a message's content the page shows.
type content struct {
	MsgType       string     `json:"msgtype"`
	Body          string     `json:"body"`
	Format        string     `json:"format"`
	FormattedBody string     `json:"formatted_body"`
	NewContent    *content   `json:"m.new_content"`
	RelatesTo     *relatesTo `json:"m.relates_to"`
}

type relatesTo struct {
	RelType string `json:"rel_type"`
	EventID string `json:"event_id"`
}

func parseContent(b []byte) content {
	var c content
	_ = json.Unmarshal(b, &c) // a malformed body shows as an empty message
	return c
}

// relation returns the relation type and target of an event's content.
func (c *content) relation() (string, string) {
	if c.RelatesTo == nil {
		return "", ""
	}
	return c.RelatesTo.RelType, c.RelatesTo.EventID
}

// body renders a message's content as sanitised HTML.
func (r *renderer) body(c *content) string {
	switch c.MsgType {
	case "m.image", "m.file", "m.video", "m.audio":
		return `<span class="file">` + html.EscapeString(kindName(c.MsgType)+": "+c.Body) + `</span>`
	}
	if c.Format == "org.matrix.custom.html" && c.FormattedBody != "" {
		return r.highlightBlocks(r.policy.Sanitize(c.FormattedBody))
	}
	return r.plain(c.Body)
}

func kindName(msgtype string) string {
	switch msgtype {
	case "m.image":
		return "Image"
	case "m.video":
		return "Video"
	case "m.audio":
		return "Audio"
	}
	return "File"
}

// plain renders a plain-text body: escaped, linkified, fenced code shown as
// code.
func (r *renderer) plain(body string) string {
	var b strings.Builder
	rest := body
	for {
		loc := fenceRE.FindStringSubmatchIndex(rest)
		if loc == nil {
			break
		}
		r.text(&b, rest[:loc[0]])
		lang, code := rest[loc[2]:loc[3]], rest[loc[4]:loc[5]]
		b.WriteString(r.codeBlock(lang, code))
		rest = rest[loc[1]:]
	}
	r.text(&b, rest)
	return b.String()
}

// text writes escaped text with its URLs as links and line breaks kept.
func (r *renderer) text(b *strings.Builder, s string) {
	last := 0
	for _, m := range urlRE.FindAllStringIndex(s, -1) {
		u := strings.TrimRight(s[m[0]:m[1]], ".,;:!?)]}")
		end := m[0] + len(u)
		writeLines(b, s[last:m[0]])
		b.WriteString(`<a href="`)
		b.WriteString(html.EscapeString(u))
		b.WriteString(`" rel="nofollow noreferrer noopener" target="_blank">`)
		b.WriteString(html.EscapeString(u))
		b.WriteString(`</a>`)
		last = end
	}
	writeLines(b, s[last:])
}

func writeLines(b *strings.Builder, s string) {
	for i, line := range strings.Split(s, "\n") {
		if i > 0 {
			b.WriteString("<br>")
		}
		b.WriteString(html.EscapeString(line))
	}
}

// highlightBlocks highlights the sanitiser's output's code blocks that name
// a language. The sanitiser escaped their text; it is unescaped for the
// lexer, whose output escapes it again.
func (r *renderer) highlightBlocks(s string) string {
	if !strings.Contains(s, `<code class="language-`) {
		return s
	}
	return codeBlockRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := codeBlockRE.FindStringSubmatch(m)
		return r.codeBlock(sub[1], html.UnescapeString(sub[2]))
	})
}

// codeBlock renders code, highlighted when its language is known.
func (r *renderer) codeBlock(lang, code string) string {
	var lexer chroma.Lexer
	if lang != "" {
		lexer = lexers.Get(lang)
	}
	if lexer == nil {
		return "<pre><code>" + html.EscapeString(code) + "</code></pre>"
	}
	it, err := chroma.Coalesce(lexer).Tokenise(nil, code)
	if err != nil {
		return "<pre><code>" + html.EscapeString(code) + "</code></pre>"
	}
	var b bytes.Buffer
	b.WriteString(`<pre class="chroma"><code>`)
	if err := r.code.Format(&b, r.style, it); err != nil {
		return "<pre><code>" + html.EscapeString(code) + "</code></pre>"
	}
	b.WriteString("</code></pre>")
	return b.String()
}

// shown classifies a timeline event for the page.
type shown int

const (
	hidden   shown = iota // state, reactions, redactions, ...
	message               // a message in the main timeline
	reply                 // a thread reply (its root is thread)
	edit                  // an m.replace edit (applied to its target)
	redactor              // a redaction (applied to its target)
)

// classify says how the page shows ev, and which event it relates to (the
// thread root, the edit's or redaction's target).
func classify(ev *snapshot.Event, c *content) (shown, string) {
	e := ev.Event
	if e.StateKey() != nil {
		return hidden, ""
	}
	switch e.Type() {
	case "m.room.redaction":
		return redactor, e.Redacts()
	case "m.room.message", "m.room.encrypted":
	default:
		return hidden, ""
	}
	switch rel, target := c.relation(); rel {
	case "m.replace":
		return edit, target
	case "m.thread":
		return reply, target
	}
	return message, ""
}

// messages builds the view models of a run of timeline events, oldest first:
// edits and redactions in the run are applied to their targets, thread
// replies are folded under their roots when the root is in the run.
func (r *renderer) messages(evs []*snapshot.Event, name func(string) string) []templates.Message {
	contents := make([]content, len(evs))
	edits := map[string]*edited{}
	redacted := map[string]bool{}
	for i, ev := range evs {
		contents[i] = parseContent(ev.Event.Content())
		switch kind, target := classify(ev, &contents[i]); kind {
		case edit:
			if !ev.Redacted {
				edits[target] = &edited{ev, &contents[i]}
			}
		case redactor:
			redacted[target] = true
		}
	}
	var out []templates.Message
	roots := map[string]int{} // event ID -> index in out
	for i, ev := range evs {
		kind, target := classify(ev, &contents[i])
		if kind != message && kind != reply {
			continue
		}
		c := &contents[i]
		var ed *edited
		if ev.Edit != nil {
			ec := parseContent(ev.Edit.Content())
			ed = &edited{nil, &ec}
		} else if e := edits[ev.Event.ID()]; e != nil && e.ev.Sender == ev.Sender {
			ed = e
		}
		m := r.message(ev, c, ed, ev.Redacted || redacted[ev.Event.ID()], name)
		if kind == reply {
			if j, ok := roots[target]; ok {
				out[j].Replies = append(out[j].Replies, m)
				continue
			}
		}
		roots[ev.Event.ID()] = len(out)
		out = append(out, m)
	}
	return out
}

type edited struct {
	ev *snapshot.Event
	c  *content
}

// message builds one message's view model.
func (r *renderer) message(ev *snapshot.Event, c *content, ed *edited, deleted bool, name func(string) string) templates.Message {
	t := time.UnixMilli(ev.TS).UTC()
	m := templates.Message{
		ID: ev.Event.ID(), Sender: ev.Sender, SenderName: name(ev.Sender),
		Time: t.Format(time.RFC3339), TimeText: t.Format("2006-01-02 15:04 UTC"),
		Deleted: deleted,
	}
	if deleted {
		return m
	}
	if ev.Event.Type() == "m.room.encrypted" {
		m.Body = `<em>Encrypted message</em>`
		return m
	}
	shownContent := c
	if ed != nil && ed.c.NewContent != nil {
		shownContent = ed.c.NewContent
		m.Edited = true
	}
	m.Emote = shownContent.MsgType == "m.emote"
	m.Body = r.body(shownContent)
	return m
}

// displayNames maps senders to the display names in rendered member events
// (the snapshot's Members), falling back to the user ID.
func displayNames(members map[string][]byte) func(string) string {
	names := make(map[string]string, len(members))
	for user, raw := range members {
		var m struct {
			Content struct {
				DisplayName string `json:"displayname"`
			} `json:"content"`
		}
		if json.Unmarshal(raw, &m) == nil && m.Content.DisplayName != "" {
			names[user] = m.Content.DisplayName
		}
	}
	return func(user string) string {
		if n, ok := names[user]; ok {
			return n
		}
		return user
	}
}

// renderItems writes messages as list items.
func renderItems(ctx context.Context, ms []templates.Message) ([]byte, error) {
	var b bytes.Buffer
	for _, m := range ms {
		if err := templates.MessageItem(m).Render(ctx, &b); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}
