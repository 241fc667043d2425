package web

import (
	"bytes"
	"context"
	"encoding/json"
	"html"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/chroma/v2"
	chromahtml "github.com/alecthomas/chroma/v2/formatters/html"
	"github.com/alecthomas/chroma/v2/lexers"
	"github.com/microcosm-cc/bluemonday"
	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/extension"
	goldhtml "github.com/yuin/goldmark/renderer/html"

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
// With the snapshot cache's Render hook (Renderer.Render), each event is
// rendered once, when it enters a snapshot or changes there; a snapshot's
// list is then assembled from those fragments once (Service.list) and shared
// by every viewer.

// Renderer turns events into message view models and HTML. It is safe for concurrent
// use: the policy and formatter are read-only once built.
type Renderer struct {
	md     goldmark.Markdown
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

// NewRenderer builds a renderer. cmd/plaza hands its Render to the snapshot
// cache (snapshot.Config.Render) and the renderer itself to New.
func NewRenderer() *Renderer {
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
	return &Renderer{
		// The composer's markdown, as Matrix clients send it: CommonMark with
		// strikethrough, tables and bare links, line breaks kept. Raw HTML
		// passes to the sanitiser rather than being dropped.
		md: goldmark.New(goldmark.WithExtensions(extension.Strikethrough, extension.Table, extension.Linkify),
			goldmark.WithRendererOptions(goldhtml.WithHardWraps(), goldhtml.WithUnsafe())),
		policy: p,
		code:   chromahtml.New(chromahtml.WithClasses(true), chromahtml.PreventSurroundingPre(true)),
		style:  chroma.MustNewStyle("plaza", chroma.StyleEntries{}),
	}
}

// markdown renders a composed message as Matrix HTML (formatted_body),
// sanitised, or "" when it has no formatting, so plain messages stay plain.
func (r *Renderer) markdown(body string) string {
	var b bytes.Buffer
	if err := r.md.Convert([]byte(body), &b); err != nil {
		return ""
	}
	out := strings.TrimSpace(b.String())
	if inner, ok := strings.CutPrefix(out, "<p>"); ok {
		if inner, ok := strings.CutSuffix(inner, "</p>"); ok {
			plain := strings.ReplaceAll(inner, "<br>\n", "\n")
			if !strings.Contains(plain, "<") && html.UnescapeString(plain) == body {
				return ""
			}
		}
	}
	return r.policy.Sanitize(out)
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
func (r *Renderer) body(c *content) string {
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
func (r *Renderer) plain(body string) string {
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
func (r *Renderer) text(b *strings.Builder, s string) {
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
func (r *Renderer) highlightBlocks(s string) string {
	if !strings.Contains(s, `<code class="language-`) {
		return s
	}
	return codeBlockRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := codeBlockRE.FindStringSubmatch(m)
		return r.codeBlock(sub[1], html.UnescapeString(sub[2]))
	})
}

// codeBlock renders code, highlighted when its language is known.
func (r *Renderer) codeBlock(lang, code string) string {
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
func (r *Renderer) messages(evs []*snapshot.Event, name func(string) string) []templates.Message {
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
func (r *Renderer) message(ev *snapshot.Event, c *content, ed *edited, deleted bool, name func(string) string) templates.Message {
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

// nameMarker stands for the sender's display name in a fragment rendered by
// Render: the hook sees one event, not the room's members, so the name is
// filled in when a list is assembled (the first marker is always the name:
// the sender comes before the body).
const nameMarker = "\x00"

// Render renders a snapshot event as the page's list item, or nil for events
// the page does not show on their own (state, edits, redactions, reactions).
// It is the snapshot cache's Render hook: it must not block, and it does
// not (no I/O).
func (r *Renderer) Render(ev *snapshot.Event) []byte {
	c := parseContent(ev.Event.Content())
	kind, _ := classify(ev, &c)
	if kind != message && kind != reply {
		return nil
	}
	var ed *edited
	if ev.Edit != nil {
		ec := parseContent(ev.Edit.Content())
		ed = &edited{nil, &ec}
	}
	m := r.message(ev, &c, ed, ev.Redacted, func(string) string { return nameMarker })
	b, err := renderItems(context.Background(), []templates.Message{m})
	if err != nil {
		return nil // rendering into memory fails only on a template bug; the list renders it again
	}
	return b
}

// fragment returns ev's list item, from the hook's rendering when the cache
// has one.
func (r *Renderer) fragment(ev *snapshot.Event) []byte {
	if ev.HTML != nil {
		return ev.HTML
	}
	return r.Render(ev)
}

// writeNamed appends a Render fragment with its sender's name filled in.
func writeNamed(b []byte, frag []byte, name string) []byte {
	i := bytes.IndexByte(frag, 0)
	if i < 0 {
		return append(b, frag...)
	}
	b = append(b, frag[:i]...)
	b = append(b, html.EscapeString(name)...)
	return append(b, frag[i+1:]...)
}

// assemble builds a snapshot's message list from its events' fragments:
// thread replies fold under their roots when the root is in the window, as
// messages() does for the template path.
func (r *Renderer) assemble(evs []*snapshot.Event, name func(string) string) []byte {
	type item struct {
		ev      *snapshot.Event
		frag    []byte
		replies []int
	}
	// A snapshot loaded cold holds edits as events without applying them to
	// their targets (the stream applies later ones): apply those here.
	edits := map[string]*snapshot.Event{}
	for _, ev := range evs {
		c := parseContent(ev.Event.Content())
		if kind, target := classify(ev, &c); kind == edit && !ev.Redacted {
			edits[target] = ev
		}
	}
	items := make([]item, 0, len(evs))
	roots := map[string]int{}
	for _, ev := range evs {
		frag := r.fragment(ev)
		if frag == nil {
			continue
		}
		if e := edits[ev.Event.ID()]; e != nil && ev.Edit == nil && !ev.Redacted && e.Sender == ev.Sender {
			withEdit := *ev
			withEdit.Edit = e.Event
			frag = r.Render(&withEdit)
		}
		c := parseContent(ev.Event.Content())
		if kind, root := classify(ev, &c); kind == reply {
			if j, ok := roots[root]; ok {
				items[j].replies = append(items[j].replies, len(items))
				items = append(items, item{ev: ev, frag: frag})
				continue
			}
		}
		roots[ev.Event.ID()] = len(items)
		items = append(items, item{ev: ev, frag: frag})
	}
	folded := make([]bool, len(items))
	for _, it := range items {
		for _, j := range it.replies {
			folded[j] = true
		}
	}
	var b []byte
	for i, it := range items {
		if folded[i] {
			continue
		}
		if len(it.replies) == 0 {
			b = writeNamed(b, it.frag, name(it.ev.Sender))
			continue
		}
		// The item's closing </li> moves after its thread.
		frag := bytes.TrimSuffix(it.frag, []byte("</li>"))
		b = writeNamed(b, frag, name(it.ev.Sender))
		b = append(b, `<details class="thread"><summary>`...)
		b = append(b, strconv.Itoa(len(it.replies))...)
		if len(it.replies) == 1 {
			b = append(b, " reply"...)
		} else {
			b = append(b, " replies"...)
		}
		b = append(b, `</summary><ol>`...)
		for _, j := range it.replies {
			b = writeNamed(b, items[j].frag, name(items[j].ev.Sender))
		}
		b = append(b, `</ol></details></li>`...)
	}
	return b
}
