package accountdata

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
)

// Bounds on what a user may store: the rules are evaluated for every event
// of every room the user is in, and rewritten whole on each change.
const (
	maxRuleBody    = 16 << 10 // one rule's request body
	maxRuleString  = 1024     // a pattern, key or "is" of a condition
	maxUserRules   = 500      // user-defined rules across all kinds
	maxRuleActions = 32
)

func (s *Service) pushRuleRoutes(r chi.Router) {
	for _, p := range []string{"/pushrules", "/pushrules/"} {
		r.Get(p, s.getAllRules)
	}
	for _, p := range []string{"/pushrules/global", "/pushrules/global/"} {
		r.Get(p, s.getGlobalRules)
	}
	r.Get("/pushrules/global/{kind}/{ruleID}", s.getRule)
	r.Put("/pushrules/global/{kind}/{ruleID}", s.putRule)
	r.Delete("/pushrules/global/{kind}/{ruleID}", s.deleteRule)
	r.Get("/pushrules/global/{kind}/{ruleID}/enabled", s.getRuleEnabled)
	r.Put("/pushrules/global/{kind}/{ruleID}/enabled", s.putRuleEnabled)
	r.Get("/pushrules/global/{kind}/{ruleID}/actions", s.getRuleActions)
	r.Put("/pushrules/global/{kind}/{ruleID}/actions", s.putRuleActions)
}

// Ruleset returns a user's effective push rules: the server's defaults with
// the user's changes. The unread counts and pushers evaluate these.
func (s *Service) Ruleset(ctx context.Context, userID string) (Ruleset, error) {
	rs, _, err := s.ruleset(ctx, userID)
	return rs, err
}

// RulesetVersion is Ruleset with the stream position of the user's last
// change to it, so callers can cache what they derive from the rules.
func (s *Service) RulesetVersion(ctx context.Context, userID string) (Ruleset, int64, error) {
	return s.ruleset(ctx, userID)
}

// ruleset also returns the stream position of the user's last change.
// Rulesets are cached per user: every sync's unread counts need them. A
// change through this process drops the entry; with several processes the
// cache would follow the stream instead (DESIGN.md, "Scale").
func (s *Service) ruleset(ctx context.Context, userID string) (Ruleset, int64, error) {
	s.rulesMu.Lock()
	c, ok := s.rules[userID]
	s.rulesMu.Unlock()
	if ok {
		return c.rules, c.pos, nil
	}
	data, pos, err := s.db.PushRules(ctx, userID)
	if err != nil {
		return Ruleset{}, 0, err
	}
	rs, err := rulesetFrom(userID, data)
	if err != nil {
		return Ruleset{}, 0, err
	}
	s.rulesMu.Lock()
	if len(s.rules) >= maxCachedRulesets {
		clear(s.rules)
	}
	s.rules[userID] = cachedRuleset{rules: rs, pos: pos}
	s.rulesMu.Unlock()
	return rs, pos, nil
}

// maxCachedRulesets bounds the ruleset cache; past it, it starts over.
const maxCachedRulesets = 100_000

type cachedRuleset struct {
	rules Ruleset
	pos   int64
}

// rulesetFrom merges stored changes over the defaults.
func rulesetFrom(userID string, stored []byte) (Ruleset, error) {
	u, err := parseUserRules(stored)
	if err != nil {
		return Ruleset{}, err
	}
	return effective(userID, u)
}

func (s *Service) getAllRules(w http.ResponseWriter, r *http.Request) {
	rs, err := s.Ruleset(r.Context(), httpapi.RequesterFrom(r.Context()).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"global": rs})
}

func (s *Service) getGlobalRules(w http.ResponseWriter, r *http.Request) {
	rs, err := s.Ruleset(r.Context(), httpapi.RequesterFrom(r.Context()).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, rs)
}

// ruleRef is the rule a request's path names.
type ruleRef struct {
	kind   Kind
	ruleID string
}

func parseRuleRef(r *http.Request) (ruleRef, error) {
	kind, err := pathParam(r, "kind")
	if err != nil {
		return ruleRef{}, err
	}
	if !Kind(kind).valid() {
		return ruleRef{}, httpapi.InvalidParam("unknown push rule kind %q: use override, content, room, sender or underride", kind)
	}
	ruleID, err := pathParam(r, "ruleID")
	if err != nil {
		return ruleRef{}, err
	}
	if ruleID == "" {
		return ruleRef{}, httpapi.InvalidParam("the rule ID is empty")
	}
	return ruleRef{Kind(kind), ruleID}, nil
}

