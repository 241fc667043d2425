package accountdata

import (
	"encoding/json"
	"errors"
	"net/http"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/storage"
)

// maxTagSize bounds one tag's content ({"order": 0.5} and perhaps a little
// more); the m.tag content as a whole is bounded like any account data.
const maxTagSize = 4 << 10

// tagContent is an m.tag content: the tags, and whatever else a client put
// next to them through the account data API, which tag changes keep.
type tagContent struct {
	tags  map[string]json.RawMessage
	other map[string]json.RawMessage
}

// parseTags reads stored m.tag content. A client may have written anything
// there through the account data API; whatever is not a tags object counts
// as no tags rather than an error, so the tag API keeps working.
func parseTags(data []byte) tagContent {
	tc := tagContent{tags: map[string]json.RawMessage{}, other: map[string]json.RawMessage{}}
	if data == nil || json.Unmarshal(data, &tc.other) != nil {
		return tc
	}
	if raw, ok := tc.other["tags"]; ok {
		var tags map[string]json.RawMessage
		if json.Unmarshal(raw, &tags) == nil && tags != nil {
			tc.tags = tags
		}
		delete(tc.other, "tags")
	}
	if tc.other == nil {
		tc.other = map[string]json.RawMessage{}
	}
	return tc
}

func (tc tagContent) marshal() ([]byte, error) {
	out := map[string]any{}
	for k, v := range tc.other {
		out[k] = v
	}
	out["tags"] = tc.tags
	return json.Marshal(out)
}

func (s *Service) getTags(w http.ResponseWriter, r *http.Request) {
	t, err := parseTarget(r, true, "")
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	data, err := s.db.GetAccountData(r.Context(), t.userID, t.roomID, typeTag)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"tags": parseTags(data).tags})
}

func (s *Service) putTag(w http.ResponseWriter, r *http.Request) {
	t, err := parseTarget(r, true, "tag")
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	body, err := readObject(r, maxTagSize)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var tag map[string]json.RawMessage
	if err := httpapi.Unmarshal(body, &tag); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if raw, ok := tag["order"]; ok {
		// Decoding null into a float64 succeeds and leaves 0: refuse it
		// explicitly, clients sort on this number.
		var order float64
		if string(raw) == "null" || json.Unmarshal(raw, &order) != nil || order < 0 || order > 1 {
			httpapi.Fail(w, r, httpapi.BadJSON("order must be a number between 0 and 1"))
			return
		}
	}
	s.changeTags(w, r, t, func(tc tagContent) bool {
		tc.tags[t.typ] = body
		return true
	})
}

func (s *Service) deleteTag(w http.ResponseWriter, r *http.Request) {
	t, err := parseTarget(r, true, "tag")
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	// Removing a tag the room does not have succeeds and changes nothing.
	s.changeTags(w, r, t, func(tc tagContent) bool {
		if _, ok := tc.tags[t.typ]; !ok {
			return false
		}
		delete(tc.tags, t.typ)
		return true
	})
}

// changeTags applies change to the room's m.tag content under the row's
// lock, so two devices tagging at once both win; change reports whether it
// changed anything.
func (s *Service) changeTags(w http.ResponseWriter, r *http.Request, t target, change func(tagContent) bool) {
	err := s.write(t.userID, func(pos int64) (bool, error) {
		return s.db.UpdateAccountData(r.Context(), t.userID, t.roomID, typeTag, pos, func(old []byte) ([]byte, error) {
			tc := parseTags(old)
			if !change(tc) {
				return old, nil
			}
			out, err := tc.marshal()
			if err != nil {
				return nil, err
			}
			if len(out) > maxContentSize {
				return nil, httpapi.TooLarge("the room's tags would exceed %d bytes", maxContentSize)
			}
			return out, nil
		})
	})
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}
