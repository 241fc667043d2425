// Package web owns Plaza's web site: the chi wiring of its pages, their
// middleware and embedded, fingerprinted static assets, and the room page
// anonymous visitors read — /org/repo and /room/{room ID or alias} — with its
// live stream (GET /_plaza/rooms/{roomID}/live, Server-Sent Events) and the
// signed-in members' composer and join button.
//
// Endpoints:
//
//	GET  /                                  the front page
//	GET  /{org}/{repo}                      a repository's room (RepoRooms), or "no room yet"
//	GET  /room/{room ID or alias}           any world-readable room
//	     ?before=<pos>[&fragment=1]         older messages (a page, or the list items alone)
//	     ?at=<event ID>                     a message's permalink
//	GET  /_plaza/rooms/{roomID}/live        Server-Sent Events (see live.go)
//	POST /_plaza/rooms/{roomID}/send        the composer (form field body, markdown)
//	POST /_plaza/rooms/{roomID}/join        the join button
//	GET  /_plaza/static/{name}.{hash}.{ext} assets, cached for a year
//
// The room page's first screen is served from the hot-room snapshot cache
// (peek/snapshot): an anonymous view of a warm room reads no database. Each
// event is rendered once, by the cache's Render hook (Renderer.Render); a
// snapshot's message list is assembled once and shared by every viewer; live
// viewers of a room share one watcher of its snapshots (see hub). A room
// that is not world-readable is shown to its members only, from storage.
//
// Pages are readable with JavaScript off; the script (static/app.js) only
// adds live updates, older messages on scroll, local times and a composer
// that does not reload the page.
package web

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/a-h/templ"
	"github.com/go-chi/chi/v5"

	"plaza/homeserver"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/storage"
	"plaza/peek/snapshot"
	"plaza/templates"
)

// Sessions is the web site's sign-in (oauth.Service).
type Sessions interface {
	// SessionUser returns the Matrix user signed in with r's cookie, or "".
	SessionUser(r *http.Request) (string, error)
	// Providers lists the identity providers one can sign in with.
	Providers() []string
}

// RepoRooms finds (and, for a signed-in viewer, creates) a repository's room
// (community.Service). It returns ErrRoomNotCreated when the repository has
// no room and the viewer may not create it, and ErrNoSuchRepo when the forge
// says the repository does not exist.
type RepoRooms interface {
	RepoRoom(ctx context.Context, forgePath, viewer string) (roomID string, err error)
}

// Errors RepoRooms returns (cmd/plaza maps the community package's to these).
var (
	ErrRoomNotCreated = errors.New("the repository has no room yet")
	ErrNoSuchRepo     = errors.New("no such repository")
	// ErrTryLater: the forge cannot be reached, or too many rooms are being
	// created; the visitor gets a 503 page asking them to retry.
	ErrTryLater = errors.New("try again later")
)

// MaybePrivateError is ErrNoSuchRepo (errors.Is holds) for a signed-in
// viewer who has not let Plaza read their private repositories: the 404
// page offers OptInURL. RepoRooms returns it for every repository such a
// viewer cannot see, existing or not, so the page tells nothing more.
type MaybePrivateError struct{ OptInURL string }

func (e *MaybePrivateError) Error() string { return ErrNoSuchRepo.Error() }
func (e *MaybePrivateError) Unwrap() error { return ErrNoSuchRepo }

// Config configures the web site.
type Config struct {
	// Sessions is the sign-in service (nil: nobody can sign in).
	Sessions Sessions
	// Repos finds repositories' rooms (nil: the alias #org_repo:server is
	// looked up, and nothing is created).
	Repos RepoRooms
	// Log receives errors (nil: slog's default).
	Log *slog.Logger
	// Renderer renders messages (nil: a new one). Pass the one whose Render
	// the snapshot cache was given as its Render hook.
	Renderer *Renderer
	// JoinGate, if set, is asked before the join button joins someone (the
	// client API's join gate: rooms on demand check the forge and set the
	// joiner's power level there). An error refuses the join.
	JoinGate func(ctx context.Context, roomID, userID string) error
}

// Service serves the web site.
type Service struct {
	hs     *homeserver.Server
	cache  *snapshot.Cache
	cfg    Config
	log    *slog.Logger
	assets *assets
	render *Renderer
	live   *hubs

	// lists caches each room's rendered message list for its current
	// snapshot: a snapshot is immutable, so the list is built once per
	// change, not per view.
	listMu sync.Mutex
	lists  map[string]*list

	// gzips reuses page compressors (each holds a few hundred KB).
	gzips sync.Pool

	// repos remembers which room a repository's page showed, so a warm
	// /org/repo view asks neither the community service nor the database.
	// Only world-readable rooms are kept (other rooms' pages depend on the
	// viewer), for repoTTL: a repository's room changes only when the room
	// is replaced, and the page then lags by at most that long.
	repoMu sync.Mutex
	repos  map[string]repoEntry
	now    func() time.Time
}

