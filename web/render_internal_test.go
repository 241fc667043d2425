package web

import "testing"

func TestComposedMarkdown(t *testing.T) {
	r := NewRenderer()
	for _, c := range []struct{ body, want string }{
		{"just words", ""},
		{"two\nlines & \"quotes\"", ""},
		{"**bold** and `a < b`", "<p><strong>bold</strong> and <code>a &lt; b</code></p>"},
		{"```go\nfunc main() {}\n```", "<pre><code class=\"language-go\">func main() {}\n</code></pre>"},
		{"see https://example.org", `<p>see <a href="https://example.org" rel="nofollow noreferrer noopener" target="_blank">https://example.org</a></p>`},
		{"<script>alert(1)</script>hi", "hi"},
		{"~~gone~~", "<p><del>gone</del></p>"},
	} {
		if got := r.markdown(c.body); got != c.want {
			t.Errorf("markdown(%q) = %q, want %q", c.body, got, c.want)
		}
	}
}