// findRule looks a rule up in the user's effective ruleset.
func (s *Service) findRule(w http.ResponseWriter, r *http.Request) (Rule, bool) {
	ref, err := parseRuleRef(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return Rule{}, false
	}
	rs, err := s.Ruleset(r.Context(), httpapi.RequesterFrom(r.Context()).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return Rule{}, false
	}
	rule, ok := rs.Find(ref.kind, ref.ruleID)
	if !ok {
		httpapi.Fail(w, r, httpapi.NotFound("no %s push rule %q", ref.kind, ref.ruleID))
		return Rule{}, false
	}
	return rule, true
}

func (s *Service) getRule(w http.ResponseWriter, r *http.Request) {
	if rule, ok := s.findRule(w, r); ok {
		httpapi.Respond(w, http.StatusOK, rule)
	}
}

func (s *Service) getRuleEnabled(w http.ResponseWriter, r *http.Request) {
	if rule, ok := s.findRule(w, r); ok {
		httpapi.Respond(w, http.StatusOK, map[string]bool{"enabled": rule.Enabled})
	}
}

func (s *Service) getRuleActions(w http.ResponseWriter, r *http.Request) {
	if rule, ok := s.findRule(w, r); ok {
		httpapi.Respond(w, http.StatusOK, map[string]any{"actions": rule.Actions})
	}
}