type repoEntry struct {
	roomID  string
	expires time.Time
}

const (
	repoTTL  = 5 * time.Minute
	maxRepos = 16384
)

// cachedRepo returns the remembered room of a repository, or "".
func (s *Service) cachedRepo(forgePath string) string {
	s.repoMu.Lock()
	defer s.repoMu.Unlock()
	if e, ok := s.repos[forgePath]; ok && s.now().Before(e.expires) {
		return e.roomID
	}
	return ""
}

// rememberRepo keeps a repository's world-readable room.
func (s *Service) rememberRepo(forgePath, roomID string) {
	s.repoMu.Lock()
	defer s.repoMu.Unlock()
	if len(s.repos) >= maxRepos {
		for k := range s.repos { // evict an arbitrary repository
			delete(s.repos, k)
			break
		}
	}
	s.repos[forgePath] = repoEntry{roomID: roomID, expires: s.now().Add(repoTTL)}
}

type list struct {
	snap *snapshot.Snapshot
	html []byte
}

// maxLists bounds the rendered lists kept (one per recently viewed room).
const maxLists = 4096

// New builds the web site on a homeserver and its snapshot cache.
func New(hs *homeserver.Server, cache *snapshot.Cache, cfg Config) (*Service, error) {
	a, err := loadAssets()
	if err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Renderer == nil {
		cfg.Renderer = NewRenderer()
	}
	s := &Service{hs: hs, cache: cache, cfg: cfg, log: cfg.Log, assets: a, render: cfg.Renderer, lists: map[string]*list{},
		repos: map[string]repoEntry{}, now: time.Now}
	s.live = newHubs(s)
	hs.Rooms.Subscribe(s.live.onEvents)
	s.gzips.New = func() any {
		gz, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // a valid level never fails
		return gz
	}
	return s, nil
}

// Close ends every live stream (they are hijacked connections, which the
// HTTP server's shutdown does not close).
func (s *Service) Close() { s.live.closeAll() }

// Routes mounts the web site on the root router (homeserver.Server.Handler
// takes it as a mount). Matrix's own paths (/_matrix, /.well-known) are
// registered as static routes there and win over /{org}/{repo}.
func (s *Service) Routes(r chi.Router) {
	// Pages answer HEAD too (link checkers, crawlers); net/http drops the
	// body.
	for _, p := range []struct {
		path string
		h    http.HandlerFunc
	}{{"/", s.home}, {staticPrefix + "{name}", s.assets.serve}, {"/room/{roomIDOrAlias}", s.roomByID}, {"/{org}/{repo}", s.repoRoom}} {
		r.Get(p.path, p.h)
		r.Head(p.path, p.h)
	}
	r.Get("/_plaza/rooms/{roomID}/live", s.liveStream)
	r.Post("/_plaza/rooms/{roomID}/send", s.send)
	r.Post("/_plaza/rooms/{roomID}/join", s.join)
}

// pathParam reads a path parameter, unescaped.
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}

// page fills the layout's common fields.
func (s *Service) page(r *http.Request, title, user string) templates.Page {
	p := templates.Page{Title: title, CSS: s.assets.url("app.css"), JS: s.assets.url("app.js"), User: user,
		Next: url.QueryEscape(r.URL.RequestURI())}
	if s.cfg.Sessions != nil && user == "" {
		for _, id := range s.cfg.Sessions.Providers() {
			p.SignIn = append(p.SignIn, templates.Provider{ID: id, Name: providerName(id)})
		}
	}
	return p
}

func providerName(id string) string {
	switch id {
	case "github":
		return "GitHub"
	case "gitlab":
		return "GitLab"
	case "demo":
		return "the demo forge"
	}
	return id
}

// user returns the signed-in user, or "" (and no database query) for a
// visitor without a session cookie.
func (s *Service) user(r *http.Request) (string, error) {
	if s.cfg.Sessions == nil {
		return "", nil
	}
	if _, err := r.Cookie("plaza_session"); err != nil {
		return "", nil
	}
	u, err := s.cfg.Sessions.SessionUser(r)
	if err != nil {
		return "", fmt.Errorf("reading the web session: %w", err)
	}
	return u, nil
}

// html writes a page, gzipped when the client takes it (a room page's
// HTML shrinks to about a fifth).
func (s *Service) html(w http.ResponseWriter, r *http.Request, status int, c templ.Component) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
	h.Add("Vary", "Accept-Encoding")
	var out io.Writer = w
	if acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		gz := s.gzips.Get().(*gzip.Writer)
		gz.Reset(w)
		defer func() {
			_ = gz.Close()
			s.gzips.Put(gz)
		}()
		out = gz
	}
	w.WriteHeader(status)
	if err := c.Render(r.Context(), out); err != nil {
		s.log.Warn("writing a page", "path", r.URL.Path, "err", err)
	}
}

func acceptsGzip(r *http.Request) bool {
	for _, e := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		if name, q, _ := strings.Cut(strings.TrimSpace(e), ";"); name == "gzip" && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}

// fail answers an unexpected error with a plain 500 page and logs it.
func (s *Service) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	s.log.Error("web page failed", "path", r.URL.Path, "err", err)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write([]byte("Something went wrong on our side. Please try again."))
}

func (s *Service) notFound(w http.ResponseWriter, r *http.Request, user string) {
	s.html(w, r, http.StatusNotFound, templates.NotFoundPage(templates.NotFound{Page: s.page(r, "Not found · Plaza", user)}))
}

func (s *Service) home(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.html(w, r, http.StatusOK, templates.HomePage(templates.Home{Page: s.page(r, "Plaza", user)}))
}

// roomByID serves /room/{room ID or alias}.
func (s *Service) roomByID(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ref := pathParam(r, "roomIDOrAlias")
	var roomID string
	switch {
	case strings.HasPrefix(ref, "!") && id.ValidRoomID(ref):
		roomID = ref
	case strings.HasPrefix(ref, "#"):
		if _, err := id.ParseRoomAlias(ref); err != nil {
			s.notFound(w, r, user)
			return
		}
		roomID, err = s.hs.DB.ResolveAlias(r.Context(), ref)
		if errors.Is(err, storage.ErrNotFound) {
			s.notFound(w, r, user)
			return
		} else if err != nil {
			s.fail(w, r, err)
			return
		}
	default:
		s.notFound(w, r, user)
		return
	}
	s.room(w, r, roomID, user)
}