func (s *Service) putRule(w http.ResponseWriter, r *http.Request) {
	ref, err := parseRuleRef(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if err := validateNewRuleID(ref); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	q := r.URL.Query()
	before, after := q.Get("before"), q.Get("after")
	for _, rel := range []string{before, after} {
		if isServerDefault(rel) {
			httpapi.Fail(w, r, httpapi.InvalidParam("rules cannot be placed relative to the server-default rule %q", rel))
			return
		}
	}
	var body struct {
		Actions    *[]Action    `json:"actions"`
		Conditions *[]Condition `json:"conditions"`
		Pattern    *string      `json:"pattern"`
	}
	if err := httpapi.DecodeLimit(r, &body, maxRuleBody); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if body.Actions == nil {
		httpapi.Fail(w, r, httpapi.MissingParam("actions is required"))
		return
	}
	actions, err := validateActions(*body.Actions)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	rule := Rule{RuleID: ref.ruleID, Enabled: true, Actions: actions}
	switch ref.kind {
	case KindOverride, KindUnderride:
		// Conditions of other kinds are not applicable and are ignored.
		rule.Conditions = []Condition{}
		if body.Conditions != nil {
			if err := validateConditions(*body.Conditions); err != nil {
				httpapi.Fail(w, r, err)
				return
			}
			rule.Conditions = *body.Conditions
		}
	case KindContent:
		if body.Pattern == nil || *body.Pattern == "" {
			httpapi.Fail(w, r, httpapi.MissingParam("content rules need a pattern"))
			return
		}
		if len(*body.Pattern) > maxRuleString {
			httpapi.Fail(w, r, httpapi.BadJSON("pattern is longer than %d bytes", maxRuleString))
			return
		}
		rule.Pattern = *body.Pattern
	}
	s.changeRules(w, r, func(u *userRules) error { return u.putRule(ref.kind, rule, before, after) })
}

// validateNewRuleID applies the spec's rules for IDs of rules a user
// creates: never a server-default ID, no slashes, and for room and sender
// rules the room or user the rule is about.
func validateNewRuleID(ref ruleRef) error {
	switch {
	case isServerDefault(ref.ruleID):
		return httpapi.InvalidParam("rule IDs starting with '.' are reserved for server-default rules")
	case strings.ContainsAny(ref.ruleID, `/\`):
		return httpapi.InvalidParam("rule IDs may not contain slashes or backslashes")
	case len(ref.ruleID) > id.MaxLength:
		return httpapi.InvalidParam("rule IDs may be at most %d bytes long", id.MaxLength)
	case ref.kind == KindRoom && !id.ValidRoomID(ref.ruleID):
		return httpapi.InvalidParam("the ID of a room rule must be a room ID")
	case ref.kind == KindSender:
		if _, err := id.ParseUserID(ref.ruleID); err != nil {
			return httpapi.InvalidParam("the ID of a sender rule must be a user ID")
		}
	}
	return nil
}

// validateActions checks actions a client sent and drops the historical
// dont_notify and coalesce, which the spec says to ignore.
func validateActions(in []Action) ([]Action, error) {
	if len(in) > maxRuleActions {
		return nil, httpapi.BadJSON("a rule may have at most %d actions", maxRuleActions)
	}
	out := []Action{}
	for _, a := range in {
		switch a.Name {
		case "dont_notify", "coalesce":
			continue
		case "notify":
		case "set_tweak":
			if a.Tweak == "" {
				return nil, httpapi.BadJSON("set_tweak needs a tweak name")
			}
			var b bool
			var s string
			switch {
			case a.Tweak == "highlight" && a.Value != nil && json.Unmarshal(a.Value, &b) != nil:
				return nil, httpapi.BadJSON("the highlight tweak's value must be a boolean")
			case a.Tweak == "sound" && (a.Value == nil || json.Unmarshal(a.Value, &s) != nil):
				return nil, httpapi.BadJSON("the sound tweak's value must be a string")
			}
		default:
			return nil, httpapi.BadJSON("unknown push rule action %q", a.Name)
		}
		out = append(out, a)
	}
	return out, nil
}

// validateConditions checks the parameters of the conditions the spec
// defines. Conditions of other kinds are kept: they never match, as the
// spec requires of unrecognised conditions.
func validateConditions(conds []Condition) error {
	for _, c := range conds {
		if c.Kind == "" {
			return httpapi.BadJSON("every condition needs a kind")
		}
		if len(c.Key) > maxRuleString || len(c.Is) > maxRuleString || c.Pattern != nil && len(*c.Pattern) > maxRuleString {
			return httpapi.BadJSON("condition parameters may be at most %d bytes long", maxRuleString)
		}
		switch c.Kind {
		case "event_match":
			if c.Key == "" || c.Pattern == nil {
				return httpapi.BadJSON("event_match needs a key and a pattern")
			}
		case "event_property_is", "event_property_contains":
			if c.Key == "" || c.Value == nil {
				return httpapi.BadJSON("%s needs a key and a value", c.Kind)
			}
			if _, ok := conditionValue(c.Value); !ok {
				return httpapi.BadJSON("%s's value must be a string, an integer, a boolean or null", c.Kind)
			}
		case "room_member_count":
			if _, _, ok := parseMemberCount(c.Is); !ok {
				return httpapi.BadJSON("room_member_count needs \"is\": an integer, optionally prefixed by ==, <, >, >= or <=")
			}
		case "sender_notification_permission":
			if c.Key == "" {
				return httpapi.BadJSON("sender_notification_permission needs a key")
			}
		}
	}
	return nil
}

func (s *Service) deleteRule(w http.ResponseWriter, r *http.Request) {
	ref, err := parseRuleRef(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	s.changeRules(w, r, func(u *userRules) error { return u.deleteRule(ref.kind, ref.ruleID) })
}

func (s *Service) putRuleEnabled(w http.ResponseWriter, r *http.Request) {
	ref, err := parseRuleRef(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var body struct {
		Enabled *bool `json:"enabled"`
	}
	if err := httpapi.DecodeLimit(r, &body, maxRuleBody); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if body.Enabled == nil {
		httpapi.Fail(w, r, httpapi.MissingParam("enabled is required"))
		return
	}
	s.changeRules(w, r, func(u *userRules) error { return u.setEnabled(ref.kind, ref.ruleID, *body.Enabled) })
}

func (s *Service) putRuleActions(w http.ResponseWriter, r *http.Request) {
	ref, err := parseRuleRef(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var body struct {
		Actions *[]Action `json:"actions"`
	}
	if err := httpapi.DecodeLimit(r, &body, maxRuleBody); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if body.Actions == nil {
		httpapi.Fail(w, r, httpapi.MissingParam("actions is required"))
		return
	}
	actions, err := validateActions(*body.Actions)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	s.changeRules(w, r, func(u *userRules) error { return u.setActions(ref.kind, ref.ruleID, actions) })
}

// changeRules applies change to the requester's stored push rules under
// the row's lock; if change fails nothing is written.
func (s *Service) changeRules(w http.ResponseWriter, r *http.Request, change func(*userRules) error) {
	ctx := r.Context()
	userID := httpapi.RequesterFrom(ctx).UserID
	defer func() {
		s.rulesMu.Lock()
		delete(s.rules, userID)
		s.rulesMu.Unlock()
	}()
	err := s.write(userID, func(pos int64) (bool, error) {
		return s.db.UpdatePushRules(ctx, userID, pos, func(old []byte) ([]byte, error) {
			u, err := parseUserRules(old)
			if err != nil {
				return nil, err
			}
			u.defaults, err = DefaultRuleset(userID)
			if err != nil {
				return nil, err
			}
			if err := change(u); err != nil {
				return nil, err
			}
			return json.Marshal(u)
		})
	})
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

// putRule adds a user rule or replaces one of the same ID (which keeps its
// enabled state and, unless before or after say otherwise, its place). A
// new rule without before or after becomes the kind's most important user
// rule. With both, before wins, as the spec says.
func (u *userRules) putRule(k Kind, rule Rule, before, after string) error {
	list := slices.Clone(u.Rules[k])
	at := slices.IndexFunc(list, func(r Rule) bool { return r.RuleID == rule.RuleID })
	if at >= 0 {
		rule.Enabled = list[at].Enabled
		list = slices.Delete(list, at, at+1)
	} else if u.count() >= maxUserRules {
		return httpapi.TooLarge("at most %d push rules of your own are allowed", maxUserRules)
	}
	indexOf := func(ruleID string) (int, error) {
		i := slices.IndexFunc(list, func(r Rule) bool { return r.RuleID == ruleID })
		if i < 0 {
			return 0, httpapi.InvalidParam("before/after rule not found: %s", ruleID)
		}
		return i, nil
	}
	pos := 0
	switch {
	case before != "":
		i, err := indexOf(before)
		if err != nil {
			return err
		}
		pos = i
	case after != "":
		i, err := indexOf(after)
		if err != nil {
			return err
		}
		pos = i + 1
	case at >= 0:
		pos = at
	}
	if u.Rules == nil {
		u.Rules = map[Kind][]Rule{}
	}
	u.Rules[k] = slices.Insert(list, pos, rule)
	return nil
}

func (u *userRules) count() int {
	n := 0
	for _, list := range u.Rules {
		n += len(list)
	}
	return n
}

// userRule returns the index of a user rule, -1 if none.
func (u *userRules) userRule(k Kind, ruleID string) int {
	return slices.IndexFunc(u.Rules[k], func(r Rule) bool { return r.RuleID == ruleID })
}

// deleteRule deletes a user rule. Server-default rules cannot be deleted
// (clients disable them instead); the spec names no error for trying, and
// 400 M_INVALID_PARAM says what is wrong where a 404 would deny that a rule
// the client can read exists.
func (u *userRules) deleteRule(k Kind, ruleID string) error {
	if i := u.userRule(k, ruleID); i >= 0 {
		u.Rules[k] = slices.Delete(slices.Clone(u.Rules[k]), i, i+1)
		if len(u.Rules[k]) == 0 {
			delete(u.Rules, k)
		}
		return nil
	}
	if _, ok := u.defaults.Find(k, ruleID); ok {
		return httpapi.InvalidParam("server-default rules cannot be deleted; disable %s instead", ruleID)
	}
	return httpapi.NotFound("no %s push rule %q", k, ruleID)
}

func (u *userRules) setEnabled(k Kind, ruleID string, enabled bool) error {
	if i := u.userRule(k, ruleID); i >= 0 {
		u.Rules[k][i].Enabled = enabled
		return nil
	}
	return u.changeDefault(k, ruleID, func(c *defaultChange) { c.Enabled = &enabled })
}

func (u *userRules) setActions(k Kind, ruleID string, actions []Action) error {
	if i := u.userRule(k, ruleID); i >= 0 {
		u.Rules[k][i].Actions = actions
		return nil
	}
	return u.changeDefault(k, ruleID, func(c *defaultChange) { c.Actions = actions })
}

// changeDefault records a change to a server-default rule.
func (u *userRules) changeDefault(k Kind, ruleID string, f func(*defaultChange)) error {
	if _, ok := u.defaults.Find(k, ruleID); !ok {
		return httpapi.NotFound("no %s push rule %q", k, ruleID)
	}
	if u.Defaults == nil {
		u.Defaults = map[string]defaultChange{}
	}
	c := u.Defaults[defaultKey(k, ruleID)]
	f(&c)
	u.Defaults[defaultKey(k, ruleID)] = c
	return nil
}