// repoRoom serves /org/repo: the repository's room, created for a signed-in
// visitor when the forge says the repository exists.
func (s *Service) repoRoom(w http.ResponseWriter, r *http.Request) {
	org, repo := pathParam(r, "org"), pathParam(r, "repo")
	// Paths under /_matrix, /_plaza, /.well-known and the like are the
	// homeserver's; one it does not know gets its Matrix error, not a page.
	if strings.HasPrefix(org, "_") || strings.HasPrefix(org, ".") {
		httpapi.Fail(w, r, httpapi.Unrecognized("unrecognized request: %s %s", r.Method, r.URL.Path))
		return
	}
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !validRepoPart(org) || !validRepoPart(repo) {
		s.notFound(w, r, user)
		return
	}
	forgePath := strings.ToLower(org + "/" + repo) // forges' names are case-insensitive
	if roomID := s.cachedRepo(forgePath); roomID != "" {
		s.room(w, r, roomID, user)
		return
	}
	roomID, err := s.repoRoomID(r.Context(), org+"/"+repo, user)
	var maybe *MaybePrivateError
	switch {
	case errors.As(err, &maybe):
		p := s.page(r, "Not found · Plaza", user)
		s.html(w, r, http.StatusNotFound, templates.NotFoundPage(templates.NotFound{Page: p, AllowPrivate: maybe.OptInURL}))
		return
	case errors.Is(err, ErrRoomNotCreated):
		p := s.page(r, forgePath+" · Plaza", user)
		s.html(w, r, http.StatusNotFound, templates.NoRoomPage(templates.NoRoom{Page: p, Repo: forgePath}))
		return
	case errors.Is(err, ErrNoSuchRepo):
		s.notFound(w, r, user)
		return
	case errors.Is(err, ErrTryLater):
		w.Header().Set("Retry-After", "30")
		p := s.page(r, forgePath+" · Plaza", user)
		s.html(w, r, http.StatusServiceUnavailable, templates.TryLaterPage(templates.NoRoom{Page: p, Repo: forgePath}))
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	if snap, err := s.cache.Get(r.Context(), roomID); err == nil && snap.Summary.WorldReadable() {
		s.rememberRepo(forgePath, roomID)
	}
	// The forge vouched for the visitor: a private repository's room is
	// found for those who may read the repository (and opted in) only.
	s.roomPage(w, r, roomID, user, user != "" && s.cfg.Repos != nil)
}

// validRepoPart accepts the characters GitHub and GitLab allow in owner and
// repository names.
func validRepoPart(p string) bool {
	if p == "" || len(p) > 100 || strings.Trim(p, ".") == "" {
		return false
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// repoRoomID finds a repository's room through Config.Repos, or by its
// alias when there is none.
func (s *Service) repoRoomID(ctx context.Context, forgePath, user string) (string, error) {
	if s.cfg.Repos != nil {
		return s.cfg.Repos.RepoRoom(ctx, forgePath, user)
	}
	org, repo, _ := strings.Cut(forgePath, "/")
	alias := "#" + org + "_" + repo + ":" + s.hs.Config.ServerName
	roomID, err := s.hs.DB.ResolveAlias(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) && alias != strings.ToLower(alias) {
		roomID, err = s.hs.DB.ResolveAlias(ctx, strings.ToLower(alias))
	}
	if errors.Is(err, storage.ErrNotFound) {
		return "", ErrRoomNotCreated
	}
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", alias, err)
	}
	return roomID, nil
}

// room renders a room's page: its latest messages from the snapshot, or
// older ones (?before=position) from storage.
func (s *Service) room(w http.ResponseWriter, r *http.Request, roomID, user string) {
	s.roomPage(w, r, roomID, user, false)
}

// roomPage is room; vouched says the forge let user read the room's
// repository, so a room that is not world-readable offers them its join
// button (the join gate checks the forge again) rather than the not-found
// page, and shows nothing of its history until they join.
func (s *Service) roomPage(w http.ResponseWriter, r *http.Request, roomID, user string, vouched bool) {
	snap, err := s.cache.Get(r.Context(), roomID)
	if errors.Is(err, snapshot.ErrNotFound) {
		s.notFound(w, r, user)
		return
	} else if err != nil {
		s.fail(w, r, err)
		return
	}
	// A room that is not world-readable has a page only for its members,
	// read from storage with their visibility (the snapshot holds what
	// anyone may read, and nothing else), and no live stream. Anyone else
	// gets the page a missing room gets.
	private := !snap.Summary.WorldReadable()
	if private && user == "" {
		s.notFound(w, r, user)
		return
	}
	sum := &snap.Summary
	v := templates.Room{RoomID: roomID, Name: roomName(sum), Topic: sum.Topic, Alias: sum.CanonicalAlias,
		Members: sum.JoinedMembers, Pos: snap.Pos,
		Live: "/_plaza/rooms/" + url.PathEscape(roomID) + "/live",
		Send: "/_plaza/rooms/" + url.PathEscape(roomID) + "/send",
		Join: "/_plaza/rooms/" + url.PathEscape(roomID) + "/join"}
	v.Page = s.page(r, v.Name+" · Plaza", user)
	if sum.Topic != "" {
		v.Description = sum.Topic
	}
	if user != "" {
		m, err := s.hs.Rooms.Membership(r.Context(), roomID, user)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		v.Member = m == "join"
	}
	if private {
		w.Header().Set("Cache-Control", "private, no-store")
		if !v.Member {
			if !vouched || s.cfg.JoinGate == nil {
				s.notFound(w, r, user)
				return
			}
			v.Live = "" // nothing to follow before joining
			s.html(w, r, http.StatusOK, templates.RoomPage(v))
			return
		}
	}
	if at := r.URL.Query().Get("at"); at != "" {
		// A message's permalink (/org/repo?at=$event): the page of messages
		// ending with it, scrolled to it.
		pos, evRoom, err := s.hs.DB.StreamPosOf(r.Context(), at)
		if errors.Is(err, storage.ErrNotFound) || err == nil && (evRoom != roomID || pos <= 0) {
			s.notFound(w, r, user)
			return
		} else if err != nil {
			s.fail(w, r, err)
			return
		}
		// An absolute path: http.Redirect resolves a query-only URL
		// against the path's directory, dropping the room.
		http.Redirect(w, r, r.URL.EscapedPath()+"?before="+strconv.FormatInt(pos+1, 10)+"#"+url.PathEscape(at), http.StatusFound)
		return
	}
	if b := r.URL.Query().Get("before"); b != "" {
		before, err := strconv.ParseInt(b, 10, 64)
		if err != nil || before <= 0 {
			s.notFound(w, r, user)
			return
		}
		html, older, err := s.older(r.Context(), roomID, before, user)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if r.URL.Query().Get("fragment") == "1" {
			// The script asks for the list items alone, and where the
			// next older page is, to insert them above the others.
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("X-Plaza-Older", older)
			_, _ = w.Write(html)
			return
		}
		v.Messages, v.Older, v.Archive = html, older, true
		s.html(w, r, http.StatusOK, templates.RoomPage(v))
		return
	}
	if private {
		// The live stream resumes after the position read up to.
		v.Pos = s.hs.Rooms.UpTo()
		html, older, err := s.older(r.Context(), roomID, v.Pos+1, user)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		v.Messages, v.Older = html, older
		s.html(w, r, http.StatusOK, templates.RoomPage(v))
		return
	}
	v.Messages = s.list(snap).html
	// Floor 0: the snapshot holds the room's whole readable history.
	if len(snap.Events) > 0 && snap.Floor > 0 {
		v.Older = "?before=" + strconv.FormatInt(snap.Events[0].Pos, 10)
	}
	w.Header().Set("Cache-Control", "no-cache")
	s.html(w, r, http.StatusOK, templates.RoomPage(v))
}

func roomName(s *snapshot.Summary) string {
	switch {
	case s.Name != "":
		return s.Name
	case s.CanonicalAlias != "":
		return s.CanonicalAlias
	}
	return "Unnamed room"
}

// list returns the snapshot's rendered message list, building it once.
func (s *Service) list(snap *snapshot.Snapshot) *list {
	s.listMu.Lock()
	l := s.lists[snap.Summary.RoomID]
	s.listMu.Unlock()
	if l != nil && l.snap == snap {
		return l
	}
	l = &list{snap: snap, html: s.render.assemble(snap.Events, displayNames(snap.Members))}
	s.listMu.Lock()
	defer s.listMu.Unlock()
	if cur := s.lists[snap.Summary.RoomID]; cur != nil && cur.snap.Pos > snap.Pos {
		return l // a newer one won the race
	}
	if len(s.lists) >= maxLists {
		for k := range s.lists { // evict an arbitrary room
			delete(s.lists, k)
			break
		}
	}
	s.lists[snap.Summary.RoomID] = l
	return l
}

// olderPage is how many events a page of older messages reads.
const olderPage = 50

// older renders the events before position before that user ("" for
// anyone) may see, from storage, and the link to the page before them (""
// at the room's start).
func (s *Service) older(ctx context.Context, roomID string, before int64, user string) ([]byte, string, error) {
	nid, err := s.hs.DB.RoomNID(ctx, roomID)
	if err != nil {
		return nil, "", fmt.Errorf("room %s: %w", roomID, err)
	}
	stored, err := s.hs.DB.RoomEvents(ctx, nid, before-1, 0, true, olderPage, storage.EventFilter{})
	if err != nil {
		return nil, "", fmt.Errorf("reading older events of %s: %w", roomID, err)
	}
	vis, err := s.hs.Rooms.VisibilityFor(ctx, roomID, user)
	if err != nil {
		return nil, "", fmt.Errorf("visibility of %s: %w", roomID, err)
	}
	older := ""
	if len(stored) == olderPage {
		older = "?before=" + strconv.FormatInt(stored[len(stored)-1].StreamPos, 10)
	}
	visible := make([]*storage.StoredEvent, 0, len(stored))
	for i := len(stored) - 1; i >= 0; i-- { // oldest first
		if vis.CanSee(stored[i].StreamPos) {
			visible = append(visible, stored[i])
		}
	}
	evs, err := snapshot.RenderStored(ctx, s.hs.DB, visible)
	if err != nil {
		return nil, "", fmt.Errorf("rendering older events of %s: %w", roomID, err)
	}
	names, err := s.senderNames(ctx, roomID, evs)
	if err != nil {
		return nil, "", err
	}
	html, err := renderItems(ctx, s.render.messages(evs, names))
	return html, older, err
}

// senderNames looks up the current display names of evs' senders.
func (s *Service) senderNames(ctx context.Context, roomID string, evs []*snapshot.Event) (func(string) string, error) {
	members := map[string][]byte{}
	for _, e := range evs {
		if _, ok := members[e.Sender]; ok {
			continue
		}
		m, err := s.hs.Rooms.StateEvent(ctx, roomID, "m.room.member", e.Sender)
		if err != nil {
			return nil, fmt.Errorf("member %s of %s: %w", e.Sender, roomID, err)
		}
		if m == nil {
			members[e.Sender] = nil
			continue
		}
		members[e.Sender] = []byte(`{"content":` + string(m.Content()) + `}`)
	}
	return displayNames(members), nil
}
